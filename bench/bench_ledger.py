"""Benchmark: the tiled ledger at 10^4, 10^5 and 10^6 rows (the figures in docs/performance.md).

A script, not a test (pytest never collects it). For each size it builds a
ledger in a fresh bucket of the local S3 (``KFM_*`` settings, read from
``.stack/env`` when not set), then measures:

- seconds per appended batch through ``LedgerStore.commit`` (head, bundles,
  tiles, row objects, sidecars, Parquet file, checkpoints), median and p90,
  and the bytes and objects each append writes and reads;
- writer start-up (``LedgerStore.open``), and the writer's peak memory
  (start-up plus appends run in a child process; ``VmHWM``, see vm_hwm_mib for
  why not ``ru_maxrss``);
- ``verify_registry`` rows/s (in a child process, and ``kfm ledger verify`` as a
  process, with its peak memory and that of its pool workers), against the raw
  baseline measured in the same run: the same bundles and tiles fetched the
  same way and hashed with hashlib (SHA-256 of every line, RFC 6962 leaf hashes, the
  Merkle tree via ``TreeEdge``); both also from memory (no S3: CPU only), and
  verify's per-row checks on one core (cProfile at the smallest size);
- ``prove``, ``show`` and ``list --limit 20`` latency through ``LedgerReader``
  (median of 5) and as one CLI call each;
- audit replay rows/s (10^4 and 10^5 only) from a Kafka topic holding the
  candidates that built the ledger, with a cProfile of the smallest size.

The build itself is not a figure: rows are generated and linked with orjson
(checked byte for byte against ``worker.ledger.chain.next_row`` on samples),
``worker.ledger.state.extend`` makes the bundles and tiles, and only the truth
objects are uploaded (entry bundles, full tiles, the final partial tiles, a few
archived checkpoints, ``ledger/checkpoint``, ``ledger/head`` and the row objects
of the commits queried).

Usage: .venv/bin/python bench/bench_ledger.py [--sizes 10000 100000 1000000]
       [--steps writer,verify,reads,replay] [--out ledger-bench.json] [--keep]

The S3 server is whichever the stack runs (``KFM_STACK_DIR``; moto by default,
SeaweedFS with ``KFM_STACK_S3_SERVER=seaweedfs``); the script names it, and
records the load average around each verify measurement (the host is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
import rfc8785  # noqa: E402
from _stack import stack_env  # noqa: E402

from worker._internal.s3 import Bucket, bulk_reader, open_bucket  # noqa: E402
from worker.canonical import canonical_bytes  # noqa: E402
from worker.config import Settings, load_settings  # noqa: E402
from worker.constants import LEDGER_CHECKPOINT_KEY, LEDGER_HEAD_KEY, TOPIC_INDEX_CANDIDATES  # noqa: E402
from worker.errors import NotFoundError  # noqa: E402
from worker.io.ledger_audit import replay, verify_registry  # noqa: E402
from worker.io.ledger_reader import LedgerReader, checkpoint_origin  # noqa: E402
from worker.io.ledger_writer import LedgerStore, _recorded_rows  # noqa: E402
from worker.io.runtime import Runtime  # noqa: E402
from worker.keys import TrustedKeys, load_private_key  # noqa: E402
from worker.ledger.chain import check_bundle, next_row  # noqa: E402
from worker.ledger.checkpoint import sign_checkpoint  # noqa: E402
from worker.ledger.head import Head  # noqa: E402
from worker.ledger.row import GENESIS_PREV, IndexCandidate, RowBody, leaf_bytes, parse_line  # noqa: E402
from worker.ledger.state import Appender, Tip, extend  # noqa: E402
from worker.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, TreeEdge, entries_key, tiles_for_size  # noqa: E402
from worker.topics import topic_specs  # noqa: E402
from worker.utc import format_utc  # noqa: E402

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
STEPS = ("writer", "verify", "reads", "replay")
REPLAY_MAX = 100_000  # replay is measured at 10^4 and 10^5 unless --replay-max says more
CHUNK = TILE_WIDTH * 16  # rows generated and uploaded per step of the build
UPLOADS_IN_FLIGHT = 16
KFM = [str(ROOT / ".venv" / "bin" / "kfm")]
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # rows are dated from here, one second apart: always in the past


# --- rows -------------------------------------------------------------------


def _hex(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


_FLOATS: dict[int, tuple[float, float]] = {}


def _energy(i: int) -> tuple[float, float]:
    """Floats spelled the same by orjson and RFC 8785 (checked once per value)."""
    k = i % 5000
    got = _FLOATS.get(k)
    if got is None:
        kwh = k / 1000 + 0.0125
        got = (kwh, round(kwh * 0.4, 6))
        for v in got:
            if orjson.dumps(v) != rfc8785.dumps(v):
                raise AssertionError(f"float {v!r} is spelled differently by orjson and RFC 8785")
        _FLOATS[k] = got
    return got


def body(i: int) -> dict[str, Any]:
    """Row body ``i`` of the real schema, about 2.4 KB as a ledger line."""
    commit = _hex(f"bench-commit-{i}")
    uri = f"s3://kfm-registry/artifacts/kfm-main/{commit}.tar.zst"
    kwh, co2e = _energy(i)
    model = i % 97
    return {
        "lakefs_repo": "kfm-main",
        "lakefs_branch": "prod" if i % 3 else "feature/river-gauges",
        "lakefs_commit": commit,
        "created_at": format_utc(T0 + timedelta(seconds=i, microseconds=(i % 2) * 250_000)),
        "producer": "airflow:dag=kfm-promote",
        "openlineage_run_id": f"{i:08x}-0000-4000-8000-{i:012x}",
        "otel_trace_id": f"{i:032x}" if i % 4 else "",
        "artifact_uri": uri,
        "data_snapshot": [
            {
                "stac": f"{uri}#lakefs/stac/collections/hydro-c{j}/collection.json",
                "lakefs_ref": f"lakefs://kfm-main/{commit}/stac/collections/hydro-c{j}/collection.json",
            }
            for j in range(3)
        ],
        "models": [
            {
                "name": "focus-transformer",
                "version": f"3.{model}.0",
                "uri": f"s3://kfm-models/focus-transformer/3.{model}.0.bin",
                "sha256": _hex(f"model-{model}"),
            }
        ],
        "configs": [{"path": f"configs/stage-{j}.yaml", "sha256": _hex(f"config-{i}-{j}")} for j in range(4)],
        "checksums": {"artifact_sha256": _hex(f"bench-bundle-{i}")},
        "signatures": {
            "in_toto": f"s3://kfm-registry/attestations/kfm-main/{commit}.intoto.jsonl",
            "key_id": "kfm-bundler-2025",
        },
        "energy_carbon": {
            "kwh": kwh,
            "co2e_kg": co2e,
            "method": "kwh=(cpu_s*15.0W+wall_s*0.0W)/3.6e6; co2e_kg=kwh*0.4",
        },
    }


def candidate_value(b: dict[str, Any], i: int) -> bytes:
    """The Kafka value the bundler publishes for body ``b`` (canonical, as ``IndexCandidate.to_bytes``)."""
    return canonical_bytes({
        "body": b,
        "bundle_sha256": b["checksums"]["artifact_sha256"],
        "attestation_uri": b["signatures"]["in_toto"],
        "request_id": f"bench-req-{i}",
    })


def candidate(i: int) -> IndexCandidate:
    return IndexCandidate.model_validate_json(candidate_value(body(i), i))


_SORT = orjson.OPT_SORT_KEYS


def link(b: dict[str, Any], seq: int, prev: str) -> bytes:
    """The ledger line of body ``b`` at ``seq`` after a line hashing to ``prev``
    (what ``next_row`` + ``leaf_bytes`` give, without pydantic)."""
    row = dict(b)
    row["seq"] = seq
    row["prev"] = prev
    row["hash"] = hashlib.sha256(orjson.dumps(row, option=_SORT)).hexdigest()
    return orjson.dumps(row, option=_SORT)


def generate(
    start: int, end: int, before: bytes | None, want_candidates: bool
) -> tuple[list[bytes], list[bytes]]:
    """Lines ``start..end`` linked after the line ``before`` (None at the start);
    the candidates too if asked.

    The first line is checked against ``next_row`` linking it after the parsed
    ``before`` (the writer's own code), so every step of the build proves the
    fast path equal on one row.
    """
    lines: list[bytes] = []
    values: list[bytes] = []
    prev = GENESIS_PREV if before is None else hashlib.sha256(before).hexdigest()
    for i in range(start, end):
        b = body(i)
        line = link(b, i, prev)
        prev = hashlib.sha256(line).hexdigest()
        lines.append(line)
        if want_candidates:
            values.append(candidate_value(b, i))
    if lines:
        tail = None if before is None else parse_line(before, start)
        row = next_row(tail, RowBody.model_validate_json(orjson.dumps(body(start))))
        if leaf_bytes(row) != lines[0]:
            raise AssertionError(f"row {start}: the fast generator differs from next_row")
    return lines, values


def self_check(n: int = 300) -> None:
    """The fast generator equals ``next_row`` + ``leaf_bytes`` on a whole chain prefix."""
    lines, _ = generate(0, n, None, False)
    tail = None
    for i, line in enumerate(lines):
        tail = next_row(tail, RowBody.model_validate_json(orjson.dumps(body(i))))
        if leaf_bytes(tail) != line:
            raise AssertionError(f"row {i}: the fast generator differs from next_row")


# --- environment ------------------------------------------------------------


def s3_client(settings: Settings) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=settings.s3_secret_access_key or None,
    )


def drop_bucket(settings: Settings, name: str) -> None:
    s3 = s3_client(settings)
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def entry_bundle_storage(settings: Settings, size: int) -> dict[str, int]:
    """What ``ledger/rows/`` holds: the bundles of the tree of ``size`` rows are live; a
    partial bundle of another width was superseded (a later append rewrote it under a new
    key) and stays, as immutable objects do."""
    live_partial = entries_key(size // TILE_WIDTH, size % TILE_WIDTH) if size % TILE_WIDTH else None
    out = {"objects": 0, "bytes": 0, "live_bytes": 0, "stale_partials": 0, "stale_bytes": 0}
    for page in s3_client(settings).get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix="ledger/rows/"
    ):
        for o in page.get("Contents", []):
            out["objects"] += 1
            out["bytes"] += o["Size"]
            if ".p/" in o["Key"] and o["Key"] != live_partial:
                out["stale_partials"] += 1
                out["stale_bytes"] += o["Size"]
            else:
                out["live_bytes"] += o["Size"]
    return out


def server_pid(endpoint: str) -> int | None:
    """The local S3 server's process (moto or SeaweedFS listening on the endpoint's port)."""
    port = endpoint.rsplit(":", 1)[-1].strip("/").encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"moto_server" in c or b"weed" in c for c in cmd) and (
            port in cmd or any(c.endswith(b"=" + port) for c in cmd)
        ):
            return int(proc.name)
    return None


def server_kind(endpoint: str) -> str:
    """Which S3 server answers on the endpoint (the figures depend on it)."""
    try:
        cmd = Path(f"/proc/{server_pid(endpoint)}/cmdline").read_bytes()
    except OSError:
        return "unknown"
    return "moto" if b"moto_server" in cmd else "seaweedfs" if b"weed" in cmd else "unknown"


def server_rss_mib(endpoint: str) -> float | None:
    """Resident memory of the local S3 server (moto keeps every object in memory)."""
    pid = server_pid(endpoint)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def vm_hwm_mib() -> float:
    """This process's peak resident memory since its exec (``VmHWM``).

    Not ``ru_maxrss``: on Linux a child started by fork/vfork + exec inherits
    the parent's high-water mark in ``ru_maxrss`` (a 10 MiB child of an 800 MiB
    parent reports 800 MiB, through getrusage and wait4 alike), while
    ``VmHWM`` belongs to the new address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs the CLI in-process and reports its memory: VmHWM of the process, and the
