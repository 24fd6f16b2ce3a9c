"""RollbackRequest validation, decode_request errors naming the field, request_key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from worker.errors import IntegrityError
from worker.rollback.request import RollbackRequest, RollbackResult, decode_request, request_key

COMMIT = "fedcba9876543210" * 4
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def fields(**changes: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "request_id": "req-2024-0001",
        "lakefs_repo": "repo-one",
        "commit": COMMIT,
        "target_branch": "main",
        "requested_by": "alice@example.com",
        "reason": "bad tiles in commit",
        "requested_at": T0,
    }
    f.update(changes)
    return f


def test_valid_request_defaults() -> None:
    r = RollbackRequest(**fields())
    assert r.strategy == "revert"
    assert r.dry_run is False
    assert r.bundle_uri == ""


@pytest.mark.parametrize("strategy", ["revert", "reset", "branch"])
def test_strategies(strategy: str) -> None:
    assert RollbackRequest(**fields(strategy=strategy)).strategy == strategy


@pytest.mark.parametrize("rid", ["abcdefgh", "A" * 128, "req.1_x-y", "0" * 8])
def test_valid_request_ids(rid: str) -> None:
    assert RollbackRequest(**fields(request_id=rid)).request_id == rid


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("request_id too short", {"request_id": "abcdefg"}, "8-128 characters"),
    ("request_id too long", {"request_id": "a" * 129}, "8-128 characters"),
    ("request_id leading dash", {"request_id": "-abcdefgh"}, "8-128 characters"),
    ("request_id slash", {"request_id": "req/00001"}, "8-128 characters"),
    ("repo uppercase", {"lakefs_repo": "Repo-One"}, "not a lakeFS repository id"),
    ("repo too short", {"lakefs_repo": "ab"}, "not a lakeFS repository id"),
    ("short commit", {"commit": COMMIT[:12]}, "not a lakeFS commit id"),
    ("uppercase commit", {"commit": COMMIT.upper()}, "not a lakeFS commit id"),
    ("branch ref name", {"commit": "main"}, "not a lakeFS commit id"),
    ("branch with ..", {"target_branch": "main/../x"}, "not a lakeFS branch name"),
    ("branch empty", {"target_branch": ""}, "not a lakeFS branch name"),
    ("unknown strategy", {"strategy": "merge"}, "strategy"),
    ("empty requested_by", {"requested_by": ""}, "requested_by"),
    ("requested_by too long", {"requested_by": "a" * 257}, "requested_by"),
    ("empty reason", {"reason": ""}, "reason"),
    ("reason too long", {"reason": "r" * 4097}, "reason"),
    ("bundle_uri too long", {"bundle_uri": "s3://" + "b" * 2044}, "bundle_uri"),
    ("naive time", {"requested_at": datetime(2024, 5, 1, 12, 0)}, "must be a UTC timestamp"),  # noqa: DTZ001
    (
        "non-UTC time",
        {"requested_at": datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))},
        "must be a UTC timestamp",
    ),
    ("unknown field", {"priority": "high"}, "Extra inputs are not permitted"),
    ("string dry_run (strict)", {"dry_run": "true"}, "dry_run"),
]


@pytest.mark.parametrize(("changes", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_requests(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RollbackRequest(**fields(**changes))


def test_request_is_frozen() -> None:
    r = RollbackRequest(**fields())
    with pytest.raises(ValidationError, match="frozen"):
        r.dry_run = True  # type: ignore[misc]


def test_to_bytes_round_trips() -> None:
    r = RollbackRequest(**fields(strategy="reset", dry_run=True, bundle_uri="s3://kfm-registry/b.tar.zst"))
    assert decode_request(r.to_bytes()) == r


def _json(**changes: Any) -> bytes:
    d = {**fields(), "requested_at": "2024-05-01T12:00:00Z"}
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d).encode()


def test_decode_request_parses_rfc3339_utc() -> None:
    assert decode_request(_json()).requested_at == T0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b"{nope", "invalid rollback request: : Invalid JSON", id="bad JSON"),
        pytest.param(b"[]", "invalid rollback request: : Input should be an object", id="array"),
        pytest.param(_json(reason=...), "invalid rollback request: reason: Field required", id="missing reason"),
        pytest.param(_json(commit="abc"), "invalid rollback request: commit: Value error", id="short commit"),
        pytest.param(_json(lakefs_repo=7), "invalid rollback request: lakefs_repo: Input should be a valid string",
                     id="int repo"),
        pytest.param(_json(target_branch="a..b"), "invalid rollback request: target_branch: Value error",
                     id="branch with .."),
        pytest.param(_json(strategy="squash"), "invalid rollback request: strategy: Input should be", id="strategy"),
        pytest.param(_json(requested_at="2024-05-01T14:00:00+02:00"),
                     "invalid rollback request: requested_at: Value error, must be a UTC", id="non-UTC"),
        pytest.param(_json(requested_at="2024-05-01T12:00:00"),
                     "invalid rollback request: requested_at: Value error, must be a UTC", id="naive"),
        pytest.param(_json(requested_at="last tuesday"), "invalid rollback request: requested_at: ",
                     id="not a time"),
        pytest.param(_json(extra=True), "invalid rollback request: extra: Extra inputs are not permitted",
                     id="unknown field"),
    ],
)
def test_decode_request_errors_name_the_field(value: bytes, message: str) -> None:
    with pytest.raises(IntegrityError) as exc:
        decode_request(value)
    assert str(exc.value).startswith(message), str(exc.value)
    assert isinstance(exc.value.__cause__, ValidationError)


def test_request_key_is_repo_slash_branch() -> None:
    assert request_key("repo-one", "main") == b"repo-one/main"
    assert request_key("repo-one", "feature/x") == b"repo-one/feature/x"
    # Two requests for one branch share a key (and so a partition) whatever the commit.
    a = RollbackRequest(**fields())
    b = RollbackRequest(**fields(request_id="req-2024-0002", commit="0" * 64))
    assert request_key(a.lakefs_repo, a.target_branch) == request_key(b.lakefs_repo, b.target_branch)


def test_rollback_result_round_trips_and_refuses_unknown_status() -> None:
    res = RollbackResult(request_id="req-2024-0001", status="completed", final=True, detail={"commit": COMMIT})
    assert RollbackResult.model_validate_json(res.to_bytes()) == res
    with pytest.raises(ValidationError, match="status"):
        RollbackResult(request_id="req-2024-0001", status="done", final=True)  # type: ignore[arg-type]


def test_decode_request_refuses_a_string_for_dry_run() -> None:
    req = {"request_id": "req-00000001", "lakefs_repo": "repo-one", "commit": "a" * 64, "target_branch": "main",
           "requested_by": "me", "reason": "why", "requested_at": "2026-11-26T10:00:00Z", "dry_run": "yes"}
    with pytest.raises(IntegrityError, match="dry_run"):
        decode_request(json.dumps(req).encode())
