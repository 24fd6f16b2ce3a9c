"""The ledger writer: the only process that appends to the registry's ledger.

It consumes the single-partition writer topic in order, so appends are totally
ordered. An append costs the same at any ledger size (docs/ledger.md):

1. look up the batch's commits in their row objects (one read per commit, not
   the ledger), verify the new candidates, link the new rows to the tip;
2. replace ``ledger/head`` with ``If-Match`` on the ETag read: the commit
   point (a concurrent writer loses the precondition instead of overwriting);
3. publish what the head implies, every object immutable (``If-None-Match``):
   entry bundles, tiles, one row object and one sidecar per commit, the
   Parquet file of each bundle touched, the archived checkpoint; then the
   public ``ledger/checkpoint``, last, so readers never see a checkpoint
   whose objects are missing.

A crash before 2 leaves no row (the candidate is redelivered); a crash after
2 leaves a head whose objects may be missing, and the next start publishes
them before taking new work (``ledger.finished_after_crash``). The
redelivered candidate is then a same-digest duplicate. Tested by killing the
worker exactly there (``KFM_FAULT_INJECT=ledger.after_head``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time_ns

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, StatusCode

from worker import metrics
from worker._internal.s3 import Bucket
from worker.bundle.attest import verify_envelope
from worker.canonical import sha256_hex
from worker.constants import (
    CHECKPOINTS_PREFIX,
    INDEX_JSONL_KEY,
    INDEX_PARQUET_KEY,
    INDEX_PARQUET_PREFIX,
    LEDGER_CHECKPOINT_KEY,
    LEDGER_HEAD_KEY,
    META_PREFIX,
)
from worker.errors import AlreadyExistsError, Error, IntegrityError, NotFoundError, VerificationError
from worker.io.governance import emit_raw
from worker.io.ledger_reader import LedgerReader, checkpoint_key, checkpoint_origin, commit_key, verify_note
from worker.io.runtime import Runtime
from worker.keys import TrustedKeys
from worker.ledger.chain import LineChecker, verify_jsonl
from worker.ledger.checkpoint import MAX_NOTE_BYTES, sign_checkpoint
from worker.ledger.head import MAX_HEAD_BYTES, Head
from worker.ledger.mirror import sidecar_yaml, to_parquet
from worker.ledger.row import (
    GENESIS_PREV,
    IndexCandidate,
    LedgerRow,
    leaf_bytes,
    parse_candidate,
    parse_line,
)
from worker.ledger.state import Appended, Appender, BatchObjects, Duplicate, Tip, extend
from worker.ledger.tiles import TILE_WIDTH, edge_from_tiles, entries_key, tiles_for_size

__all__ = [
    "LedgerStore",
    "Outcome",
    "checkpoint_key",
    "checkpoint_origin",
    "fault_pause",
    "fault_point",
    "parquet_key",
    "record_batch",
    "verify_candidate",
]

log = structlog.get_logger("kfm.ledger")
tracer = trace.get_tracer("kfm.ledger")

_LEGACY_MAX = 1 << 31
_PUT_IN_FLIGHT = 16


def parquet_key(bundle_index: int) -> str:
    """The Parquet mirror's file for one entry bundle (256 rows)."""
    return f"{INDEX_PARQUET_PREFIX}part-{bundle_index:09d}.parquet"


def fault_point(name: str) -> None:
    """Crash here if ``KFM_FAULT_INJECT`` names this point (crash-safety tests only)."""
    if os.environ.get("KFM_FAULT_INJECT") == name:
        log.warning("fault_injected", point=name)
        os._exit(137)


async def fault_pause(name: str) -> None:
    """Wait here if ``KFM_FAULT_PAUSE`` is ``<name>:<seconds>`` (stop-safety tests only:
    it holds a stop signal inside a window that is otherwise milliseconds wide)."""
    point, _, seconds = os.environ.get("KFM_FAULT_PAUSE", "").partition(":")
    if point == name:
        log.warning("fault_paused", point=name, seconds=seconds)
        await asyncio.sleep(float(seconds or 0))


