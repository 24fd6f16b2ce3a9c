"""Checking the ledger: streaming verification, and audit replay from the writer topic.

These never write to the registry. ``verify_registry`` re-derives what the
writer promised (canonical rows, chain, one row per commit, Merkle tiles,
signed checkpoints) reading each entry bundle once, in constant memory except
8 bytes per row for the one-row-per-commit check; ``replay`` rebuilds the
ledger from the writer topic alone and compares it row for row and root for
root.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from worker._internal.kafka import read_partition
from worker._internal.s3 import bulk_reader
from worker.constants import CHECKPOINTS_PREFIX, LEDGER_HEAD_KEY, META_PREFIX, TOPIC_INDEX_CANDIDATES
from worker.errors import IntegrityError, VerificationError
from worker.io.ledger_reader import BulkGet, LedgerReader, checkpoint_key, commit_key, verify_note
from worker.io.ledger_writer import parquet_key, verify_candidate
from worker.io.runtime import Runtime
from worker.keys import TrustedKeys
from worker.ledger import _native, merkle
from worker.ledger.chain import BundleCheck, LineChecker, check_bundle, link
from worker.ledger.checkpoint import MAX_NOTE_BYTES, Checkpoint
from worker.ledger.head import MAX_HEAD_BYTES, Head
from worker.ledger.mirror import check_mirrors
from worker.ledger.row import GENESIS_PREV, LedgerRow, leaf_bytes, parse_candidate, parse_line
from worker.ledger.scan import Matched, link_candidate, match_run
from worker.ledger.tiles import (
    TILE_WIDTH,
    Tile,
    TreeEdge,
    consistency_proof,
    edge_at,
    tiles_for_size,
    tiles_needed,
)
from worker.progress import Progress

__all__ = ["ReplayReport", "VerifyReport", "replay", "verify_registry"]

_IN_FLIGHT = 8


@dataclass
class VerifyReport:
    rows: int = 0
    root: str = ""
    checkpoints: int = 0
    tiles: int = 0
    from_size: int = 0
    derived: bool = False
    seconds: float = 0.0
    consistency_proof: list[str] = field(default_factory=list)


async def _archived(reader: LedgerReader, trusted: TrustedKeys, after: int, size: int) -> dict[int, bytes]:
    """Roots of the archived checkpoints of sizes in ``(after, size]``, each verified."""
    # Keys carry the size, zero-padded: those at or below `after` are skipped unread.
    keys = [
        k for k in await reader.bucket.list_keys(CHECKPOINTS_PREFIX)
        if k.endswith(".note") and _archived_size(k) > after
    ]
    sem = asyncio.Semaphore(_IN_FLIGHT)

    async def one(key: str) -> Checkpoint | None:
        async with sem:
            note, _ = await reader.bucket.get(key, MAX_NOTE_BYTES)
        try:
            cp = verify_note(note, reader.key_names, trusted, reader.origin)
        except VerificationError as e:
            raise VerificationError(f"checkpoint {key}: {e}") from e
        if key != checkpoint_key(cp.size):
            raise VerificationError(f"checkpoint {key} is stored under another size than its own ({cp.size})")
        return cp if after < cp.size else None

    found = [cp for cp in await asyncio.gather(*(one(k) for k in keys)) if cp is not None]
    beyond = [cp.size for cp in found if cp.size > size]
    if beyond:
        # The writer archives a checkpoint before it publishes it, so a checkpoint
        # beyond the published one is an append in progress (or one a crash
        # interrupted, which the next start finishes) while the head covers it.
        # Beyond the head, rows that were vouched for are gone.
        head = await _head_size(reader)
        if max(beyond) > head:
            raise VerificationError(
                f"the ledger has {max(size, head)} rows but checkpoint {checkpoint_key(max(beyond))} "
                f"vouches for {max(beyond)}; rows were removed"
            )
    return {cp.size: cp.root for cp in found if cp.size <= size}


def _archived_size(key: str) -> int:
    """The size an archived checkpoint's key names (a key of another form is
    always read, and refused by its own check)."""
    name = key.removeprefix(CHECKPOINTS_PREFIX).removesuffix(".note")
    return int(name) if name.isdigit() else 10**18


async def _head_size(reader: LedgerReader) -> int:
    try:
        data, _ = await reader.bucket.get(LEDGER_HEAD_KEY, MAX_HEAD_BYTES)
    except IntegrityError:
        return 0
    return Head.from_bytes(data).size


class _TileCheck:
    """Compares the tiles the verifier recomputes with the stored ones, a few in flight."""

    def __init__(self, reader: LedgerReader) -> None:
        self._reader = reader
        self._pending: list[asyncio.Task[None]] = []
        self.count = 0

    async def expect(self, tile: Tile, data: bytes) -> None:
        self.count += 1
        self._pending.append(asyncio.ensure_future(self._one(tile, data)))
        if len(self._pending) >= _IN_FLIGHT:
            await self._pending.pop(0)

    async def _one(self, tile: Tile, data: bytes) -> None:
        stored = (await self._reader.tiles([tile]))[tile]
        if stored != data:
            raise VerificationError(f"tile {tile.key} differs from the tree the rows make")

    async def drain(self) -> None:
        while self._pending:
            await self._pending.pop(0)


_POOL_ABOVE_ROWS = 32 * TILE_WIDTH


def _fork_pool(rows: int) -> ProcessPoolExecutor | None:
    """One process per core for CPU-bound row work over ``rows`` rows; None when
    the ledger is small (starting processes would cost more than it saves)."""
    workers = os.cpu_count() or 1
    if rows <= _POOL_ABOVE_ROWS or workers < 2:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def _check_pool(rows: int) -> Executor | None:
    """Where verify checks entry bundles: threads with the native scan, else processes.

    Why threads: the native ``check_lines`` holds no GIL while it scans and
    hashes a bundle, so threads use every core without writing each bundle
    (650 KB) down a pipe to another process, which cost the main process
    about a fifth of its time. The pure path needs the GIL throughout, so it
    keeps the fork pool. None for small ledgers (inline is cheaper).
    """
    if rows <= _POOL_ABOVE_ROWS:
        return None
    if _native.NATIVE is not None:
        return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="kfm-verify-check")
    return _fork_pool(rows)


class _BundleChecker:
    """Checks entry bundles in a pool (one worker per core) for large ledgers.

    The row checks are CPU-bound: bundles are checked in parallel, in order of
    arrival, and linked one after another by the caller
    (:meth:`LineChecker.absorb`). Small ledgers are checked inline.
    """

    def __init__(self, rows: int) -> None:
        self._pool = _check_pool(rows)
        self._depth = 4 * (os.cpu_count() or 1)

    async def __aenter__(self) -> _BundleChecker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def stream(
        self, bundles: AsyncIterator[tuple[int, bytes]], start: int
    ) -> AsyncIterator[tuple[int, bytes, BundleCheck]]:
        """(first seq, bytes, check result) for each bundle, in order."""
        loop = asyncio.get_running_loop()
        queue: list[tuple[int, bytes, asyncio.Future[BundleCheck]]] = []
        async for first, data in bundles:
            skip = max(0, start - first)
            if self._pool is None:
                yield first, data, check_bundle(data, first, skip)
                continue
            queue.append((first, data, loop.run_in_executor(self._pool, check_bundle, data, first, skip)))
            if len(queue) >= self._depth:
                f, d, fut = queue.pop(0)
                yield f, d, await fut
        for f, d, fut in queue:
            yield f, d, await fut


async def verify_registry(
    rt: Runtime, trusted: TrustedKeys, *, trusted_note: bytes | None = None, derived: bool = False,
) -> VerifyReport:
    """Verify the stored ledger against its latest signed checkpoint.

    Steps, each failing closed with a message naming what is wrong:

    1. the latest checkpoint is signed by a trusted key for this registry;
    2. every row from the start (or from ``trusted_note``'s size, whose root
       must be the tree's root at that size: the consistency check a monitor
       needs) is canonical and its chain holds (names the row);
    3. no commit has two rows;
    4. the Merkle tree the rows make equals the stored tiles, its root the
       checkpoint's, and every archived checkpoint's root the root at its size;
    5. with ``derived``: every row's commit object, sidecar and Parquet file
       agree with the rows (one read per row: not for monitors).
    """
    async with bulk_reader(rt.bucket) as bulk:
        return await _verify(rt, trusted, bulk, trusted_note=trusted_note, derived=derived)


async def _verify(
    rt: Runtime, trusted: TrustedKeys, bulk: BulkGet, *, trusted_note: bytes | None, derived: bool,
) -> VerifyReport:
    started = time.perf_counter()
    # Bundles and tiles through the lean bulk reader: verify hashes every byte of
    # them against the signed checkpoint, so the S3 client's own checksum adds nothing.
    reader = LedgerReader(
        rt.bucket, trusted, rt.settings.checkpoint_name, rt.settings.checkpoint_key_names, bulk=bulk
    )
    cp, _ = await reader.checkpoint()  # 1
    report = VerifyReport(derived=derived)
    start, edge, checker = 0, TreeEdge(), LineChecker()
    if trusted_note is not None:
        start, edge, checker, report.consistency_proof = await _continue_from(reader, trusted, trusted_note, cp)
    report.from_size = start
    archived = await _archived(reader, trusted, start, cp.size)
    tiles = _TileCheck(reader)
    async with _BundleChecker(cp.size - start) as check:
        async for first, data, part in check.stream(reader.bundles(start, cp.size), start):  # 2-4
            checker.absorb(part)
            for tile, tdata in _grow(edge, part, archived):
                await tiles.expect(tile, tdata)
            if derived:
                lines = data.split(b"\n")[:-1]
                rows = [parse_line(x, first + i + 1) for i, x in enumerate(lines) if first + i >= start]
                await _check_derived(rt, first, lines, rows)
    if edge.size != cp.size:
        raise VerificationError(f"the ledger has {edge.size} rows but its checkpoint covers {cp.size}")
    for tile, tdata in edge.partial_tiles():
        if tile in set(tiles_for_size(cp.size)):
            await tiles.expect(tile, tdata)
    await tiles.drain()
    if edge.root() != cp.root:
        raise VerificationError("the ledger's root differs from its latest signed checkpoint")
    await _no_duplicate_commits(reader, checker, cp.size)
    report.rows, report.root, report.checkpoints = cp.size, cp.root.hex(), len(archived) + 1
    report.tiles, report.seconds = tiles.count, time.perf_counter() - started
    return report


def _grow(edge: TreeEdge, part: BundleCheck, archived: dict[int, bytes]) -> list[tuple[Tile, bytes]]:
    """Add a checked bundle's leaves to the tree; check archived roots on the way.

    A full bundle at a tile boundary with no archived size inside goes in as a
    whole tile (its root was computed with the bundle, in the pool).
    """
    end = edge.size + part.count
    if part.tile_root is not None and edge.size % TILE_WIDTH == 0 and not any(
        edge.size < s < end for s in archived
    ):
        done = edge.append_tile(part.leaf_hashes, part.tile_root)
        _check_root(edge, archived)
        return done
    done = []
    leaves = part.leaf_hashes
    for i in range(0, len(leaves), merkle.HASH_SIZE):
        done += edge.append(leaves[i : i + merkle.HASH_SIZE])
        _check_root(edge, archived)
    return done


def _check_root(edge: TreeEdge, archived: dict[int, bytes]) -> None:
    if edge.size in archived and archived[edge.size] != edge.root():
        raise VerificationError(
            f"the ledger's root at size {edge.size} differs from the signed checkpoint of that "
            "size: history was rewritten"
        )


async def _continue_from(
    reader: LedgerReader, trusted: TrustedKeys, note: bytes, cp: Checkpoint
) -> tuple[int, TreeEdge, LineChecker, list[str]]:
    """Start from a checkpoint the caller trusts: prove the tree still extends it."""
    old = verify_note(note, reader.key_names, trusted, reader.origin)
    if old.size > cp.size:
        raise VerificationError(
            f"the trusted checkpoint has {old.size} rows but the ledger's latest has {cp.size}: rows were removed"
        )
    needed = tiles_needed(lambda src: (edge_at(old.size, cp.size, src), consistency_proof(old.size, cp.size, src)))
    fetched = await reader.tiles(needed)
    edge = edge_at(old.size, cp.size, fetched.__getitem__)
    if edge.root() != old.root:
        raise VerificationError(
            f"the ledger's root at size {old.size} differs from the trusted checkpoint: history was rewritten"
        )
    proof = consistency_proof(old.size, cp.size, fetched.__getitem__)
    merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)
    prev = GENESIS_PREV
    if old.size:
        async for _, line in reader.lines(old.size - 1, old.size, cp.size):
            prev = hashlib.sha256(line).hexdigest()
    return old.size, edge, LineChecker(seq=old.size, prev=prev), [h.hex() for h in proof]


async def _no_duplicate_commits(reader: LedgerReader, checker: LineChecker, size: int) -> None:
    """Confirm, on the full ids, each pair of rows whose commit prefixes collide."""
    for a, b in checker.duplicate_commits():
        rows = [parse_line(line, seq + 1) async for seq, line in reader.lines(a, a + 1, size)]
        rows += [parse_line(line, seq + 1) async for seq, line in reader.lines(b, b + 1, size)]
        if len(rows) == 2 and rows[0].lakefs_commit == rows[1].lakefs_commit:
            raise VerificationError(
                f"ledger row seq={b} (line {b + 1}): duplicate lakefs_commit {rows[1].lakefs_commit}, "
                f"first at seq={a}; one bundle per commit"
            )


async def _check_derived(rt: Runtime, first: int, lines: list[bytes], rows: list[LedgerRow]) -> None:
    """Step 5 for one bundle: its Parquet file, and each row's commit object and sidecar."""
    bucket = rt.bucket
    index = first // TILE_WIDTH
    try:
        parquet, _ = await bucket.get(parquet_key(index), 1 << 30)
    except IntegrityError as e:
        raise VerificationError(f"parquet mirror file {parquet_key(index)}: {e}") from e
    sem = asyncio.Semaphore(_IN_FLIGHT)

    async def get(key: str) -> tuple[str, bytes | None]:
        async with sem:
            try:
                return key, (await bucket.get(key, 1 << 20))[0]
            except IntegrityError:
                return key, None

    keys = [commit_key(r.lakefs_commit) for r in rows] + [f"{META_PREFIX}{r.lakefs_commit}.yaml" for r in rows]
    got = dict(await asyncio.gather(*(get(k) for k in keys)))
    for row in rows:
        if got[commit_key(row.lakefs_commit)] != leaf_bytes(row) + b"\n":
            raise VerificationError(f"row object of commit {row.lakefs_commit} (seq={row.seq}) differs from the ledger")
    bundle_rows = rows if len(rows) == len(lines) else [parse_line(x, first + i + 1) for i, x in enumerate(lines)]
    sidecars = {r.lakefs_commit: got[f"{META_PREFIX}{r.lakefs_commit}.yaml"] or b"" for r in rows}
    await asyncio.to_thread(check_mirrors, bundle_rows, parquet, sidecars, registry_bucket=bucket.name)


