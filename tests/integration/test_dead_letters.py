"""Bad messages on every topic an agent reads are dead-lettered, and the agents keep going.

One worker runs the whole module (real Kafka, lakeFS and S3) with a small
message limit. Each kind of bad message goes to the events, writer and
rollback-request topics on the partition the valid message that follows it
uses; then the valid messages must still be processed: a ledger row for each
commit and a final rollback answer. Every bad message must be on the
dead-letter topic with its reason and source coordinates, nothing else may
be, and the worker must be up with no traceback in its log.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    end_offsets,
    isolated_registry,
    ledger_jsonl,
    logs_dir,
    read_since,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.bundle.attest import pae
from worker.config import Settings
from worker.constants import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVENTS,
    TOPIC_INDEX_CANDIDATES,
    TOPIC_ROLLBACK_REQUESTS,
    TOPIC_ROLLBACK_RESULTS,
)
from worker.events import CommitEvent, event_key
from worker.keys import key_id, load_private_key
from worker.rollback.request import RollbackRequest, request_key

pytestmark = pytest.mark.stack

PREFIX = unique("dl") + "."
BUCKET = unique("kfm-dead-letter-test")
LIMIT = 64 * 1024  # KFM_LIMIT_MESSAGE_MAX_BYTES for the worker under test

Where = tuple[str, int, int]  # source topic, partition, offset


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


def _event(repo: str, commit: str, **over: object) -> bytes:
    body = CommitEvent(source="checkpoint", repository_id=repo, branch_id="main", commit_id=commit,
                       event_time=datetime.now(UTC)).model_dump(mode="json")
    return json.dumps({**body, **over}).encode()


def _request(repo: str, commit: str, **over: object) -> bytes:
    req = RollbackRequest(request_id=str(uuid.uuid4()), lakefs_repo=repo, commit=commit, target_branch="main",
                          strategy="branch", dry_run=True, requested_by="test", reason="dead-letter test",
                          requested_at=datetime.now(UTC))
    return json.dumps({**req.model_dump(mode="json"), **over}).encode()


def _unreadable(other_kind: bytes) -> list[tuple[bytes | None, str]]:
    """What every topic gets: each kind of message that cannot be read, and the reason it must get."""
    return [
        (None, "malformed"),  # a tombstone
        (b"{not json", "malformed"),
        (b"\xff\xfe\x00\x01", "malformed"),
        (b"[" * 2000, "malformed"),  # nested past any parser's depth
        (b'{"pad": "' + b"x" * (LIMIT + 1) + b'"}', "oversized"),
        (b"[1, 2, 3]", "wrong_type"),
        (other_kind, "wrong_type"),  # another topic's message
    ]


def _resigned(envelope: bytes, signer: Ed25519PrivateKey, as_key: str | None = None) -> bytes:
    """The same attestation signed by ``signer``, under its own key id or (forged) under ``as_key``."""
    doc = json.loads(envelope)
    sig = signer.sign(pae(doc["payloadType"], base64.b64decode(doc["payload"])))
    keyid = as_key or key_id(signer.public_key())
    return json.dumps({**doc, "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}]}).encode()


class Bus:
    """Sends raw records (tombstones and oversized values included) and remembers where they landed."""

    def __init__(self, producer: AIOKafkaProducer):
        self.producer = producer
        self.expected: dict[Where, tuple[str, bytes | None]] = {}

    async def send(self, topic: str, value: bytes | None, key: bytes) -> Where:
        meta = await self.producer.send_and_wait(topic, value, key=key)
        return topic, meta.partition, meta.offset

    async def bad(self, topic: str, value: bytes | None, reason: str, key: bytes) -> None:
        self.expected[await self.send(topic, value, key)] = (reason, value)


async def _rows(settings: Settings) -> set[str]:
    try:
        data = await ledger_jsonl(settings)
    except Exception:  # no checkpoint yet
        return set()
    return {json.loads(line)["lakefs_commit"] for line in data.splitlines()}


async def _until(check: Callable[[], Awaitable[object]], what: str, seconds: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


async def _final_result(settings: Settings, start: dict[int, int], request_id: str) -> dict[str, object]:
    recs = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_ROLLBACK_RESULTS), start, want=0)
    finals = [json.loads(v) for _, v, _ in recs if json.loads(v)["request_id"] == request_id]
    return next((r for r in finals if r["final"]), {})


async def test_every_bad_message_is_dead_lettered_and_the_valid_ones_still_processed(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, tmp_path: Path
) -> None:
    bootstrap = settings.kafka_bootstrap
    events, writer, requests = (settings.topic(t) for t in (TOPIC_EVENTS, TOPIC_INDEX_CANDIDATES,
                                                             TOPIC_ROLLBACK_REQUESTS))
    repo = unique("dl")
    await lakefs.create_repository(repo, f"local://{repo}")
    a = await populate(lakefs, repo)
    dl_start = await end_offsets(bootstrap, settings.topic(TOPIC_DEAD_LETTER))
    results_start = await end_offsets(bootstrap, settings.topic(TOPIC_ROLLBACK_RESULTS))
    log_path = logs_dir(env) / f"worker-{PREFIX}.log"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * LIMIT)
    await producer.start()
    bus = Bus(producer)
    try:
        with worker_process(env, PREFIX, KFM_LIMIT_MESSAGE_MAX_BYTES=str(LIMIT)) as proc:
            ev_key, rb_key = event_key(repo, a), request_key(repo, "main")
            # 1. What cannot be read, on each topic ahead of the valid message that follows it.
            for value, reason in _unreadable(_request(repo, a)):
                await bus.bad(events, value, reason, ev_key)
            await bus.bad(events, _event(repo, a, commit_id=42), "wrong_type", ev_key)
            await bus.bad(events, _event(repo, a, commit_id="../" + a[3:]), "invalid", ev_key)
            # An event for a commit lakeFS does not have: the bundle fails for good.
            await bus.bad(events, _event(repo, "e" * 64), "failed", event_key(repo, "e" * 64))
            for value, reason in _unreadable(_event(repo, a)):
                await bus.bad(writer, value, reason, ev_key)
            for value, reason in _unreadable(_event(repo, a)):
                await bus.bad(requests, value, reason, rb_key)
            await bus.bad(requests, _request(repo, a, dry_run="yes"), "wrong_type", rb_key)
            await bus.bad(requests, _request(repo, a, request_id="no spaces allowed"), "invalid", rb_key)
            # ... then a valid event: its bundle's candidate is the writer's next valid message.
            start_c = await end_offsets(bootstrap, writer)
            await bus.send(events, _event(repo, a), ev_key)
            await _until(lambda: _has(settings, {a}), f"row for {a}")
            [(_, cand_a, _)] = await read_since(bootstrap, writer, start_c, want=1, timeout=30)

            # 2. Forged candidates: attestations by an unknown key, with a bad signature, and
            # one that is genuine but names another commit. Each for a commit with no row.
            att_key = f"attestations/{a}.intoto.json"
            stranger = Ed25519PrivateKey.generate()
            trusted_id = key_id(load_private_key(Path(env["KFM_SIGNING_KEY"])).public_key())
            async with open_bucket(settings) as bucket:
                genuine, _ = await bucket.get(att_key, 1 << 20)
                forged = {"unknown_key": _resigned(genuine, stranger),
                          "bad_signature": _resigned(genuine, stranger, as_key=trusted_id)}
                for reason, envelope in [*forged.items(), ("unverified", genuine)]:
                    fake = os.urandom(32).hex()
                    await bucket.put(f"attestations/{fake}.intoto.json", envelope)
                    doc = json.loads(cand_a)
                    doc["body"]["lakefs_commit"] = fake
                    doc["attestation_uri"] = doc["body"]["signatures"]["in_toto"] = settings_uri(
                        settings, f"attestations/{fake}.intoto.json")
                    await bus.bad(writer, json.dumps(doc).encode(), reason, event_key(repo, fake))

                # 3. Rollback requests for A while its stored attestation is forged; each is
                # answered "rejected" and dead-lettered, and the next one waits for that answer.
                try:
                    for reason, envelope in forged.items():
                        await bucket.put(att_key, envelope)
                        value = _request(repo, a)
                        await bus.bad(requests, value, reason, rb_key)
                        rid = json.loads(value)["request_id"]
                        await _until(functools.partial(_rejected, settings, results_start, rid), f"answer to {rid}")
                finally:
                    await bucket.put(att_key, genuine)

            # 4. Valid messages after all that: a second commit is bundled and recorded
            # (its candidate follows the forged ones), and a dry-run rollback to A is answered.
            b = await populate(lakefs, repo, threshold="0.7")
            await bus.send(events, _event(repo, b), event_key(repo, b))
            valid = _request(repo, a)
            await bus.send(requests, valid, rb_key)
            rid = json.loads(valid)["request_id"]
            await _until(lambda: _has(settings, {a, b}), f"row for {b}")
            await _until(lambda: _final_result(settings, results_start, rid), f"answer to {rid}")
            assert (await _final_result(settings, results_start, rid))["status"] == "dry-run"

            dead = await read_since(bootstrap, settings.topic(TOPIC_DEAD_LETTER), dl_start,
                                    want=len(bus.expected), timeout=60)
            assert proc.poll() is None, "the worker exited"
    finally:
        await producer.stop()

    got: dict[Where, tuple[str, bytes, dict[str, bytes]]] = {}
    for _, value, headers in dead:
        h = dict(headers)
        where = (h["kfm-dl-topic"].decode(), int(h["kfm-dl-partition"]), int(h["kfm-dl-offset"]))
        assert where not in got, f"dead-lettered twice: {where}"
        got[where] = (h["kfm-dl-reason"].decode(), value, h)
    assert {w: r for w, (r, _, _) in got.items()} == {w: r for w, (r, _) in bus.expected.items()}
    for where, (reason, sent) in bus.expected.items():
        _, value, h = got[where]
        assert h["kfm-dl-message"], where
        if reason == "oversized":
            assert sent is not None and value == sent[:LIMIT] and int(h["kfm-dl-size"]) == len(sent)
        else:
            assert value == (sent or b""), where
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unexpected_error" not in log, log_path


def settings_uri(settings: Settings, key: str) -> str:
    return f"s3://{settings.s3_bucket}/{key}"


async def _has(settings: Settings, commits: set[str]) -> bool:
    return commits <= await _rows(settings)


async def _rejected(settings: Settings, start: dict[int, int], request_id: str) -> bool:
    final = await _final_result(settings, start, request_id)
    assert not final or final["status"] == "rejected", final
    return bool(final)
