"""Helpers for end-to-end tests: subprocesses, Kafka reads, lakeFS repos."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.config import Settings

if TYPE_CHECKING:
    from worker.rollback.request import RollbackRequest

ROOT = Path(__file__).resolve().parents[2]
# The stack under test (a second stack, e.g. the Kafka 4 leg, sets KFM_STACK_DIR).
STACK_DIR = Path(os.environ.get("KFM_STACK_DIR", ROOT / ".stack"))
KFM = [sys.executable, "-m", "worker._cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], failure: str, timeout: float = 30) -> None:
    """Return once ``proc`` accepts connections on ``port``; raise ``failure`` if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(failure) from None
            time.sleep(0.2)


async def request_rollback(
    settings: Settings, req: RollbackRequest, *, copies: int = 1, timeout: float = 180
) -> list[dict[str, Any]]:
    """Publish ``req`` (``copies`` times) and return its final results, as many as came within ``timeout``."""
    from worker._internal.kafka import Producer
    from worker.constants import TOPIC_ROLLBACK_REQUESTS, TOPIC_ROLLBACK_RESULTS
    from worker.rollback.request import request_key

    results = settings.topic(TOPIC_ROLLBACK_RESULTS)
    start = await end_offsets(settings.kafka_bootstrap, results)
    async with Producer(settings.kafka) as p:
        for _ in range(copies):
            await p.send(settings.topic(TOPIC_ROLLBACK_REQUESTS), req.to_bytes(),
                         key=request_key(req.lakefs_repo, req.target_branch))
    finals: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(finals) < copies:
        recs = await read_since(settings.kafka_bootstrap, results, start, want=0, timeout=3)
        finals = [r for r in (json.loads(v) for _, v, _ in recs) if r["request_id"] == req.request_id and r["final"]]
        await asyncio.sleep(0.5)
    return finals


def logs_dir(env: dict[str, str]) -> Path:
    """Where processes a test starts log: beside the logs of the env's stack (its KFM_STACK_DIR)."""
    return Path(env.get("KFM_STACK_DIR") or STACK_DIR) / "logs"


@contextmanager
def hooks_server(env: dict[str, str], **extra: str) -> Iterator[str]:
    """Run `kfm hooks serve` on a free port; yield its base URL."""
    port = int(extra.pop("KFM_HOOKS_PORT", 0)) or free_port()  # a fixed port survives a restart
    full = {**os.environ, **env, "KFM_HOOKS_PORT": str(port), **extra}
    log = open(logs_dir(env) / f"hooks-test-{port}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([*KFM, "hooks", "serve"], env=full, stdout=log, stderr=log, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc, f"hooks server did not start: {logs_dir(env).as_posix()}")
        yield url
    finally:
        _stop(proc)
        log.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_since(
    bootstrap: str, topic: str, start: dict[int, int], *, want: int = 0, timeout: float = 20.0
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Records after ``start`` offsets; waits until ``want`` arrive or the timeout.

    With want=0, reads up to the current end (used to assert nothing arrived).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend((r.key, r.value, list(r.headers)) for r in records)
            if want and len(out) >= want:
                await asyncio.sleep(1.0)  # catch any extra duplicates
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend((r.key, r.value, list(r.headers)) for r in records)
                break
            if not want:
                ends = await consumer.end_offsets(tps)
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
        return out
    finally:
        await consumer.stop()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        try:
            payload = await r.json(content_type=None)
        except ValueError:
            payload = {"raw": await r.text()}
        return r.status, payload


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextmanager
def worker_process(env: dict[str, str], name: str, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `kfm worker` (the Faust app) until the block ends."""
    full = {**os.environ, **env, **extra}
    log = open(logs_dir(env) / f"worker-{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([*KFM, "worker"], env=full, stdout=log, stderr=log, cwd=ROOT)
    try:
        yield proc
    finally:
        _stop(proc)
        log.close()


def run_kfm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    r = subprocess.run([*KFM, *args], env=full, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"kfm {' '.join(args)} exited {r.returncode}: {r.stdout}\n{r.stderr}")
    return r


def isolated_registry(stack_env: dict[str, str], prefix: str, bucket: str | None = None) -> dict[str, str]:
    """Env for a registry of its own on the shared stack: own topics (prefix) and own bucket.

    Why always a bucket: a module with its own topics but the stack's bucket
    writes rows into the stack's ledger that its topic never held, so a later
    `kfm audit replay` on the stack's own topics (`make demo` on a used stack)
    reports a mismatch that is the tests' doing. ``bucket`` names it; by
    default it is made from the prefix.
    """
    env = {**stack_env, "KFM_TOPIC_PREFIX": prefix}
    if bucket is None:
        bucket = unique("kfm-t-" + re.sub(r"[^a-z0-9-]", "-", prefix.lower()).strip("-"))[:63]
    import boto3

    boto3.client(
        "s3", endpoint_url=env["KFM_S3_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=env["KFM_S3_ACCESS_KEY_ID"], aws_secret_access_key=env["KFM_S3_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)
    env["KFM_S3_BUCKET"] = bucket
    run_kfm(env, "topics", "ensure")
    return env


async def ledger_jsonl(settings: Settings) -> bytes:
    """The ledger up to its latest checkpoint as JSONL (what `kfm ledger export` writes)."""
    from worker._internal.s3 import open_bucket
    from worker.io.ledger_reader import LedgerReader
    from worker.keys import TrustedKeys

    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    out = bytearray()
    async with open_bucket(settings) as b:
        reader = LedgerReader(b, trusted, settings.checkpoint_name)
        cp, _ = await reader.checkpoint()
        async for _, data in reader.bundles(0, cp.size):
            out += data
    return bytes(out)