@dataclass
class ReplayReport:
    candidates: int = 0
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    matches: bool = False
    differences: list[str] = field(default_factory=list)
    root: str = ""
    verified_by_round_trip: int = 0
    matched_in_parallel: int = 0  # candidates decided by the fast path, in the pool
    seconds: float = 0.0


class _Canonical:
    """The stored ledger as a cursor, read ahead of the replay by a task of its own.

    Why a task: the entry bundles come from the bucket while the pool matches
    the candidates before them, so matching never waits for a fetch it could
    have started earlier. At most ``_STORED_BUNDLES_AHEAD`` bundles are held.
    """

    def __init__(self, reader: LedgerReader, size: int) -> None:
        self._bundles: asyncio.Queue[list[bytes] | Exception | None] = asyncio.Queue(maxsize=_STORED_BUNDLES_AHEAD)
        self._reading = asyncio.create_task(self._read(reader, size)) if size else None
        self._ahead: deque[bytes] = deque()
        self._done = size == 0
        self.position = 0  # seq of the next stored line
        self.last: bytes | None = None  # the line before it

    async def _read(self, reader: LedgerReader, size: int) -> None:
        try:
            async for _, data in reader.bundles(0, size):
                await self._bundles.put(data.split(b"\n")[:-1])
        except Exception as e:  # handed to the reader of the cursor, which raises it
            await self._bundles.put(e)
            return
        await self._bundles.put(None)

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    async def ahead(self, n: int) -> list[bytes]:
        """Up to ``n`` next lines, without consuming them."""
        while len(self._ahead) < n and not self._done:
            lines = await self._bundles.get()
            if isinstance(lines, Exception):
                raise lines
            if lines is None:
                self._done = True
            else:
                self._ahead.extend(lines)
        return list(itertools.islice(self._ahead, n))

    async def peek(self) -> bytes | None:
        lines = await self.ahead(1)
        return lines[0] if lines else None

    def advance(self) -> None:
        self.last = self._ahead.popleft()
        self.position += 1


