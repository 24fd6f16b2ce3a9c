"""CommitEvent: strict validation of ids and UTC time; decode_event; event_key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from worker.errors import IntegrityError
from worker.events import CommitEvent, decode_event, event_key

COMMIT = "0123456789abcdef" * 4
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def fields(**changes: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "source": "post-commit",
        "repository_id": "repo-one",
        "branch_id": "main",
        "commit_id": COMMIT,
        "event_time": T0,
    }
    f.update(changes)
    return f


def test_valid_event_has_empty_defaults() -> None:
    ev = CommitEvent(**fields())
    assert ev.commit_metadata == {}
    assert (ev.action_name, ev.hook_id, ev.request_id, ev.merge_source) == ("", "", "", "")


@pytest.mark.parametrize("source", ["post-commit", "post-merge", "checkpoint"])
def test_sources(source: str) -> None:
    assert CommitEvent(**fields(source=source)).source == source


@pytest.mark.parametrize("repo", ["abc", "repo-one", "r2d2", "0-a", "a" * 63])
def test_valid_repository_ids(repo: str) -> None:
    assert CommitEvent(**fields(repository_id=repo)).repository_id == repo


@pytest.mark.parametrize(
    "repo",
    ["", "ab", "a" * 64, "Repo", "-repo", "re_po", "re.po", "repo/one", "repo one", "répo"],
)
def test_invalid_repository_ids(repo: str) -> None:
    with pytest.raises(ValidationError, match="not a lakeFS repository id"):
        CommitEvent(**fields(repository_id=repo))


@pytest.mark.parametrize("branch", ["main", "_x", "feature/x-1.2", "Release_2024", "a" * 256, "v1.0"])
def test_valid_branch_names(branch: str) -> None:
    assert CommitEvent(**fields(branch_id=branch)).branch_id == branch


@pytest.mark.parametrize(
    "branch",
    ["", ".hidden", "-x", "/x", "a..b", "feature/../main", "..", "a b", "a\nb", "a~1", "a" * 257],
)
def test_invalid_branch_names(branch: str) -> None:
    with pytest.raises(ValidationError, match="not a lakeFS branch name"):
        CommitEvent(**fields(branch_id=branch))


@pytest.mark.parametrize(
    "commit",
    ["", COMMIT[:63], COMMIT + "0", COMMIT.upper(), "g" * 64, COMMIT[:12], " " + COMMIT[1:]],
)
def test_commit_id_must_be_64_lowercase_hex(commit: str) -> None:
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        CommitEvent(**fields(commit_id=commit))


@pytest.mark.parametrize("tz", [UTC, timezone(timedelta(0))])
def test_utc_times_accepted(tz: timezone) -> None:
    assert CommitEvent(**fields(event_time=T0.replace(tzinfo=tz))).event_time == T0


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 5, 1, 12, 0),  # noqa: DTZ001 - naive on purpose
        datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_non_utc_times_refused(when: datetime) -> None:
    with pytest.raises(ValidationError, match="must be a UTC timestamp"):
        CommitEvent(**fields(event_time=when))


def test_model_is_strict_and_closed() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CommitEvent(**fields(surprise="x"))
    with pytest.raises(ValidationError, match="source"):
        CommitEvent(**fields(source="pre-commit"))
    with pytest.raises(ValidationError, match="event_time"):
        CommitEvent(**fields(event_time="2024-05-01T12:00:00Z"))  # strict: no str -> datetime in Python mode


def test_model_is_frozen() -> None:
    ev = CommitEvent(**fields())
    with pytest.raises(ValidationError, match="frozen"):
        ev.branch_id = "other"  # type: ignore[misc]


def test_commit_metadata_entry_limit() -> None:
    CommitEvent(**fields(commit_metadata={str(i): "v" for i in range(256)}))
    with pytest.raises(ValidationError, match="at most 256"):
        CommitEvent(**fields(commit_metadata={str(i): "v" for i in range(257)}))


def test_to_bytes_round_trips_through_decode_event() -> None:
    ev = CommitEvent(
        **fields(source="post-merge", merge_source="feat", commit_metadata={"a": "b"}, request_id="req-1")
    )
    back = decode_event(ev.to_bytes())
    assert back == ev
    assert back.event_time.utcoffset() == timedelta(0)


def test_decode_event_takes_event_time_as_an_rfc3339_string_only() -> None:
    value = json.dumps({**fields(), "event_time": "2024-05-01T12:00:00Z"}).encode()
    assert decode_event(value).event_time == T0
    with pytest.raises(IntegrityError):
        decode_event(_json(event_time=1764151200))  # an epoch number is not an RFC 3339 string


def _json(**changes: Any) -> bytes:
    d = {**fields(), "event_time": "2024-05-01T12:00:00Z"}
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        pytest.param(b"{oops", "()", id="bad JSON"),
        pytest.param(b"[]", "()", id="array"),
        pytest.param(_json(commit_id=...), "commit_id", id="missing commit_id"),
        pytest.param(_json(commit_id="abc"), "commit_id", id="short commit_id"),
        pytest.param(_json(repository_id="UPPER"), "repository_id", id="bad repo"),
        pytest.param(_json(branch_id="a..b"), "branch_id", id="branch with .."),
        pytest.param(_json(source="pre-merge"), "source", id="unknown source"),
        pytest.param(_json(event_time="2024-05-01T12:00:00"), "event_time", id="naive time"),
        pytest.param(_json(event_time="2024-05-01T14:00:00+02:00"), "event_time", id="non-UTC time"),
        pytest.param(_json(extra=1), "extra", id="unknown field"),
    ],
)
def test_decode_event_raises_integrity_error_naming_the_field(value: bytes, named: str) -> None:
    with pytest.raises(IntegrityError, match=r"^invalid commit event: ") as exc:
        decode_event(value)
    assert named in str(exc.value)
    assert isinstance(exc.value.__cause__, ValidationError)


def test_event_key_is_repo_slash_commit() -> None:
    assert event_key("repo-one", COMMIT) == f"repo-one/{COMMIT}".encode()
    assert event_key("repo-one", COMMIT) != event_key("repo-two", COMMIT)


@pytest.mark.parametrize("field", ["repository_id", "branch_id", "commit_id"])
def test_decode_event_refuses_ids_with_a_trailing_newline(field: str) -> None:
    with pytest.raises(IntegrityError):
        decode_event(_json(**{field: fields()[field] + "\n"}))


def test_decode_event_bounds_metadata_values_like_the_webhook() -> None:
    with pytest.raises(IntegrityError):
        decode_event(_json(commit_metadata={"k": "v" * 4097}))
    assert CommitEvent.model_validate_json(_json(commit_metadata={"k": "v" * 4096}))
