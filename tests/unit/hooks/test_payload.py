"""parse_webhook: the lakeFS webhook body, validated strictly; errors name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hooks.payload import ACTED_ON, WebhookBody, parse_webhook
from worker.errors import PayloadError

REPO = "repo-one"
COMMIT = "0123456789abcdef" * 4
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def body(**changes: Any) -> dict[str, Any]:
    """A post-commit body as lakeFS sends it; ``changes`` override or (value ...) remove keys."""
    b: dict[str, Any] = {
        "event_type": "post-commit",
        "event_time": "2024-05-01T12:00:00Z",
        "action_name": "kfm",
        "hook_id": "kfm_webhook",
        "repository_id": REPO,
        "branch_id": "main",
        "source_ref": "main",
        "commit_id": COMMIT,
        "commit_message": "add tiles",
        "committer": "alice",
        "commit_metadata": {"ticket": "KFM-1"},
    }
    for k, v in changes.items():
        if v is ...:
            b.pop(k, None)
        else:
            b[k] = v
    return b


def raw(**changes: Any) -> bytes:
    return json.dumps(body(**changes)).encode()


def test_acted_on_is_post_commit_and_post_merge() -> None:
    assert frozenset({"post-commit", "post-merge"}) == ACTED_ON


def test_post_commit_becomes_commit_event_with_every_field() -> None:
    parsed, event = parse_webhook(raw())
    assert isinstance(parsed, WebhookBody)
    assert event is not None
    assert event.source == "post-commit"
    assert event.repository_id == REPO
    assert event.branch_id == "main"
    assert event.commit_id == COMMIT
    assert event.event_time == T0
    assert event.action_name == "kfm"
    assert event.hook_id == "kfm_webhook"
    assert event.source_ref == "main"
    assert event.commit_message == "add tiles"
    assert event.committer == "alice"
    assert event.commit_metadata == {"ticket": "KFM-1"}
    assert event.request_id == ""


def test_post_merge_carries_merge_source() -> None:
    _, event = parse_webhook(raw(event_type="post-merge", merge_source="feature/x", source_ref="feature/x"))
    assert event is not None
    assert event.source == "post-merge"
    assert event.merge_source == "feature/x"
    assert event.source_ref == "feature/x"


def test_optional_fields_may_be_omitted_as_lakefs_omitempty_does() -> None:
    minimal = {
        k: v
        for k, v in body().items()
        if k in ("event_type", "event_time", "action_name", "hook_id", "repository_id", "branch_id", "commit_id")
    }
    _, event = parse_webhook(json.dumps(minimal).encode())
    assert event is not None
    assert event.commit_metadata == {}
    assert event.committer == ""


@pytest.mark.parametrize("event_type", ["pre-commit", "pre-merge", "post-create-tag", "pre-create-branch"])
def test_other_event_types_return_body_and_no_event(event_type: str) -> None:
    # commit_id/branch_id are only required for the types we act on.
    parsed, event = parse_webhook(raw(event_type=event_type, commit_id=..., branch_id=...))
    assert event is None
    assert parsed.event_type == event_type
    assert parsed.repository_id == REPO


def test_other_event_types_are_still_validated_strictly() -> None:
    with pytest.raises(PayloadError, match=r"^surprise: Extra inputs are not permitted"):
        parse_webhook(raw(event_type="pre-commit", surprise=1))


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00+00:00", T0),
        ("2024-05-01T14:00:00+02:00", T0),
        ("2024-05-01T07:00:00-05:00", T0),
        ("2024-05-02T01:30:00+13:30", T0),
        ("2024-05-01T12:00:00.250000Z", T0.replace(microsecond=250000)),
    ],
)
def test_event_time_offsets_are_converted_to_utc(event_time: str, expected: datetime) -> None:
    _, event = parse_webhook(raw(event_time=event_time))
    assert event is not None
    assert event.event_time == expected
    assert event.event_time.tzinfo is UTC


BIG = "x" * 1025

MALFORMED: list[tuple[str, bytes, str]] = [
    ("bad JSON", b"{not json", "body: Invalid JSON"),
    ("empty body", b"", "body: Invalid JSON"),
    ("JSON array", b"[]", "body: Input should be an object"),
    ("array of bodies", json.dumps([body()]).encode(), "body: Input should be an object"),
    ("JSON string", b'"post-commit"', "body: Input should be an object"),
    ("JSON null", b"null", "body: Input should be an object"),
    ("missing event_type", raw(event_type=...), "event_type: Field required"),
    ("missing event_time", raw(event_time=...), "event_time: Field required"),
    ("missing repository_id", raw(repository_id=...), "repository_id: Field required"),
    ("missing hook_id", raw(hook_id=...), "hook_id: Field required"),
    ("int repository_id", raw(repository_id=5), "repository_id: Input should be a valid string"),
    ("null branch_id", raw(branch_id=None), "branch_id: Input should be a valid string"),
    ("bool commit_id", raw(commit_id=True), "commit_id: Input should be a valid string"),
    ("list commit_metadata", raw(commit_metadata=["a"]), "commit_metadata: Input should be an object"),
    ("int metadata value", raw(commit_metadata={"k": 1}), "commit_metadata.k: Input should be a valid string"),
    ("unknown field", raw(surprise="x"), "surprise: Extra inputs are not permitted"),
    ("missing commit_id", raw(commit_id=...), "commit_id: required for post-commit"),
    ("empty commit_id", raw(commit_id=""), "commit_id: required for post-commit"),
    ("missing branch_id", raw(branch_id=...), "branch_id: required for post-commit"),
    (
        "post-merge without branch_id",
        raw(event_type="post-merge", branch_id=...),
        "branch_id: required for post-merge",
    ),
    ("event_time not a time", raw(event_time="yesterday"), "event_time: not an RFC 3339 timestamp"),
    ("event_time empty", raw(event_time=""), "event_time: not an RFC 3339 timestamp"),
    ("event_time without zone", raw(event_time="2024-05-01T12:00:00"), "event_time: not an RFC 3339 timestamp"),
    ("event_time date only", raw(event_time="2024-05-01"), "event_time: not an RFC 3339 timestamp"),
    ("event_time ISO basic", raw(event_time="20240501T140000Z"), "event_time: not an RFC 3339 timestamp"),
    ("uppercase commit_id", raw(commit_id=COMMIT.upper()), "commit_id: Value error, not a lakeFS commit id"),
    ("short commit_id", raw(commit_id=COMMIT[:12]), "commit_id: Value error, not a lakeFS commit id"),
    ("bad repository_id", raw(repository_id="Repo_One"), "repository_id: Value error, not a lakeFS repository"),
    ("branch with ..", raw(branch_id="a..b"), "branch_id: Value error, not a lakeFS branch name"),
    ("oversize action_name", raw(action_name=BIG), "action_name: String should have at most 1024 characters"),
    (
        "oversize commit_message",
        raw(commit_message="m" * 65537),
        "commit_message: String should have at most 65536 characters",
    ),
    (
        "too many commit_metadata entries",
        raw(commit_metadata={f"k{i}": "v" for i in range(257)}),
        "commit_metadata: Dictionary should have at most 256 items",
    ),
    (
        "oversize commit_metadata value",
        raw(commit_metadata={"k": "v" * 4097}),
        "commit_metadata.k: String should have at most 4096 characters",
    ),
]


@pytest.mark.parametrize(("payload", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_bodies_raise_bad_payload_naming_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as exc:
        parse_webhook(payload)
    assert str(exc.value).startswith(message), str(exc.value)


def test_limits_are_inclusive() -> None:
    _, event = parse_webhook(
        raw(
            action_name="a" * 1024,
            commit_message="m" * 65536,
            commit_metadata={f"k{i}": "v" * 4096 for i in range(256)},
        )
    )
    assert event is not None
    assert len(event.commit_metadata) == 256


def test_bad_payload_is_a_value_error_chained_to_the_cause() -> None:
    with pytest.raises(PayloadError) as exc:
        parse_webhook(raw(event_time="2024-13-45T12:00:00Z"))  # RFC 3339 shape, impossible date
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value.__cause__, ValueError)


def test_lowercase_z_is_rfc3339_and_the_basic_format_is_not() -> None:
    body = {"event_type": "post-commit", "event_time": "2026-11-26T10:00:00z", "action_name": "a", "hook_id": "h",
            "repository_id": "repo-one", "branch_id": "main", "commit_id": "a" * 64}
    _, event = parse_webhook(json.dumps(body).encode())
    assert event is not None and event.event_time == datetime(2026, 11, 26, 10, tzinfo=UTC)
    with pytest.raises(PayloadError):
        parse_webhook(json.dumps({**body, "event_time": "20261126T100000Z"}).encode())