# peak of the proportional set size (PSS, shared pages split) summed over the
# process and its children (verify's pool workers), sampled every 50 ms.
CLI_WITH_MEMORY = r"""
import os, sys, threading, time
from pathlib import Path
def pss(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
def children(pid):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out
peak = [0]
def sample():
    me = os.getpid()
    while True:
        peak[0] = max(peak[0], pss(me) + sum(pss(c) for c in children(me)))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
from worker._cli import main
try:
    rc = main(sys.argv[1:])
finally:
    hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    sys.stdout.flush()
    sys.stderr.write(f"\n@@memory {hwm} {peak[0]}\n")
sys.exit(rc)
"""


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """Run a process to its end; (wall seconds, stdout, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-4:])} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).decode()[-2000:]}")
    return wall, proc.stdout.decode(), proc.stderr.decode()


def run_cli_with_memory(args: list[str], env: dict[str, str]) -> tuple[float, str, float, float]:
    """``kfm ARGS`` in a process; (wall s, stdout, VmHWM MiB, peak PSS of it and its children MiB)."""
    wall, out, err = run_timed([sys.executable, "-c", CLI_WITH_MEMORY, *args], env)
    found = re.search(r"@@memory (\d+) (\d+)", err)
    if found is None:
        raise RuntimeError(f"kfm {' '.join(args)}: no memory report: {err[-500:]}")
    return wall, out, int(found.group(1)) / 1024, int(found.group(2)) / 1024


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# --- build ------------------------------------------------------------------


class Uploads:
    """Immutable puts, a bounded number in flight."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.sem = asyncio.Semaphore(UPLOADS_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.objects = 0
        self.bytes = 0

    async def put(self, key: str, data: bytes) -> None:
        async with self.sem:
            await self.bucket.put(key, data, if_none_match=True)
        self.objects += 1
        self.bytes += len(data)

    async def add(self, key: str, data: bytes) -> None:
        while len(self.tasks) >= 4 * UPLOADS_IN_FLIGHT:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
            self.tasks -= done
        self.tasks.add(asyncio.ensure_future(self.put(key, data)))

    async def drain(self) -> None:
        if self.tasks:
            for t in await asyncio.gather(*self.tasks, return_exceptions=True):
                if isinstance(t, BaseException):
                    raise t
        self.tasks.clear()