async def replay(rt: Runtime, trusted: TrustedKeys, scratch: Path, progress: Progress | None = None) -> ReplayReport:
    """Rebuild the ledger from the writer topic with a fresh, group-less consumer.

    No committed offsets are read or written, so the writer is not disturbed.
    Each candidate goes through the writer's rules (one row per commit, rows
    linked in topic order); its attestation is checked with a round trip to
    the bucket only where the rebuilt row differs from the stored one (a
    candidate the writer rejected), so replay is not bound by per-row round
    trips. The rebuilt JSONL is written under ``scratch`` and compared row
    for row, and root for root at every archived checkpoint. ``progress`` counts
    the topic's offsets as they are read.
    """
    started = time.perf_counter()
    reader = LedgerReader(rt.bucket, trusted, rt.settings.checkpoint_name, rt.settings.checkpoint_key_names)
    cp, _ = await reader.checkpoint()
    archived = await _archived(reader, trusted, 0, cp.size)
    report = ReplayReport()
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    out = await asyncio.to_thread((scratch / "rollback-index.jsonl").open, "wb")
    pool = _match_pool(cp.size)
    canonical = _Canonical(reader, cp.size)
    state = _Replay(rt, trusted, canonical, archived, report)
    windows: asyncio.Queue[list[bytes] | Exception | None] = asyncio.Queue(maxsize=_REPLAY_WINDOWS_AHEAD)
    feeder = asyncio.create_task(_feed_windows(rt, windows, progress))
    # One window's lines are written by a thread while the next is matched: a write blocks
    # (about 5 MB a window) but holds no GIL, so the loop goes on reading and linking.
    writing: asyncio.Future[None] | None = None
    try:
        while (window := await windows.get()) is not None:
            if isinstance(window, Exception):
                raise window  # the topic could not be read to its end
            lines = await state.take_many(window, pool)
            chunk = [b"\n".join(lines), b"\n"] if lines else []
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(out.writelines, chunk))
        if writing is not None:
            await writing
    finally:
        feeder.cancel()
        canonical.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if writing is not None and not writing.done():
            await asyncio.wait([writing])
        await asyncio.to_thread(out.close)
    edge = state.edge
    report.rows, report.root = edge.size, edge.root().hex()
    if edge.size != cp.size:
        report.differences.append(f"canonical ledger has {cp.size} rows, replay has {edge.size}")
    elif edge.root() != cp.root:
        report.differences.append("root at the latest checkpoint differs")
    report.matches = not report.differences
    report.seconds = time.perf_counter() - started
    await asyncio.to_thread((scratch / "report.json").write_text, json.dumps(report.__dict__, indent=2))
    return report