@dataclass(frozen=True)
class Outcome:
    kind: str  # "recorded" | "duplicate" | "rejected"
    commit: str
    row: LedgerRow | None = None
    reason: str = ""
    same_digest: bool = True
    # Why a rejected candidate was refused: the worker dead-letters it by this error's kind.
    error: IntegrityError | None = None


async def put_once(bucket: Bucket, key: str, data: bytes) -> bool:
    """Write an immutable object; True if this call wrote it.

    An object already there with the same bytes is fine (a retry); other
    bytes mean storage and ledger disagree, which is never papered over.

    Raises:
        IntegrityError: the key holds different bytes.
    """
    try:
        await bucket.put(key, data, if_none_match=True)
        return True
    except AlreadyExistsError:
        stored, _ = await bucket.get(key, max(len(data), 1) * 2 + 1024)
        if stored != data:
            raise IntegrityError(f"{key} is already stored with other bytes than the ledger derives") from None
        return False


async def _gather_limited(jobs: Iterable[Awaitable[bool]]) -> list[bool]:
    sem = asyncio.Semaphore(_PUT_IN_FLIGHT)

    async def one(job: Awaitable[bool]) -> bool:
        async with sem:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


class LedgerStore:
    """The writer's view of the stored ledger: the tip and the head's ETag.

    Memory is the tip (at most 255 open rows and 255 hashes per tree level),
    whatever the ledger's size.
    """

    def __init__(
        self, bucket: Bucket, origin: str, key: Ed25519PrivateKey, key_name: str,
        *, tip: Tip, etag: str | None,
    ) -> None:
        self.bucket = bucket
        self.origin = origin
        self.key = key
        self.key_name = key_name
        self.tip = tip
        self.etag = etag
        # One reader for the writer's row lookups: it checks the bucket's layout once, not
        # on every batch (LedgerStore.open has migrated a single-file ledger already).
        self.rows = LedgerReader(bucket)

    @classmethod
    async def open(
        cls, bucket: Bucket, origin: str, key: Ed25519PrivateKey, key_name: str, trusted: TrustedKeys,
        *, accepted: Sequence[str] = (),
    ) -> tuple[LedgerStore, str]:
        """Load the tip and finish whatever the last head left unpublished.

        New checkpoints are signed under ``key_name``; the stored head's may
        carry ``key_name`` or any ``accepted`` name (one signed before the key
        name changed).

        Returns the store and how it was found: ``empty`` (a new registry),
        ``clean``, ``finished_after_crash`` (objects of the last head were
        missing and are now written) or ``migrated`` (from the single-file layout).

        Raises:
            VerificationError: the stored head or tip does not verify (fail closed).
        """
        state = "clean"
        try:
            data, etag = await bucket.get(LEDGER_HEAD_KEY, MAX_HEAD_BYTES)
        except NotFoundError:
            if await bucket.head(INDEX_JSONL_KEY) is None:
                return cls(bucket, origin, key, key_name, tip=Tip(), etag=None), "empty"
            if not await migrate_legacy(bucket, origin, key, key_name):
                return cls(bucket, origin, key, key_name, tip=Tip(), etag=None), "empty"
            data, etag = await bucket.get(LEDGER_HEAD_KEY, MAX_HEAD_BYTES)
            state = "migrated"
        head = Head.from_bytes(data)
        base = await load_tip(bucket, head.start)
        tip, objects, rows = _replay_head(base, head)
        cp = verify_note(head.note, (key_name, *accepted), trusted, origin)
        if cp.size != tip.size or cp.root != tip.root():
            raise VerificationError(
                f"ledger head: its checkpoint (size {cp.size}) does not match the tree its rows make"
            )
        store = cls(bucket, origin, key, key_name, tip=tip, etag=etag)
        wrote = await store.publish(head, objects, rows)
        if wrote and state == "clean":
            state = "finished_after_crash"
        return store, state

    async def commit(self, appender: Appender) -> Head:
        """Steps 2 and 3: the head with ``If-Match``, then everything it implies.

        Raises:
            ConflictError: another writer moved the head; reload and retry.
        """
        tip, objects = appender.finish()
        note = sign_checkpoint(self.origin, tip.size, tip.root(), self.key_name, self.key)
        head = Head(start=self.tip.size, lines=tuple(appender.lines), note=note)
        if self.etag is None:
            self.etag = await self.bucket.put(LEDGER_HEAD_KEY, head.to_bytes(), if_none_match=True)
        else:
            self.etag = await self.bucket.put(LEDGER_HEAD_KEY, head.to_bytes(), if_match=self.etag)
        self.tip = tip
        fault_point("ledger.after_head")
        await fault_pause("ledger.after_head")
        await self.publish(head, objects, appender.rows)
        return head

    async def publish(self, head: Head, objects: BatchObjects, rows: list[LedgerRow]) -> bool:
        """Write every object ``head`` implies (idempotent); True if any was missing."""
        jobs: list[Awaitable[bool]] = []
        for index, width, data in objects.bundles:
            jobs.append(put_once(self.bucket, entries_key(index, width), data))
        for tile, data in objects.tiles:
            jobs.append(put_once(self.bucket, tile.key, data))
        for row, line in zip(rows, head.lines, strict=True):
            jobs.append(put_once(self.bucket, commit_key(row.lakefs_commit), line + b"\n"))
            jobs.append(put_once(self.bucket, f"{META_PREFIX}{row.lakefs_commit}.yaml",
                                 sidecar_yaml(row, self.bucket.name)))
        if _archives(head):
            jobs.append(put_once(self.bucket, checkpoint_key(head.size), head.note))
        wrote = any(await _gather_limited(jobs))
        await self._mirror(objects)
        wrote = await self._publish_checkpoint(head) or wrote
        await self._drop_superseded(objects)
        return wrote

    async def _drop_superseded(self, objects: BatchObjects) -> None:
        """Delete the partial bundles and tiles of every bundle and tile this batch filled.

        tlog-tiles allows it once the full one exists, and readers of an older
        checkpoint fall back to the full object's prefix. Without it, a registry
        that records commits one at a time would keep about 128 superseded rows per
        row. Best effort, after the checkpoint moved: a failure costs only space.
        """
        prefixes = [entries_key(index, TILE_WIDTH) + ".p/" for index, width, _ in objects.bundles
                    if width == TILE_WIDTH]
        prefixes += [tile.key + ".p/" for tile, _ in objects.tiles if tile.width == TILE_WIDTH]
        for prefix in prefixes:
            try:
                for key in await self.bucket.list_keys(prefix):
                    await self.bucket.delete(key)
            except Error as e:
                log.warning("ledger.superseded_not_deleted", prefix=prefix, error=e.diagnostics())

    async def _mirror(self, objects: BatchObjects) -> None:
        """The Parquet file of each bundle this batch touched (the last one is
        rewritten until its bundle is full: at most 256 rows)."""
        for index, _, data in objects.bundles:
            rows = [parse_line(line, index * TILE_WIDTH + i + 1) for i, line in enumerate(data.split(b"\n")[:-1])]
            parquet = await asyncio.to_thread(to_parquet, rows, start=index * TILE_WIDTH)
            await self.bucket.put(parquet_key(index), parquet)

    async def _publish_checkpoint(self, head: Head) -> bool:
        """Move ``ledger/checkpoint`` forward to the head's, never backward."""
        try:
            current, etag = await self.bucket.get(LEDGER_CHECKPOINT_KEY, MAX_NOTE_BYTES)
        except NotFoundError:
            current, etag = b"", None
        if current == head.note or _note_size(current) > head.size:
            return False
        if etag is None:
            try:
                await self.bucket.put(LEDGER_CHECKPOINT_KEY, head.note, if_none_match=True)
            except AlreadyExistsError:
                return await self._publish_checkpoint(head)
        else:
            await self.bucket.put(LEDGER_CHECKPOINT_KEY, head.note, if_match=etag)
        return True