class CandidateFeed:
    """Candidates onto the writer topic, in ledger order, in large batches."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=4)
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=20,
            max_batch_size=512 * 1024, max_request_size=4 << 20, compression_type=None,
        )
        await self.producer.start()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        futures = []
        while (values := await self.queue.get()) is not None:
            batch = self.producer.create_batch()
            for v in values:
                if batch.append(key=None, value=v, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, self.topic, partition=0))
                    batch = self.producer.create_batch()
                    if batch.append(key=None, value=v, timestamp=None) is None:
                        raise RuntimeError("candidate larger than a producer batch")
                self.sent += 1
            if batch.record_count():
                futures.append(await self.producer.send_batch(batch, self.topic, partition=0))
            if len(futures) > 64:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)

    async def send(self, values: list[bytes]) -> None:
        await self.queue.put(values)

    async def close(self) -> None:
        await self.queue.put(None)
        try:
            if self.task is not None:
                await self.task
        finally:
            await self.producer.stop()


async def build(
    bucket: Bucket, n: int, *, origin: str, name: str, key: Any, query: list[int], archive: list[int],
    feed: CandidateFeed | None,
) -> dict[str, Any]:
    """The truth objects of a ledger of ``n`` rows; returns what was written."""
    up = Uploads(bucket)
    boundaries = sorted({*range(CHUNK, n, CHUNK), *[a for a in archive if 0 < a < n], n})
    tip, before, start = Tip(), None, 0
    commits: dict[int, str] = {}
    row_bytes = 0
    last_bundles: tuple[tuple[int, int, bytes], ...] = ()
    for end in boundaries:
        lines, values = await asyncio.to_thread(generate, start, end, before, feed is not None)
        before = lines[-1]
        if feed is not None:
            await feed.send(values)
        tip, objects = await asyncio.to_thread(extend, tip, lines, None)
        row_bytes += sum(len(x) + 1 for x in lines)
        for index, width, data in objects.bundles:
            if width == TILE_WIDTH:
                await up.add(entries_key(index, width), data)
        last_bundles = objects.bundles
        for tile, data in objects.tiles:
            if tile.width == TILE_WIDTH:  # partial tiles: only those of the final size
                await up.add(tile.key, data)
        for seq in query:
            if start <= seq < end:
                line = lines[seq - start]
                commit = orjson.loads(line)["lakefs_commit"]
                commits[seq] = commit
                await up.add(f"ledger/commits/{commit}", line + b"\n")
        if end in archive and end != n:
            await up.add(f"checkpoints/{end:012d}.note", sign_checkpoint(origin, end, tip.root(), name, key))
        start = end
    for index, width, data in last_bundles:
        if width != TILE_WIDTH:
            await up.add(entries_key(index, width), data)
    for tile, data in tip.edge.partial_tiles():
        await up.add(tile.key, data)
    note = sign_checkpoint(origin, n, tip.root(), name, key)
    await up.add(f"checkpoints/{n:012d}.note", note)
    await up.drain()
    # The public checkpoint, then the head (the writer's commit point), as a migration leaves them.
    await bucket.put(LEDGER_CHECKPOINT_KEY, note, if_none_match=True)
    await bucket.put(LEDGER_HEAD_KEY, Head(start=n, lines=(), note=note).to_bytes(), if_none_match=True)
    return {"objects": up.objects + 2, "bytes": up.bytes + len(note), "row_bytes": row_bytes,
            "root": tip.root().hex(), "commits": commits}


# --- the writer (child process) -----------------------------------------------


class Counting:
    """Wraps a Bucket's put/get to count what one append writes and reads."""

    def __init__(self, bucket: Bucket) -> None:
        self.put_n = self.put_b = self.get_n = self.get_b = 0
        put, get = bucket.put, bucket.get

        async def counted_put(key: str, data: bytes, **kw: Any) -> str:
            self.put_n += 1
            self.put_b += len(data)
            return await put(key, data, **kw)

        async def counted_get(key: str, max_bytes: int) -> tuple[bytes, str]:
            data, etag = await get(key, max_bytes)
            self.get_n += 1
            self.get_b += len(data)
            return data, etag

        bucket.put = counted_put  # type: ignore[method-assign]
        bucket.get = counted_get  # type: ignore[method-assign]

    def take(self) -> dict[str, int]:
        out = {"put_objects": self.put_n, "put_bytes": self.put_b, "get_objects": self.get_n, "get_bytes": self.get_b}
        self.put_n = self.put_b = self.get_n = self.get_b = 0
        return out