class _Replay:
    """The writer's rules applied to one candidate after another."""

    def __init__(
        self, rt: Runtime, trusted: TrustedKeys, canonical: _Canonical, archived: dict[int, bytes],
        report: ReplayReport,
    ) -> None:
        self.rt, self.trusted, self.canonical, self.archived, self.report = rt, trusted, canonical, archived, report
        self.seen: set[str] = set()
        self.edge = TreeEdge()
        self.prev: tuple[int, str] | None = None

    async def take_many(self, values: list[bytes], pool: Executor | None) -> list[bytes]:
        """The rebuilt lines of ``values``: in parallel while they link one to one onto the
        stored lines (the common case); a candidate that does not (a duplicate, a refused
        or unusual one, a difference) is taken alone with the models, then on in parallel."""
        lines: list[bytes] = []
        while values:
            matched = await self._match(values, pool)
            lines += matched
            if len(matched) < len(values):
                rebuilt = await self.take(values[len(matched)])
                if rebuilt is not None:
                    lines.append(rebuilt)
            values = values[len(matched) + 1 :]
        return lines

    async def _match(self, values: list[bytes], pool: Executor | None) -> list[bytes]:
        """The longest prefix of ``values`` that gives the next stored lines, accepted."""
        stored = await self.canonical.ahead(len(values))
        starts = range(0, min(len(values), len(stored)), _REPLAY_CHUNK)
        loop = asyncio.get_running_loop()
        runs = []
        for start in starts:
            args = (values[start : start + _REPLAY_CHUNK], stored[start : start + _REPLAY_CHUNK],
                    stored[start - 1] if start else self.canonical.last, self.canonical.position + start)
            runs.append(loop.run_in_executor(pool, match_run, *args) if pool is not None else _done(match_run(*args)))
        lines: list[bytes] = []
        try:
            for start, run in zip(starts, runs, strict=True):
                for m in await run:
                    if m.commit in self.seen:  # a second row for a commit: the models decide
                        return lines
                    self.report.candidates += 1
                    self.report.matched_in_parallel += 1
                    line = stored[len(lines)]
                    self.canonical.advance()
                    lines.append(self._append(line, self.canonical.position - 1, m.commit, m.line_sha256, m.leaf_hash))
                if len(lines) < start + _REPLAY_CHUNK:
                    return lines
            return lines
        finally:
            for run in runs:
                run.cancel()

    async def take(self, value: bytes) -> bytes | None:
        """The rebuilt line this candidate appends, or None."""
        report = self.report
        report.candidates += 1
        stored = await self.canonical.peek()
        fast = link_candidate(value, self.prev)
        if fast is not None and fast[0] == stored and fast[1].commit not in self.seen:
            # The writer's line, decided without the models: nothing to check further.
            self.canonical.advance()
            return self._append(fast[0], fast[1].seq, fast[1].commit)
        try:
            c = parse_candidate(value)
        except IntegrityError:
            report.rejected += 1
            return None
        if c.body.lakefs_commit in self.seen:
            report.duplicates += 1
            return None
        row, line = link(self.prev, c.body)
        if stored == line:
            self.canonical.advance()
        else:
            report.verified_by_round_trip += 1
            try:
                await verify_candidate(self.rt, c, self.trusted)
            except IntegrityError:
                report.rejected += 1
                return None
            if not report.differences:
                report.differences.append(
                    f"row seq {row.seq} differs (stored {'none' if stored is None else 'another row'}, "
                    f"replay has commit {row.lakefs_commit})"
                )
        return self._append(line, row.seq, row.lakefs_commit)

    def _append(
        self, line: bytes, seq: int, commit: str, line_sha256: str | None = None, leaf_hash: bytes | None = None
    ) -> bytes:
        self.seen.add(commit)
        self.prev = (seq, line_sha256 or hashlib.sha256(line).hexdigest())
        self.edge.append(leaf_hash or merkle.leaf_hash(line))
        if self.edge.size in self.archived and self.archived[self.edge.size] != self.edge.root():
            self.report.differences.append(f"root at checkpoint size {self.edge.size} differs")
        return line