def _archives(head: Head) -> bool:
    """Whether the head's checkpoint is archived under ``checkpoints/``: the first, and
    each one whose batch reached a new entry bundle. One per batch would make a full
    verify fetch one note per commit for a registry that records commits one at a
    time; one per 256 rows keeps history witnesses dense at a bounded cost."""
    if not head.size:
        return False
    return head.start == 0 or head.size // TILE_WIDTH > head.start // TILE_WIDTH


def _note_size(note: bytes) -> int:
    """The size line of one of our own notes (only to order them; -1 if unreadable)."""
    parts = note.split(b"\n", 2)
    try:
        return int(parts[1]) if len(parts) > 2 else -1
    except ValueError:
        return -1


async def load_tip(bucket: Bucket, size: int) -> Tip:
    """The tip at ``size`` from its published objects: partial tiles, the open bundle
    and the last row. O(log n + 256) bytes, whatever the ledger's size.

    Raises:
        VerificationError: an object is missing or malformed.
    """
    if size == 0:
        return Tip()
    # Through the reader: after a batch filled a bundle, its partial objects are gone
    # and the full ones' prefixes stand in (a restart can land on such a size).
    reader = LedgerReader(bucket)
    fetched = await reader.tiles(tiles_for_size(size))
    edge = edge_from_tiles(size, fetched.__getitem__)
    width = size % TILE_WIDTH
    index = size // TILE_WIDTH if width else size // TILE_WIDTH - 1
    key = entries_key(index, width or TILE_WIDTH)
    data = await reader.bundle(index, width or TILE_WIDTH)
    lines = data.split(b"\n")[:-1]
    if len(lines) != (width or TILE_WIDTH):
        raise VerificationError(f"ledger entry bundle {key} has {len(lines)} rows")
    tail = parse_line(lines[-1], size)
    if tail.seq != size - 1:
        raise VerificationError(f"ledger entry bundle {key}: last row has seq {tail.seq}, expected {size - 1}")
    return Tip(size=size, tail=tail, edge=edge, open_lines=tuple(lines) if width else ())