async def writer_child(args: argparse.Namespace) -> dict[str, Any]:
    """Start-up, then appends, as the ledger writer does them; run in its own process."""
    rss_start = vm_hwm_mib()
    env = stack_env()
    settings = replace(load_settings(env), s3_bucket=args.bucket)
    key = load_private_key(Path(settings.signing_key))
    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    origin = checkpoint_origin(settings.checkpoint_name, args.bucket)
    out: dict[str, Any] = {"rss_after_imports_mib": rss_start}
    async with open_bucket(settings) as bucket:
        counter = Counting(bucket)

        async def open_store() -> tuple[Any, float]:
            t0 = time.perf_counter()
            store, state = await LedgerStore.open(bucket, origin, key, settings.checkpoint_name, trusted)
            dt = time.perf_counter() - t0
            if state not in ("clean", "finished_after_crash"):
                raise RuntimeError(f"unexpected ledger state {state}")
            return store, dt

        opens = []
        for _ in range(5):
            store, dt = await open_store()
            opens.append(dt)
        out["startup_s"] = opens
        out["startup_io"] = counter.take()
        if store.tip.size != args.size:
            raise RuntimeError(f"writer found {store.tip.size} rows, expected {args.size}")
        index = args.size
        batches: list[dict[str, Any]] = []
        for size, count in args.batches:
            for _ in range(count):
                cands = [candidate(i) for i in range(index, index + size)]
                index += size
                t0 = time.perf_counter()
                recorded = await _recorded_rows(bucket, (c.body.lakefs_commit for c in cands))
                t_lookup = time.perf_counter() - t0
                counter.take()
                now = datetime.now(UTC)
                t0 = time.perf_counter()
                appender = Appender(store.tip, recorded)
                for c in cands:
                    appender.apply(c, now)
                t_apply = time.perf_counter() - t0
                t0 = time.perf_counter()
                await store.commit(appender)
                t_commit = time.perf_counter() - t0
                batches.append({"rows": size, "commit_s": t_commit, "apply_s": t_apply, "lookup_s": t_lookup,
                                **counter.take()})
        out["batches"] = batches
        out["size_after"] = store.tip.size
        reopen = []
        for _ in range(3):
            _, dt = await open_store()
            reopen.append(dt)
        out["restart_s"] = reopen
        out["restart_io"] = counter.take()
    out["rss_peak_mib"] = vm_hwm_mib()
    return out


# --- verify and its baseline ------------------------------------------------------


class MemoryBucket:
    """The objects verify reads, held in memory: the CPU-only run (no S3 in the way)."""

    def __init__(self, name: str, objects: dict[str, bytes]) -> None:
        self.name, self.objects = name, objects

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    async def get(self, key: str, max_bytes: int) -> tuple[bytes, str]:
        try:
            return self.objects[key], '"etag"'
        except KeyError:
            raise NotFoundError(f"s3: get {key}: not found") from None

    async def head(self, key: str) -> Any:
        return SimpleNamespace(size=len(self.objects[key]), etag='"etag"') if key in self.objects else None

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


async def load_into_memory(bucket: Bucket) -> MemoryBucket:
    keys = [k for k in await bucket.list_keys("") if k.startswith(("ledger/", "checkpoints/"))]
    sem = asyncio.Semaphore(16)

    async def one(k: str) -> tuple[str, bytes]:
        async with sem:
            return k, (await bucket.get(k, 1 << 30))[0]

    return MemoryBucket(bucket.name, dict(await asyncio.gather(*(one(k) for k in keys))))


def all_tiles(size: int) -> list[Tile]:
    """Every tile of the tree of ``size`` leaves: the full ones at each level and the
    right edge's partial ones."""
    out = list(tiles_for_size(size))
    level = 0
    while size >> (TILE_HEIGHT * (level + 1)):
        out += [Tile(level, i, TILE_WIDTH) for i in range(size >> (TILE_HEIGHT * (level + 1)))]
        level += 1
    return out


async def raw_baseline(bucket: Any, trusted: TrustedKeys, name: str) -> tuple[int, float]:
    """Fetch the same objects verify does, the same way, and hash them: every entry
    bundle and every tile of the checkpoint's tree, full and partial, at every level
    (verify compares each stored tile with the tree the rows make, so reading them is
    part of the work: one GET per bundle and one per level-0 tile), SHA-256 of every
    line, its RFC 6962 leaf hash, the Merkle tree; (rows, seconds)."""
    t0 = time.perf_counter()
    async with bulk_reader(bucket) as bulk:  # verify's own reads of bundles and tiles
        reader = LedgerReader(bucket, trusted, name, bulk=bulk)
        cp, _ = await reader.checkpoint()
        stored_tiles = asyncio.ensure_future(reader.tiles(all_tiles(cp.size)))
        edge = TreeEdge()
        sha256 = hashlib.sha256
        async for _, data in reader.bundles(0, cp.size):
            for line in data.split(b"\n")[:-1]:
                sha256(line).digest()
                edge.append(sha256(b"\x00" + line).digest())
        await stored_tiles
    if edge.root() != cp.root:
        raise AssertionError("baseline: root differs from the checkpoint")
    return edge.size, time.perf_counter() - t0


async def verify_inproc(bucket: Any, settings: Settings, trusted: TrustedKeys) -> tuple[int, float]:
    rt = SimpleNamespace(bucket=bucket, settings=settings)
    t0 = time.perf_counter()
    report = await verify_registry(rt, trusted)  # type: ignore[arg-type]
    return report.rows, time.perf_counter() - t0


def row_checks_one_core(mem: MemoryBucket, profile: bool) -> tuple[int, float, cProfile.Profile | None]:
    """verify's per-row work (parse, canonical and hash checks, leaf hashes) on one
    core, in this process, over the bundles in memory: what each pool worker does."""
    bundles = sorted((k, v) for k, v in mem.objects.items() if k.startswith("ledger/rows/"))
    # Only the bundles of the published tree (full ones, and the widest partial one).
    by_index: dict[str, tuple[int, str, bytes]] = {}
    for key, data in bundles:
        stem, _, width = key.partition(".p/")
        w = int(width) if width else TILE_WIDTH
        if stem not in by_index or by_index[stem][0] < w:
            by_index[stem] = (w, key, data)
    work = []
    for stem, (_, _, data) in by_index.items():
        index = int("".join(part.lstrip("x") for part in stem[len("ledger/rows/"):].split("/")))
        work.append((index * TILE_WIDTH, data))
    work.sort()
    t0 = time.perf_counter()
    rows = sum(check_bundle(data, first).count for first, data in work)
    dt = time.perf_counter() - t0
    prof = None
    if profile:  # a second pass: the figure above is measured without the profiler's overhead
        prof = cProfile.Profile()
        prof.enable()
        for first, data in work:
            check_bundle(data, first)
        prof.disable()
    return rows, dt, prof


def profile_top(prof: cProfile.Profile, limit: int = 14) -> list[str]:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(limit)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    header = [ln for ln in lines[:start] if "function calls" in ln]
    return header + [ln.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "") for ln in lines[start:]]


