"""parse_webhook: every event type is validated the same way; only what is required differs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hooks.payload import parse_webhook
from worker.errors import PayloadError

COMMIT = "0123456789abcdef" * 4
TYPES = ["post-commit", "post-merge", "pre-commit", "pre-merge", "post-create-tag", "pre-create-branch"]


def raw(event_type: str, **changes: Any) -> bytes:
    b: dict[str, Any] = {
        "event_type": event_type,
        "event_time": "2024-05-01T12:00:00Z",
        "action_name": "kfm",
        "hook_id": "kfm_webhook",
        "repository_id": "repo-one",
        "branch_id": "main",
        "commit_id": COMMIT,
    }
    b.update(changes)
    return json.dumps(b).encode()


@pytest.mark.parametrize("event_type", TYPES)
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"repository_id": "Repo_One"}, "repository_id: Value error, not a lakeFS repository id"),
        ({"repository_id": "../etc"}, "repository_id: Value error, not a lakeFS repository id"),
        ({"branch_id": "a..b"}, "branch_id: Value error, not a lakeFS branch name"),
        ({"commit_id": "zz"}, "commit_id: Value error, not a lakeFS commit id"),
        ({"commit_id": COMMIT.upper()}, "commit_id: Value error, not a lakeFS commit id"),
        ({"event_time": "yesterday"}, "event_time: not an RFC 3339 timestamp"),
        ({"event_time": "2024-05-01T12:00:00"}, "event_time: not an RFC 3339 timestamp"),
        ({"event_time": "2024-13-45T12:00:00Z"}, "event_time: not an RFC 3339 timestamp"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"commit_metadata": {"k": 1}}, "commit_metadata.k: Input should be a valid string"),
    ],
    ids=["repo case", "repo path", "branch ..", "commit not hex", "commit upper", "time word", "time no zone",
         "time impossible", "unknown field", "metadata value"],
)
def test_a_present_field_is_checked_whatever_the_event_type(
    event_type: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PayloadError) as exc:
        parse_webhook(raw(event_type, **changes))
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize("event_type", ["pre-commit", "post-create-tag", "pre-create-branch", "post-delete-branch"])
def test_ignored_types_may_omit_branch_and_commit(event_type: str) -> None:
    b = json.loads(raw(event_type))
    del b["branch_id"], b["commit_id"]
    body, event = parse_webhook(json.dumps(b).encode())
    assert event is None
    assert body.event_type == event_type


@pytest.mark.parametrize("event_type", ["post-commit", "post-merge"])
@pytest.mark.parametrize("field", ["branch_id", "commit_id"])
def test_acted_on_types_require_branch_and_commit(event_type: str, field: str) -> None:
    with pytest.raises(PayloadError, match=f"^{field}: required for {event_type}$"):
        parse_webhook(raw(event_type, **{field: ""}))


@pytest.mark.parametrize("event_type", ["Post-Commit", "post_commit", "post commit", "-post", "post-", "", "x" * 65])
def test_event_type_must_look_like_a_lakefs_event_type(event_type: str) -> None:
    with pytest.raises(PayloadError, match=r"^event_type: String should"):
        parse_webhook(raw(event_type))


@pytest.mark.parametrize("event_type", ["pre-commit", "post-commit"])
@pytest.mark.parametrize(("name", "value"), [("commit_id", COMMIT), ("repository_id", "repo-one"), ("hook_id", "h")])
def test_a_key_given_twice_is_refused_even_when_each_value_is_valid(event_type: str, name: str, value: str) -> None:
    # Parsers disagree on which of two values wins; the same value twice is refused too.
    doc = json.loads(raw(event_type))
    doc.pop(name)
    twice = json.dumps(doc)[:-1] + f', "{name}": "{value}", "{name}": "{value}"}}'
    with pytest.raises(PayloadError, match=f"^{name}: key given more than once$"):
        parse_webhook(twice.encode())


def test_a_repeated_key_inside_commit_metadata_is_refused() -> None:
    doc = json.loads(raw("post-commit"))
    inner = json.dumps(doc)[1:-1]
    twice = "{" + inner + ', "commit_metadata": {"k": "a", "k": "b"}}'
    with pytest.raises(PayloadError, match=r"^k: key given more than once$"):
        parse_webhook(twice.encode())


def test_if_the_key_check_parser_disagrees_with_the_model_it_is_still_a_payload_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stricter(*_: object, **__: object) -> object:
        raise json.JSONDecodeError("a stricter parser", "", 0)

    monkeypatch.setattr("hooks.payload.json.loads", stricter)
    with pytest.raises(PayloadError, match=r"^body: not JSON \(JSONDecodeError\)$"):
        parse_webhook(raw("post-commit"))
