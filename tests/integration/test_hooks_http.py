"""The webhook receiver against the real Kafka broker.

Bad input gets a 4xx naming the problem and publishes nothing; Kafka down
gets a 503 and publishes nothing, and the service stays healthy.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, end_offsets, hooks_server, post, read_since
from worker.constants import HOOK_TOKEN_HEADER, TOPIC_EVENTS
from worker.events import CommitEvent

pytestmark = pytest.mark.stack

COMMIT = "c" * 64


def body(**over: object) -> dict[str, object]:
    b: dict[str, object] = {
        "event_type": "post-commit",
        "event_time": "2026-11-26T10:00:00Z",
        "action_name": "kfm-rollback-registry",
        "hook_id": "kfm_rollback_publish",
        "repository_id": "hooks-test",
        "branch_id": "main",
        "source_ref": "main",
        "commit_id": COMMIT,
        "commit_message": "m",
        "committer": "admin",
        "commit_metadata": {"k": "v"},
    }
    b.update(over)
    return {k: v for k, v in b.items() if v is not _DROP}


_DROP = object()


@pytest.fixture(scope="module")
def hooks(stack_env: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    token = Path(stack_env["KFM_HOOK_TOKEN_FILE"]).read_text().strip()
    with hooks_server(stack_env, KFM_LIMIT_WEBHOOK_MAX_BYTES="4096") as url:
        yield url + "/lakefs/webhook", token, stack_env["KFM_KAFKA_BOOTSTRAP"]


def _headers(token: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if token is not None:
        h[HOOK_TOKEN_HEADER] = token
    return h


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("not json", b"{nope", 422, "body"),
    ("json array", b"[]", 400, "body"),
    ("json string", b'"x"', 400, "body"),
    ("empty", b"", 400, "body"),
    ("missing repository_id", json.dumps(body(repository_id=_DROP)).encode(), 422, "repository_id"),
    ("missing event_type", json.dumps(body(event_type=_DROP)).encode(), 422, "event_type"),
    ("commit_id wrong type", json.dumps(body(commit_id=42)).encode(), 422, "commit_id"),
    ("commit_id not hex", json.dumps(body(commit_id="zz")).encode(), 422, "commit_id"),
    ("missing commit_id", json.dumps(body(commit_id=_DROP)).encode(), 422, "commit_id"),
    ("missing branch on merge", json.dumps(body(event_type="post-merge", branch_id=_DROP)).encode(), 422, "branch_id"),
    ("metadata not strings", json.dumps(body(commit_metadata={"a": 1})).encode(), 422, "commit_metadata"),
    ("unknown field", json.dumps(body(surprise=True)).encode(), 422, "surprise"),
    ("bad event_time", json.dumps(body(event_time="yesterday")).encode(), 422, "event_time"),
    ("bad repository id", json.dumps(body(repository_id="../etc")).encode(), 422, "repository_id"),
    ("null body", b"null", 400, "body"),
]


async def test_bad_input_is_rejected_and_publishes_nothing(hooks: tuple[str, str, str]) -> None:
    url, token, bootstrap = hooks
    topic = TOPIC_EVENTS
    start = await end_offsets(bootstrap, topic)
    for name, raw, status, field in BAD_BODIES:
        got, payload = await post(url, raw, _headers(token))
        assert got == status, (name, got, payload)
        assert field in str(payload["error"]), (name, payload)
    # Authentication is checked before anything else.
    got, payload = await post(url, json.dumps(body()).encode(), _headers("wrong-token"))
    assert got == 401 and HOOK_TOKEN_HEADER in str(payload["error"])
    got, _ = await post(url, json.dumps(body()).encode(), _headers(None))
    assert got == 401
    got, _ = await post(url, json.dumps(body()).encode(), {HOOK_TOKEN_HEADER: token, "Content-Type": "text/plain"})
    assert got == 415
    big = json.dumps(body(commit_message="x" * 5000)).encode()
    got, payload = await post(url, big, _headers(token))
    assert got == 413 and "4096" in str(payload["error"])
    # Other lakeFS event types are acknowledged and ignored.
    got, payload = await post(url, json.dumps(body(event_type="pre-commit")).encode(), _headers(token))
    assert got == 200 and payload["status"] == "ignored"

    assert await read_since(bootstrap, topic, start) == []
    got, _ = await post(url.replace("/lakefs/webhook", "/healthz"), b"", {})
    assert got in (200, 405)


async def test_duplicate_delivery_publishes_twice_with_same_key(hooks: tuple[str, str, str]) -> None:
    url, token, bootstrap = hooks
    start = await end_offsets(bootstrap, TOPIC_EVENTS)
    raw = json.dumps(body(event_type="post-merge", source_ref="feature", merge_source="feature")).encode()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for _ in range(2):
        got, payload = await post(url, raw, {**_headers(token), "traceparent": tp})
        assert got == 202, payload
    records = await read_since(bootstrap, TOPIC_EVENTS, start, want=2)
    assert len(records) == 2
    assert {r[0] for r in records} == {f"hooks-test/{COMMIT}".encode()}
    for _, value, headers in records:
        event = CommitEvent.model_validate_json(value)
        assert event.source == "post-merge" and event.commit_id == COMMIT
        assert event.merge_source == "feature"
        # The webhook's W3C trace continues through Kafka.
        assert dict(headers)["traceparent"].decode().split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def test_kafka_down_answers_503_and_publishes_nothing(hooks: tuple[str, str, str]) -> None:
    url, token, bootstrap = hooks
    start = await end_offsets(bootstrap, TOPIC_EVENTS)
    subprocess.run([str(ROOT / "deploy/local/stack"), "stop-kafka"], check=True)
    try:
        got, payload = await post(url, json.dumps(body(commit_id="d" * 64)).encode(), _headers(token))
        assert got == 503, payload
        got, _ = await post(url.replace("/lakefs/webhook", "/readyz"), b"", {})
        assert got in (405, 503)
    finally:
        subprocess.run([str(ROOT / "deploy/local/stack"), "start-kafka"], check=True)
    # Still alive, and once Kafka is back it publishes again.
    got, payload = await post(url, json.dumps(body(commit_id="e" * 64)).encode(), _headers(token))
    assert got == 202, payload
    records = await read_since(bootstrap, TOPIC_EVENTS, start, want=1, timeout=15)
    commits = [CommitEvent.model_validate_json(v).commit_id for _, v, _ in records]
    assert commits == ["e" * 64]
