"""worker.errors: the families are the retry policy, and one validation message format."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from worker.errors import (
    AlreadyExistsError,
    ConflictError,
    Error,
    IntegrityError,
    LeadershipLostError,
    NotFoundError,
    PayloadError,
    TransientError,
    VerificationError,
    decode_json,
    describe_validation_error,
)


@pytest.mark.parametrize("cls", [VerificationError, NotFoundError, PayloadError])
def test_bad_data_is_an_integrity_error(cls: type[Error]) -> None:
    assert issubclass(cls, IntegrityError)


@pytest.mark.parametrize("cls", [ConflictError, AlreadyExistsError, TransientError])
def test_what_is_retried_is_not_an_integrity_error(cls: type[Error]) -> None:
    # Integrity errors are never retried; a lost conditional write is retried after a reload.
    assert issubclass(cls, Error)
    assert not issubclass(cls, IntegrityError)


def test_leadership_lost_passes_through_handlers_of_error() -> None:
    assert not issubclass(LeadershipLostError, Error)


class _Model(BaseModel):
    n: int


def test_validation_message_names_the_field_not_the_input() -> None:
    with pytest.raises(ValidationError) as exc:
        _Model.model_validate_json(b'{"n": "SECRET-INPUT"}')
    message = describe_validation_error(exc.value)
    assert message == "n: Input should be a valid integer, unable to parse string as an integer"


@pytest.mark.parametrize(
    ("whole", "expected"), [("", ": Input should be an object"), ("body", "body: Input should be an object")]
)
def test_validation_message_names_the_top_level_as_asked(whole: str, expected: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _Model.model_validate_json(b"[]")
    assert describe_validation_error(exc.value, whole) == expected


def test_decode_json_returns_the_model_or_an_integrity_error_in_the_one_format() -> None:
    assert decode_json(_Model, b'{"n": 3}', "thing") == _Model(n=3)
    with pytest.raises(IntegrityError, match=r"^thing: n: Field required$") as exc:
        decode_json(_Model, b"{}", "thing")
    assert isinstance(exc.value.__cause__, ValidationError)