def _match_pool(rows: int) -> Executor | None:
    """Where the replay matches candidates: threads with the native scan, else processes.

    Why threads: the native ``match_run`` holds no GIL while it compares and
    hashes, so threads run it on every core without pickling each candidate
    and stored line (5 KB a row) to another process and back, which cost the
    main process as much as the matching itself. The pure path needs the GIL
    throughout, so it keeps the fork pool (for large ledgers only).
    """
    if _native.NATIVE is not None:
        return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="kfm-replay-match")
    return _fork_pool(rows)


_REPLAY_CHUNK = TILE_WIDTH  # candidates per task in the pool
_REPLAY_WINDOW = 4 * _REPLAY_CHUNK * (os.cpu_count() or 1)  # candidates read before they are matched


def _done(value: list[Matched]) -> asyncio.Future[list[Matched]]:
    future: asyncio.Future[list[Matched]] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


_STORED_BUNDLES_AHEAD = 16  # entry bundles of the stored ledger read ahead of matching
_REPLAY_WINDOWS_AHEAD = 3  # windows read from Kafka while the ones before are matched


async def _feed_windows(
    rt: Runtime, windows: asyncio.Queue[list[bytes] | Exception | None], progress: Progress | None = None
) -> None:
    """Read the writer topic in windows ahead of matching, then ``None`` (or the error that stopped it).

    Why a task: reading and decoding records is the main process's work and
    matching is the pool's, so the two overlap instead of taking turns (the
    replay was half waiting). The queue bounds memory to a few windows.
    """
    window: list[bytes] = []
    try:
        async for value in _candidates(rt, progress):
            window.append(value)
            if len(window) == _REPLAY_WINDOW:
                await windows.put(window)
                window = []
    except Exception as e:  # handed to the consumer, which raises it
        await windows.put(e)
        return
    if window:
        await windows.put(window)
    await windows.put(None)


async def _candidates(rt: Runtime, progress: Progress | None = None) -> AsyncIterator[bytes]:
    """Every value on the writer topic, up to its current end, in batches."""
    async for value in read_partition(rt.settings.kafka, rt.settings.topic(TOPIC_INDEX_CANDIDATES), progress=progress):
        yield value