async def verify_child(args: argparse.Namespace) -> dict[str, Any]:
    """verify_registry and the raw baseline, interleaved; from S3, then (``--in-memory``)
    from memory; with ``--profile`` a cProfile of the per-row checks on one core."""
    env = stack_env()
    settings = replace(load_settings(env), s3_bucket=args.bucket)
    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    res: dict[str, Any] = {"load_before_verify": os.getloadavg()[0]}
    server = server_pid(settings.s3_endpoint)
    async with open_bucket(settings) as bucket:
        v_runs, b_runs, v_cpu, b_cpu = [], [], [], []
        for _ in range(args.repeat):
            # CPU per 1,000 rows: of the S3 server, of this process, and of verify's pool workers.
            s0, p0, c0 = cpu_seconds(server), time.process_time(), os.times()
            rows, dt = await raw_baseline(bucket, trusted, settings.checkpoint_name)
            b_runs.append(rows / dt)
            b_cpu.append({"s3_server": (cpu_seconds(server) - s0) * 1000 / rows,
                          "process": (time.process_time() - p0) * 1000 / rows})
            s0, p0, c0 = cpu_seconds(server), time.process_time(), os.times()
            rows, dt = await verify_inproc(bucket, settings, trusted)
            v_runs.append(rows / dt)
            await asyncio.sleep(0.5)  # let the pool's workers exit, so that their CPU time is counted
            c1 = os.times()
            v_cpu.append({"s3_server": (cpu_seconds(server) - s0) * 1000 / rows,
                          "process": (time.process_time() - p0) * 1000 / rows,
                          "pool": (c1.children_user + c1.children_system - c0.children_user - c0.children_system)
                          * 1000 / rows})
        res["verify_rows_per_s"] = statistics.median(v_runs)
        res["baseline_rows_per_s"] = statistics.median(b_runs)
        res["verify_runs"], res["baseline_runs"] = v_runs, b_runs
        res["verify_cpu_s_per_1000_rows"], res["baseline_cpu_s_per_1000_rows"] = v_cpu[-1], b_cpu[-1]
        res["load_after_verify"] = os.getloadavg()[0]
        if args.in_memory:
            mem = await load_into_memory(bucket)
            mv, mb = [], []
            for _ in range(args.repeat):
                rows, dt = await raw_baseline(mem, trusted, settings.checkpoint_name)
                mb.append(rows / dt)
                rows, dt = await verify_inproc(mem, settings, trusted)
                mv.append(rows / dt)
            res["verify_mem_rows_per_s"], res["baseline_mem_rows_per_s"] = statistics.median(mv), statistics.median(mb)
            rows, dt, prof = row_checks_one_core(mem, args.profile)
            res["verify_checks_1core_rows_per_s"] = rows / dt
            if prof is not None:
                res["verify_profile"] = profile_top(prof)
    return res


async def dense_checkpoints(n: int, every: int, env: dict[str, str]) -> dict[str, Any]:
    """verify and verify --from on a ledger of ``n`` rows with a few archived checkpoints,
    then with one archived checkpoint every ``every`` rows (the writer archives one per
    batch: a registry appending commit by commit has one per row)."""
    name = f"bench-dense-{n}-{uuid.uuid4().hex[:8]}"
    settings = replace(load_settings(env), s3_bucket=name)
    key = load_private_key(Path(settings.signing_key))
    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    origin = checkpoint_origin(settings.checkpoint_name, name)
    trusted_size = n - n // 10
    out: dict[str, Any] = {"rows": n, "every": every, "from_size": trusted_size}
    s3_client(settings).create_bucket(Bucket=name)
    say(f"\n== checkpoint density: {n:,} rows, bucket {name}")
    try:
        async with open_bucket(settings) as bucket:
            await build(bucket, n, origin=origin, name=settings.checkpoint_name, key=key, query=[0],
                        archive=[trusted_size], feed=None)
            rt = SimpleNamespace(bucket=bucket, settings=settings)
            old = (await bucket.get(f"checkpoints/{trusted_size:012d}.note", 1 << 16))[0]

            async def measure(label: str, profile: bool = False) -> None:
                t0 = time.perf_counter()
                report = await verify_registry(rt, trusted)  # type: ignore[arg-type]
                full = time.perf_counter() - t0
                prof = cProfile.Profile() if profile else None
                t0 = time.perf_counter()
                if prof is not None:
                    prof.enable()
                await verify_registry(rt, trusted, trusted_note=old)  # type: ignore[arg-type]
                if prof is not None:
                    prof.disable()
                    out["from_profile"] = profile_top(prof, 10)
                since = time.perf_counter() - t0
                out[label] = {"checkpoints": report.checkpoints, "verify_s": full, "verify_from_s": since}
                say(f"{report.checkpoints:,} archived checkpoints: verify {full:.2f} s ({n / full:,.0f} rows/s), "
                    f"verify --from size {trusted_size:,} ({n - trusted_size:,} new rows) {since:.2f} s")

            await measure("few")
            lines, _ = generate(0, n, None, False)
            edge, up = TreeEdge(), Uploads(bucket)
            for line in lines:
                edge.append(hashlib.sha256(b"\x00" + line).digest())
                if edge.size % every == 0 and edge.size not in (n, trusted_size):
                    note = sign_checkpoint(origin, edge.size, edge.root(), settings.checkpoint_name, key)
                    await up.add(f"checkpoints/{edge.size:012d}.note", note)
            await up.drain()
            await measure("dense", profile=True)
    finally:
        await asyncio.to_thread(drop_bucket, settings, name)
    return out


# --- one size -----------------------------------------------------------------