def _replay_head(base: Tip, head: Head) -> tuple[Tip, BatchObjects, list[LedgerRow]]:
    """Re-link the head's rows onto the tip before it (they must continue its chain)."""
    prev = leaf_bytes(base.tail) if base.tail else None
    checker = LineChecker(seq=base.size, prev=sha256_hex(prev) if prev is not None else GENESIS_PREV)
    rows = [checker.check(line) for line in head.lines]
    tip, objects = extend(base, head.lines, rows[-1] if rows else base.tail)
    return tip, objects, rows


async def migrate_legacy(bucket: Bucket, origin: str, key: Ed25519PrivateKey, key_name: str) -> int:
    """Convert a single-file ledger (``index/rollback-index.jsonl``) to the tiled layout.

    Row bytes are kept exactly, so every root, and every checkpoint signed
    before, stays valid. Reads the old file once (O(n), one time only); the
    file itself is left in place as the JSONL view at that size. Returns the
    number of rows.

    Raises:
        VerificationError: the old file does not verify (nothing is written).
    """
    data, _ = await bucket.get(INDEX_JSONL_KEY, _LEGACY_MAX)
    rows = await asyncio.to_thread(verify_jsonl, data)
    if not rows:
        return 0
    lines = tuple(line for line in data.split(b"\n")[:-1])
    tip, objects = extend(Tip(), lines, rows[-1] if rows else None)
    note = sign_checkpoint(origin, tip.size, tip.root(), key_name, key) if rows else b""
    head = Head(start=0, lines=lines, note=note)
    store = LedgerStore(bucket, origin, key, key_name, tip=tip, etag=None)
    archived = checkpoint_key(tip.size)
    if rows and await bucket.head(archived) is not None:
        # An old checkpoint of this size is kept as it is (it may be signed by an older key).
        head = Head(start=0, lines=lines, note=(await bucket.get(archived, MAX_NOTE_BYTES))[0])
    await store.publish(head, objects, rows)
    # The head holds no rows after a migration: the tip is read back from the tiles.
    await bucket.put(LEDGER_HEAD_KEY, Head(start=tip.size, lines=(), note=head.note).to_bytes(),
                     if_none_match=True)
    for stale in (f"{CHECKPOINTS_PREFIX}latest.note", INDEX_PARQUET_KEY):
        if await bucket.head(stale) is not None:
            await bucket.delete(stale)
    log.warning("ledger.migrated", rows=tip.size, root=tip.root().hex())
    return tip.size


