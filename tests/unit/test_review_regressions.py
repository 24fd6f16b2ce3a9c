"""Regressions for the defects found in review of issues #2-#5 (one test per finding)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from hooks.payload import BadPayload, parse_webhook
from worker.config import load_settings
from worker.errors import ConfigError, IntegrityError
from worker.events import CommitEvent, decode_event
from worker.evidence.otlp import _attr
from worker.logs import _redact
from worker.restore.request import decode_request
from worker.snapshot.stac import rewrite_stac

COMMIT = "a" * 64


def _event(**over: object) -> bytes:
    e = {"source": "post-commit", "repository_id": "repo-one", "branch_id": "main", "commit_id": COMMIT,
         "event_time": "2026-11-26T10:00:00Z"}
    e.update(over)
    return json.dumps(e).encode()


@pytest.mark.parametrize("field", ["repository_id", "branch_id", "commit_id"])
def test_trailing_newline_in_ids_is_refused(field: str) -> None:
    good = json.loads(_event())
    with pytest.raises(IntegrityError):
        decode_event(_event(**{field: good[field] + "\n"}))


def test_kafka_events_are_decoded_strictly() -> None:
    with pytest.raises(IntegrityError):
        decode_event(_event(event_time=1764151200))  # an epoch number is not an RFC 3339 string
    req = {"request_id": "req-00000001", "lakefs_repo": "repo-one", "commit": COMMIT, "target_branch": "main",
           "requested_by": "me", "reason": "why", "requested_at": "2026-11-26T10:00:00Z", "dry_run": "yes"}
    with pytest.raises(IntegrityError, match="dry_run"):
        decode_request(json.dumps(req).encode())


def test_event_metadata_values_are_bounded_like_the_webhook() -> None:
    with pytest.raises(IntegrityError):
        decode_event(_event(commit_metadata={"k": "v" * 4097}))
    assert CommitEvent.model_validate_json(_event(commit_metadata={"k": "v" * 4096}))


def _stac(doc: dict[str, object], objects: dict[str, tuple[int, str]] | None = None) -> object:
    return rewrite_stac("stac/item.json", json.dumps(doc).encode(), repo="repo-one", commit=COMMIT,
                        objects=objects or {})


def test_stac_type_of_wrong_json_type_is_not_stac() -> None:
    assert _stac({"type": ["Feature"]}) is None
    assert _stac({"type": {"a": 1}}) is None


def test_stac_links_must_be_an_array() -> None:
    with pytest.raises(IntegrityError, match="links"):
        _stac({"type": "Feature", "links": "x"})


def test_stac_lakefs_href_cannot_climb_out() -> None:
    doc = {"type": "Feature", "links": [{"rel": "x", "href": "lakefs://repo-one/main/../../etc/passwd"}]}
    with pytest.raises(IntegrityError, match="outside"):
        _stac(doc)


def test_stac_relative_hrefs_are_url_decoded_and_keep_fragments() -> None:
    doc = {"type": "Feature", "links": [{"rel": "self", "href": "./item.json#top"}],
           "assets": {"d": {"href": "./a%20b.tif"}}}
    out = _stac(doc, {"stac/a b.tif": (3, "etag")})
    body = json.loads(out.body)  # type: ignore[attr-defined]
    assert body["assets"]["d"]["href"] == f"lakefs://repo-one/{COMMIT}/stac/a%20b.tif"
    assert body["assets"]["d"]["file:size"] == 3
    assert body["links"][0]["href"] == f"lakefs://repo-one/{COMMIT}/stac/item.json#top"


def test_inline_hook_token_has_the_same_minimum_as_the_file() -> None:
    with pytest.raises(ConfigError, match="16"):
        load_settings({"KFM_HOOK_TOKEN": "x"}).resolved_hook_token()


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_float_settings_must_be_finite_and_non_negative(value: str) -> None:
    with pytest.raises(ConfigError, match="KFM_ENERGY_WATTS_PER_CPU"):
        load_settings({"KFM_ENERGY_WATTS_PER_CPU": value})


def test_overrides_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        load_settings({}, {"no_such_thing": 1})
    assert load_settings({}, {"hooks_port": "8081"}).hooks_port == 8081
    with pytest.raises(ConfigError, match="--hooks-port"):
        load_settings({}, {"hooks_port": "eighty"})


def test_nested_secrets_are_redacted() -> None:
    out = _redact(None, "info", {"headers": {"Authorization": "Basic abc", "X": "1"}, "items": [{"token": "t"}]})
    assert out["headers"] == {"Authorization": "[redacted]", "X": "1"}
    assert out["items"] == [{"token": "[redacted]"}]


def test_lowercase_z_is_rfc3339() -> None:
    body = {"event_type": "post-commit", "event_time": "2026-11-26T10:00:00z", "action_name": "a", "hook_id": "h",
            "repository_id": "repo-one", "branch_id": "main", "commit_id": COMMIT}
    _, event = parse_webhook(json.dumps(body).encode())
    assert event is not None and event.event_time == datetime(2026, 11, 26, 10, tzinfo=UTC)
    with pytest.raises(BadPayload):
        parse_webhook(json.dumps({**body, "event_time": "20261126T100000Z"}).encode())


def test_otlp_sequence_attributes_are_arrays() -> None:
    assert _attr("k", ("a", 1)) == {
        "key": "k", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}
    }