class SizeRun:
    """One ledger size: its bucket, topics and settings, and the figures measured on it."""

    def __init__(self, n: int, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.n, self.args = n, args
        self.bucket_name = f"bench-ledger-{n}-{uuid.uuid4().hex[:8]}"
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}."
        self.settings = replace(load_settings(env), s3_bucket=self.bucket_name, topic_prefix=self.prefix)
        self.env = {**env, "KFM_S3_BUCKET": self.bucket_name, "KFM_TOPIC_PREFIX": self.prefix}
        self.key = load_private_key(Path(self.settings.signing_key))
        self.trusted = TrustedKeys.from_dir(Path(self.settings.trusted_keys_dir))
        self.origin = checkpoint_origin(self.settings.checkpoint_name, self.bucket_name)
        self.with_replay = n <= args.replay_max and not args.no_replay and "replay" in args.steps
        self.profile = n == min(args.sizes)
        self.query = sorted({0, n // 3, n // 2, n - 2, n - 1})  # commits with a row object, read back
        self.commits: dict[int, str] = {}
        self.size = n  # rows after the appends
        self.res: dict[str, Any] = {"rows": n, "bucket": self.bucket_name}

    def child(self, mode: str, *extra: str) -> dict[str, Any]:
        cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--bucket", self.bucket_name, *extra]
        return dict(json.loads(run_timed(cmd, self.env)[1].strip().splitlines()[-1]))

    async def run(self) -> dict[str, Any]:
        res = self.res
        s3_client(self.settings).create_bucket(Bucket=self.bucket_name)
        say(f"\n== {self.n:,} rows: bucket {self.bucket_name}"
            + (f", topics {self.prefix}*" if self.with_replay else ""))
        steps = self.args.steps
        try:
            await self.build()
            if "writer" in steps:
                await self.writer()
            if "verify" in steps:
                self.verify()
            if "reads" in steps:
                await self.reads()
            if self.with_replay:
                await self.replay()
            res["s3_server_rss_mib"]["end"] = server_rss_mib(self.settings.s3_endpoint)
        finally:
            if not self.args.keep:
                await asyncio.to_thread(drop_bucket, self.settings, self.bucket_name)
                if self.with_replay:
                    await drop_topics(self.settings, [t.name for t in topic_specs(self.settings)])
        return res

    def feed(self) -> CandidateFeed:
        return CandidateFeed(self.settings.kafka_bootstrap, self.settings.topic(TOPIC_INDEX_CANDIDATES))

    async def build(self) -> None:
        """1. The ledger's truth objects (and the candidates on Kafka, for replay); not a figure."""
        n, res = self.n, self.res
        rss0 = server_rss_mib(self.settings.s3_endpoint)
        feed = None
        if self.with_replay:
            await asyncio.to_thread(run_timed, [*KFM, "topics", "ensure"], self.env)
            feed = self.feed()
            await feed.start()
        archive = [n // 4 + 17, n // 2 + 5, (3 * n) // 4 + 101]
        t0 = time.perf_counter()
        async with open_bucket(self.settings) as bucket:
            built = await build(bucket, n, origin=self.origin, name=self.settings.checkpoint_name, key=self.key,
                                query=self.query, archive=archive, feed=feed)
        if feed is not None:
            await feed.close()
        self.commits = built["commits"]
        res["build_s"] = time.perf_counter() - t0
        res["row_bytes_mean"] = built["row_bytes"] / n
        res["build_objects"], res["build_bytes"] = built["objects"], built["bytes"]
        rss1 = server_rss_mib(self.settings.s3_endpoint)
        res["s3_server_rss_mib"] = {"before": rss0, "after_build": rss1}
        say(f"build (not a figure): {res['build_s']:.1f} s, {built['objects']:,} objects, "
            f"{built['bytes'] / 2**20:,.0f} MiB, rows {res['row_bytes_mean']:,.0f} B each"
            + (f", {feed.sent:,} candidates on Kafka" if feed else "")
            + (f"; S3 server RSS {rss0:,.0f} -> {rss1:,.0f} MiB" if rss0 and rss1 else ""))

    async def writer(self) -> None:
        """2-3. Start-up, appends and memory of the writer, in a process of its own."""
        res = self.res
        spec = ",".join(f"{s}x{c}" for s, c in self.args.batches)
        t0 = time.perf_counter()
        w = self.child("--child-writer", "--size", str(self.n), "--batch-spec", spec)
        res["writer"] = w
        res["writer_rss_peak_mib"] = w["rss_peak_mib"]
        for rows in sorted({b["rows"] for b in w["batches"]}, reverse=True):
            bs = [b for b in w["batches"] if b["rows"] == rows]
            res[f"append_{rows}"] = {
                "batches": len(bs),
                "commit_median_s": statistics.median(b["commit_s"] for b in bs),
                "commit_p90_s": quantile([b["commit_s"] for b in bs], 0.9),
                **{f"{k}_median": statistics.median(b[k] for b in bs)
                   for k in ("apply_s", "lookup_s", "put_bytes", "put_objects", "get_bytes", "get_objects")},
            }
        res["startup_median_s"] = statistics.median(w["startup_s"])
        res["restart_median_s"] = statistics.median(w["restart_s"])
        self.size = w["size_after"]
        say(f"writer: start-up {res['startup_median_s'] * 1000:.0f} ms, {self.size - self.n} rows appended, "
            f"peak RSS {w['rss_peak_mib']:,.0f} MiB ({time.perf_counter() - t0:.1f} s)")
        res["storage_after_appends"] = await asyncio.to_thread(entry_bundle_storage, self.settings, self.size)
        st = res["storage_after_appends"]
        say(f"entry bundles stored: {st['bytes'] / 2**20:,.1f} MiB in {st['objects']:,} objects for "
            f"{st['live_bytes'] / 2**20:,.1f} MiB of rows; {st['stale_partials']} superseded partial bundles "
            f"hold {st['stale_bytes'] / 2**20:,.1f} MiB")
        if self.with_replay:
            # The appended candidates too, in the order the writer took them: replay covers every row.
            feed = self.feed()
            await feed.start()
            await feed.send([candidate_value(body(i), i) for i in range(self.n, self.size)])
            await feed.close()

    def verify(self) -> None:
        """4. verify and the raw baseline, interleaved (the machine is shared), in a process
        of its own (verify forks a pool: not from this process's memory); then the CLI."""
        res, size = self.res, self.size
        repeat = 3 if size <= 200_000 else 1
        extra = ["--repeat", str(repeat)]
        if size <= self.args.memory_max:
            extra.append("--in-memory")
        if self.profile:
            extra.append("--profile")
        res.update(self.child("--child-verify", *extra))
        vc, bc = res["verify_cpu_s_per_1000_rows"], res["baseline_cpu_s_per_1000_rows"]
        say(f"verify: {res['verify_rows_per_s']:,.0f} rows/s, raw baseline (fetch + hashlib + tree) "
            f"{res['baseline_rows_per_s']:,.0f} rows/s (median of {repeat}); CPU s per 1,000 rows: verify "
            f"{vc['process']:.3f} + pool {vc['pool']:.3f} + S3 server {vc['s3_server']:.3f}, baseline "
            f"{bc['process']:.3f} + S3 server {bc['s3_server']:.3f}; load average "
            f"{res['load_before_verify']:.1f} -> {res['load_after_verify']:.1f}")
        if "verify_mem_rows_per_s" in res:
            say(f"verify from memory (CPU only): {res['verify_mem_rows_per_s']:,.0f} rows/s, "
                f"baseline {res['baseline_mem_rows_per_s']:,.0f} rows/s; row checks on one core "
                f"{res['verify_checks_1core_rows_per_s']:,.0f} rows/s")
        wall, out, hwm, pss = run_cli_with_memory(["ledger", "verify"], self.env)
        reported = re.search(r"\(([\d,]+) rows/s\)", out)
        res["verify_cli"] = {"wall_s": wall, "rss_peak_mib": hwm, "pss_peak_with_workers_mib": pss,
                             "stdout": out.strip()[-400:],
                             "reported_rows_per_s": int(reported.group(1).replace(",", "")) if reported else None}
        say(f"kfm ledger verify: {wall:.1f} s wall ({size / wall:,.0f} rows/s incl. start-up), "
            f"peak RSS {hwm:,.0f} MiB, peak PSS with pool workers {pss:,.0f} MiB")

    async def reads(self) -> None:
        """5. show, prove and list --limit 20: in-process (median of 5), then one CLI call each."""
        res = self.res
        lat: dict[str, list[float]] = {"show": [], "prove": [], "list20": []}
        async with open_bucket(self.settings) as bucket:
            reader = LedgerReader(bucket, self.trusted, self.settings.checkpoint_name)
            commits = [self.commits[s] for s in self.query]
            for r in range(5):
                c = commits[r % len(commits)]
                t0 = time.perf_counter()
                if await reader.row_for(c) is None:
                    raise AssertionError("row object missing")
                lat["show"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await reader.prove(c)
                lat["prove"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                if len(await reader.tail(20)) != 20:
                    raise AssertionError("list returned another number of rows")
                lat["list20"].append(time.perf_counter() - t0)
        res["reads_median_s"] = {k: statistics.median(v) for k, v in lat.items()}
        mid = self.commits[self.n // 2]
        cli = {"kfm --help": ["--help"], "show": ["ledger", "show", mid], "prove": ["ledger", "prove", mid],
               "list20": ["ledger", "list", "--limit", "20"]}
        res["reads_cli_s"] = {k: (await asyncio.to_thread(run_timed, [*KFM, *a], self.env))[0] for k, a in cli.items()}
        say("reads (median of 5, in-process): " + ", ".join(
            f"{k} {v * 1000:.1f} ms" for k, v in res["reads_median_s"].items())
            + "; CLI: " + ", ".join(f"{k} {v:.2f} s" for k, v in res["reads_cli_s"].items()))

    async def replay(self) -> None:
        """6. audit replay from the writer topic (cProfile at the smallest size)."""
        res = self.res
        async with await Runtime.open(self.settings) as rt:
            with tempfile.TemporaryDirectory(prefix="kfm-bench-replay-") as tmp:
                t0 = time.perf_counter()
                report = await replay(rt, self.trusted, Path(tmp) / "a")
                wall = time.perf_counter() - t0
                if not report.matches:
                    raise AssertionError(f"replay: MISMATCH {report.differences[:3]}")
                res["replay"] = {"rows": report.rows, "candidates": report.candidates, "wall_s": wall,
                                 "rows_per_s": report.rows / wall, "round_trips": report.verified_by_round_trip}
                say(f"audit replay: MATCH, {report.rows:,} rows in {wall:.1f} s ({report.rows / wall:,.0f} rows/s)")
                if self.profile:
                    prof = cProfile.Profile()
                    prof.enable()
                    await replay(rt, self.trusted, Path(tmp) / "b")
                    prof.disable()
                    res["replay_profile"] = profile_top(prof)
        res["kafka_topic"] = self.settings.topic(TOPIC_INDEX_CANDIDATES)


async def drop_topics(settings: Settings, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in names if t in existing]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


# --- report -------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def table(results: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:,.0f} ms" if v >= 0.1 else f"{v * 1000:,.1f} ms"

    def num(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:,.0f}{unit}"

    def get(r: dict[str, Any], *path: str) -> Any:
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    def ratio(r: dict[str, Any], a: str, b: str) -> str:
        x, y = r.get(a), r.get(b)
        return "-" if not x or not y else f"{y / x:.2f}x"

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("append 100 rows: commit, median", lambda r: ms(get(r, "append_100", "commit_median_s"))),
        ("append 100 rows: commit, p90", lambda r: ms(get(r, "append_100", "commit_p90_s"))),
        ("append 100 rows: apply (link), median", lambda r: ms(get(r, "append_100", "apply_s_median"))),
        ("append 100 rows: commit-lookup, median", lambda r: ms(get(r, "append_100", "lookup_s_median"))),
        ("append 100 rows: bytes written", lambda r: num(get(r, "append_100", "put_bytes_median"), " B")),
        ("append 100 rows: objects written", lambda r: num(get(r, "append_100", "put_objects_median"))),
        ("append 100 rows: bytes read", lambda r: num(get(r, "append_100", "get_bytes_median"), " B")),
        ("append 1 row: commit, median", lambda r: ms(get(r, "append_1", "commit_median_s"))),
        ("append 1 row: commit, p90", lambda r: ms(get(r, "append_1", "commit_p90_s"))),
        ("append 1 row: bytes written", lambda r: num(get(r, "append_1", "put_bytes_median"), " B")),
        ("append 1 row: objects written", lambda r: num(get(r, "append_1", "put_objects_median"))),
        ("superseded partial bundles after appends", lambda r: "-" if not get(r, "storage_after_appends") else
         f"{get(r, 'storage_after_appends', 'stale_partials')} = "
         f"{get(r, 'storage_after_appends', 'stale_bytes') / 2**20:,.1f} MiB"),
        ("writer start-up (open), median", lambda r: ms(r.get("startup_median_s"))),
        ("writer restart after appends, median", lambda r: ms(r.get("restart_median_s"))),
        ("writer peak RSS (VmHWM; start-up + appends)", lambda r: num(r.get("writer_rss_peak_mib"), " MiB")),
        ("  of which after imports", lambda r: num(get(r, "writer", "rss_after_imports_mib"), " MiB")),
        ("verify (S3), rows/s", lambda r: num(r.get("verify_rows_per_s"))),
        ("raw baseline (S3: fetch+hashlib+tree), rows/s", lambda r: num(r.get("baseline_rows_per_s"))),
        ("  baseline / verify", lambda r: ratio(r, "verify_rows_per_s", "baseline_rows_per_s")),
        ("  CPU s/1k rows: verify (main + pool)", lambda r: "-" if not get(r, "verify_cpu_s_per_1000_rows") else
         f"{get(r, 'verify_cpu_s_per_1000_rows', 'process') + get(r, 'verify_cpu_s_per_1000_rows', 'pool'):.3f}"),
        ("  CPU s/1k rows: baseline", lambda r: "-" if not get(r, "baseline_cpu_s_per_1000_rows") else
         f"{get(r, 'baseline_cpu_s_per_1000_rows', 'process'):.3f}"),
        ("  CPU s/1k rows: S3 server, during verify", lambda r: "-" if not get(r, "verify_cpu_s_per_1000_rows") else
         f"{get(r, 'verify_cpu_s_per_1000_rows', 's3_server'):.3f}"),
        ("  load average (1 min) before / after", lambda r: "-" if r.get("load_before_verify") is None else
         f"{r['load_before_verify']:.1f} / {r['load_after_verify']:.1f}"),
        ("verify (memory, CPU only), rows/s", lambda r: num(r.get("verify_mem_rows_per_s"))),
        ("verify row checks, 1 core (memory), rows/s", lambda r: num(r.get("verify_checks_1core_rows_per_s"))),
        ("raw baseline (memory), rows/s", lambda r: num(r.get("baseline_mem_rows_per_s"))),
        ("  baseline / verify (memory)", lambda r: ratio(r, "verify_mem_rows_per_s", "baseline_mem_rows_per_s")),
        ("kfm ledger verify: wall", lambda r: "-" if get(r, "verify_cli") is None
         else f"{get(r, 'verify_cli', 'wall_s'):,.1f} s"),
        ("kfm ledger verify: rows/s it reports", lambda r: num(get(r, "verify_cli", "reported_rows_per_s"))),
        ("kfm ledger verify: peak RSS (VmHWM)", lambda r: num(get(r, "verify_cli", "rss_peak_mib"), " MiB")),
        ("kfm ledger verify: peak PSS incl. pool",
         lambda r: num(get(r, "verify_cli", "pss_peak_with_workers_mib"), " MiB")),
        ("show (row_for), median of 5", lambda r: ms(get(r, "reads_median_s", "show"))),
        ("prove, median of 5", lambda r: ms(get(r, "reads_median_s", "prove"))),
        ("list --limit 20 (tail), median of 5", lambda r: ms(get(r, "reads_median_s", "list20"))),
        ("CLI: kfm --help (process floor)", lambda r: ms(get(r, "reads_cli_s", "kfm --help"))),
        ("CLI: kfm ledger show", lambda r: ms(get(r, "reads_cli_s", "show"))),
        ("CLI: kfm ledger prove", lambda r: ms(get(r, "reads_cli_s", "prove"))),
        ("CLI: kfm ledger list --limit 20", lambda r: ms(get(r, "reads_cli_s", "list20"))),
        ("audit replay, rows/s", lambda r: num(get(r, "replay", "rows_per_s"))),
        ("build (not a figure)", lambda r: f"{r['build_s']:,.1f} s" if "build_s" in r else "-"),
        ("S3 server RSS after build", lambda r: num(get(r, "s3_server_rss_mib", "after_build"), " MiB")),
    ]
    heads = [f"{r['rows']:,} rows" for r in results]
    width = max(len(name) for name, _ in rows)
    cols = [max(len(h), *(len(f(r)) for _, f in rows)) for h, r in zip(heads, results, strict=True)]
    out = ["| " + "figure".ljust(width) + " | "
           + " | ".join(h.rjust(c) for h, c in zip(heads, cols, strict=True)) + " |"]
    out.append("|" + "-" * (width + 2) + "|" + "|".join("-" * (c + 1) + ":" for c in cols) + "|")
    for name, f in rows:
        out.append("| " + name.ljust(width) + " | "
                   + " | ".join(f(r).rjust(c) for r, c in zip(results, cols, strict=True)) + " |")
    return "\n".join(out)


def parse_batches(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        size, _, count = part.partition("x")
        out.append((int(size), int(count or 1)))
    return out


def parse_steps(spec: str) -> set[str]:
    steps = {s.strip() for s in spec.split(",") if s.strip()}
    unknown = steps - set(STEPS)
    if unknown:
        raise SystemExit(f"bench_ledger: --steps: unknown {', '.join(sorted(unknown))} (expected {','.join(STEPS)})")
    return steps


def parse_sizes(values: Iterable[str]) -> list[int]:
    sizes: list[int] = []
    for v in values:
        for part in v.split(","):
            if part.strip():
                sizes.append(int(float(part)))
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=[str(s) for s in DEFAULT_SIZES],
                    help="ledger sizes in rows (default 10000 100000 1000000; '1e5' and commas work)")
    ap.add_argument("--out", default="ledger-bench.json", help="where to write the figures as JSON")
    ap.add_argument("--batch-spec", default="100x10,1x10",
                    help="appended batches: ROWSxCOUNT,... (default 100x10,1x10)")
    ap.add_argument("--memory-max", type=int, default=200_000,
                    help="largest ledger also verified from memory (CPU only; it is held in RAM)")
    ap.add_argument("--no-replay", action="store_true", help="skip audit replay (and Kafka)")
    ap.add_argument("--replay-max", type=int, default=REPLAY_MAX, metavar="ROWS",
                    help=f"measure audit replay only at sizes up to ROWS (default {REPLAY_MAX:,}: a topic of "
                         "10^6 candidates holds about 3 GB)")
    ap.add_argument("--dense-checkpoints", type=int, default=0, metavar="EVERY",
                    help="also measure verify and verify --from at the smallest size with an archived "
                         "checkpoint every EVERY rows (the writer archives one per batch)")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"what to measure after the build, comma-separated (default {','.join(STEPS)}); "
                         "'--steps verify' needs only S3")
    ap.add_argument("--keep", action="store_true", help="keep the buckets and topics (default: delete them)")
    ap.add_argument("--child-writer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bucket", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-verify", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.batches = parse_batches(args.batch_spec)
    args.steps = parse_steps(args.steps)
    if args.child_writer:
        print(json.dumps(asyncio.run(writer_child(args))))
        return 0
    if args.child_verify:
        print(json.dumps(asyncio.run(verify_child(args))))
        return 0
    args.sizes = parse_sizes(args.sizes)
    env = stack_env()
    args.code = code_version()
    args.s3_server = server_kind(env.get("KFM_S3_ENDPOINT", ""))
    t0 = time.perf_counter()
    self_check()
    say(f"code {args.code}; generator equals next_row on 300 rows ({time.perf_counter() - t0:.1f} s); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, S3 {env.get('KFM_S3_ENDPOINT')} "
        f"({args.s3_server}), load average {os.getloadavg()[0]:.1f}")
    results = []
    for n in args.sizes:
        results.append(asyncio.run(SizeRun(n, args, env).run()))
        Path(args.out).write_text(json.dumps(_meta(results, args), indent=2, default=str))
    dense = None
    if args.dense_checkpoints:
        dense = asyncio.run(dense_checkpoints(min(args.sizes), args.dense_checkpoints, env))
        results[0]["checkpoint_density"] = dense
        Path(args.out).write_text(json.dumps(_meta(results, args), indent=2, default=str))
    say("\n" + table(results))
    for r in results:
        for k in ("verify_profile", "replay_profile"):
            if k in r:
                say(f"\n{k} ({r['rows']:,} rows), top by own time:\n" + "\n".join(r[k]))
    if dense is not None:
        say(f"\nverify --from with one checkpoint per {dense['every']} rows, top by own time:\n"
            + "\n".join(dense["from_profile"]))
    say(f"\nfigures written to {args.out}")
    return 0


def code_version() -> str:
    """The commit measured, and whether worker/ differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "worker"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [p for p in dirty if p.startswith("worker/")]
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def _meta(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": args.code,
        "host": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "platform": platform.platform()},
        "s3_server": args.s3_server,
        "batches": args.batches,
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