async def verify_candidate(rt: Runtime, c: IndexCandidate, trusted: TrustedKeys) -> None:
    """Record only what verifies: the attestation is signed by a trusted key and
    names the candidate's digest and commit, and the bundle object exists.

    Raises:
        VerificationError: it does not.
    """
    attestation_key, bundle_key = rt.bucket.key_of(c.attestation_uri), rt.bucket.key_of(c.body.artifact_uri)
    if attestation_key is None or bundle_key is None:
        raise VerificationError("candidate points outside the registry bucket")
    # Both reads at once (one round trip on the way to the row); their errors in this order.
    fetched, found = await asyncio.gather(
        rt.bucket.get(attestation_key, 1 << 20), rt.bucket.head(bundle_key), return_exceptions=True
    )
    if isinstance(fetched, BaseException):
        raise fetched
    v = verify_envelope(fetched[0], trusted)
    if v.subject_sha256 != c.bundle_sha256 or v.lakefs_commit != c.body.lakefs_commit:
        raise VerificationError("attestation does not name this bundle and commit")
    if v.key_id != c.body.signatures.key_id:
        raise VerificationError("candidate names another signing key than the attestation")
    if isinstance(found, BaseException):
        raise found
    if found is None:
        raise VerificationError("bundle object missing")


async def _recorded_rows(source: Bucket | LedgerReader, commits: Iterable[str]) -> dict[str, LedgerRow]:
    """The rows already recorded for ``commits``: one read per commit, concurrently."""
    reader = source if isinstance(source, LedgerReader) else LedgerReader(source)
    unique = set(commits)
    found = await asyncio.gather(*(reader.row_for(c) for c in unique))
    return {c: row for c, row in zip(unique, found, strict=True) if row is not None}


async def _checked(rt: Runtime, c: IndexCandidate, trusted: TrustedKeys) -> IntegrityError | None:
    try:
        await verify_candidate(rt, c, trusted)
    except IntegrityError as e:
        return e
    return None


async def record_batch(
    rt: Runtime, store: LedgerStore, values: list[bytes], trusted: TrustedKeys,
    parents: Sequence[Context] = (),
) -> list[Outcome]:
    """Apply a batch of candidates, commit once, then publish what the commit implies.

    ``parents``: each candidate's trace context (from its Kafka headers, the bundle
    run's root span). A batch holds many commits' candidates and a span has one
    parent, so the batch's span links to them all, and each candidate gets a
    ``ledger.append`` span, the child of its bundle's, so one commit's trace runs
    from the webhook to its row.
    """
    now = datetime.now(UTC)
    started_ns = time_ns()
    with tracer.start_as_current_span("ledger.batch", links=_links(parents)) as span:
        span.set_attribute("kfm.candidates", len(values))
        parsed: list[IndexCandidate | IntegrityError] = []
        for value in values:
            try:
                parsed.append(parse_candidate(value, max_bytes=rt.settings.limits.max_message_bytes))
            except IntegrityError as e:
                parsed.append(e)
        candidates = [c for c in parsed if isinstance(c, IndexCandidate)]
        # The lookup and the checks at once, not one after the other (two round trips on
        # every commit's way into the ledger); a commit that turns out to be recorded
        # already is not judged by its check, as before (only a redelivery pays for it).
        recorded, checked = await asyncio.gather(
            _recorded_rows(store.rows, (c.body.lakefs_commit for c in candidates)),
            asyncio.gather(*(_checked(rt, p, trusted) if isinstance(p, IndexCandidate) else _no_check()
                             for p in parsed)),
        )
        checks = [None if isinstance(p, IndexCandidate) and p.body.lakefs_commit in recorded else err
                  for p, err in zip(parsed, checked, strict=True)]
        appender = Appender(store.tip, recorded)
        outcomes = [_apply(appender, p, value, err, now) for p, value, err in zip(parsed, values, checks, strict=True)]
        if appender.rows:
            # ConflictError propagates: another writer won; the caller reloads and retries.
            started = time.monotonic()
            await store.commit(appender)
            metrics.LEDGER_APPEND_SECONDS.observe(time.monotonic() - started)
            metrics.LEDGER_ROWS.set(store.tip.size)
        if len(parents) == len(outcomes):
            _append_spans(parents, outcomes, span.get_span_context(), started_ns)
    for o in outcomes:
        metrics.LEDGER_CANDIDATES.labels(o.kind).inc()
        await _report(rt, o)
    if appender.rows:
        await emit_raw(rt, "checkpoint.signed", "", "", size=store.tip.size, root=store.tip.root().hex(),
                       note_uri=store.bucket.uri(LEDGER_CHECKPOINT_KEY))
    return outcomes


def _links(parents: Sequence[Context]) -> list[Link]:
    contexts = (trace.get_current_span(c).get_span_context() for c in parents)
    return [Link(c) for c in contexts if c.is_valid]


def _append_spans(parents: Sequence[Context], outcomes: list[Outcome], batch: SpanContext, started_ns: int) -> None:
    """One span per candidate, as long as the batch that recorded it (see :func:`record_batch`)."""
    for parent, o in zip(parents, outcomes, strict=True):
        if not trace.get_current_span(parent).get_span_context().is_valid:
            continue
        span = tracer.start_span("ledger.append", context=parent, start_time=started_ns,
                                 links=[Link(batch, {"kfm.link": "ledger.batch"})],
                                 attributes={"lakefs.commit": o.commit, "kfm.outcome": o.kind})
        if o.row is not None:
            span.set_attribute("kfm.seq", o.row.seq)
        if o.kind == "rejected":
            span.set_status(StatusCode.ERROR, o.reason[:256])
        span.end()


async def _no_check() -> IntegrityError | None:
    return None


def _apply(
    appender: Appender, parsed: IndexCandidate | IntegrityError, value: bytes,
    failed: IntegrityError | None, now: datetime,
) -> Outcome:
    if isinstance(parsed, IntegrityError):
        return Outcome("rejected", _commit_of(value), reason=str(parsed), error=parsed)
    c = parsed
    commit = c.body.lakefs_commit
    # A candidate that failed verification is rejected, unless its commit already
    # has a row (then it is reported as a duplicate, as it always was).
    if failed is not None and appender.row_for(commit) is None:
        return Outcome("rejected", commit, reason=str(failed), error=failed)
    try:
        result = appender.apply(c, now)
    except IntegrityError as e:
        return Outcome("rejected", commit, reason=str(e), error=e)
    if isinstance(result, Appended):
        return Outcome("recorded", commit, row=result.row)
    assert isinstance(result, Duplicate)
    return Outcome(
        "duplicate", commit, row=result.existing_row, same_digest=result.same_digest,
        reason="" if result.same_digest else
        f"DIGEST MISMATCH: recorded {result.existing_row.checksums.artifact_sha256}, candidate {c.bundle_sha256}",
    )


def _commit_of(value: bytes) -> str:
    try:
        return str(json.loads(value)["body"]["lakefs_commit"])[:64]
    except (ValueError, KeyError, TypeError, RecursionError):  # deep nesting is refused, not a crash
        return ""


async def _report(rt: Runtime, o: Outcome) -> None:
    repo = o.row.lakefs_repo if o.row else ""
    if o.kind == "recorded" and o.row:
        log.info("ledger.recorded", commit_id=o.commit, seq=o.row.seq)
        await emit_raw(rt, "bundle.recorded", repo, o.commit, seq=o.row.seq, row_hash=o.row.hash,
                       artifact_uri=o.row.artifact_uri)
    elif o.kind == "duplicate":
        level = log.info if o.same_digest else log.error
        level("ledger.duplicate", commit_id=o.commit, same_digest=o.same_digest)
        await emit_raw(rt, "bundle.duplicate", repo, o.commit, same_digest=o.same_digest,
                       severity="info" if o.same_digest else "critical", reason=o.reason)
    else:
        log.error("ledger.rejected", commit_id=o.commit, reason=o.reason)
        await emit_raw(rt, "bundle.rejected", repo, o.commit, reason=o.reason)
