"""Reading the stored ledger: every reader goes through here.

Every read costs O(log n) or O(page) objects, never the whole ledger: a row
is found through its commit's immutable row object
(``ledger/commits/<commit>``), proved against the signed checkpoint with the
tiles the proof needs, and ranges of rows are read from entry bundles,
several bundles in flight at a time. Objects are published before the
checkpoint that covers them, so everything the public checkpoint covers is
there to read (docs/ledger.md).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

from worker._internal.s3 import Bucket
from worker.constants import (
    CHECKPOINTS_PREFIX,
    INDEX_JSONL_KEY,
    LEDGER_CHECKPOINT_KEY,
    LEDGER_COMMITS_PREFIX,
    LEDGER_HEAD_KEY,
)
from worker.errors import IntegrityError, NotFoundError, VerificationError
from worker.keys import TrustedKeys
from worker.ledger import merkle
from worker.ledger.checkpoint import MAX_NOTE_BYTES, Checkpoint, parse_and_verify
from worker.ledger.listing import Page, PageBuilder, RowFilter, bundles_backwards
from worker.ledger.row import MAX_LINE_BYTES, LedgerRow, parse_line
from worker.ledger.tiles import (
    TILE_WIDTH,
    Tile,
    entries_key,
    inclusion_proof,
    tiles_needed,
)
from worker.progress import Steps

__all__ = [
    "LedgerReader",
    "checkpoint_key",
    "checkpoint_key_names",
    "checkpoint_origin",
    "checkpoint_signer",
    "commit_key",
    "export_jsonl",
    "verify_note",
]

_BUNDLE_MAX = TILE_WIDTH * (MAX_LINE_BYTES + 1)
_IN_FLIGHT = 8


def checkpoint_origin(checkpoint_name: str, bucket: str) -> str:
    """The log's identity in its checkpoints: one origin per registry bucket."""
    return f"{checkpoint_name}/{bucket}"


def checkpoint_key_names(checkpoint_name: str, origin: str, key_names: Sequence[str] = ()) -> tuple[str, ...]:
    """Every key name a checkpoint of ``origin`` may be signed under: the origin, the
    configured names, and ``KFM_CHECKPOINT_NAME`` (the key name before it became the origin)."""
    return tuple(dict.fromkeys((origin, *key_names, checkpoint_name)))


def checkpoint_signer(key_name: str, origin: str) -> str:
    """The key name new checkpoints are signed under: ``KFM_CHECKPOINT_KEY_NAME``, else the
    origin (the checkpoint format says the key name SHOULD be the origin)."""
    return key_name.strip() or origin


def checkpoint_key(size: int) -> str:
    """Where the checkpoint of one tree size is archived (zero-padded: listings sort by size)."""
    return f"{CHECKPOINTS_PREFIX}{size:012d}.note"


def commit_key(commit: str) -> str:
    """The immutable object holding a commit's row (its ledger line)."""
    return f"{LEDGER_COMMITS_PREFIX}{commit}"


def verify_note(note: bytes, names: str | Sequence[str], trusted: TrustedKeys, origin: str) -> Checkpoint:
    """A checkpoint note verified by any trusted key under any of the accepted key ``names``.

    Why several names: checkpoints signed before the key name became the
    origin carry the old name, and must keep verifying with the same key.

    Raises:
        VerificationError: no trusted key verifies it, or another origin.
    """
    errors: list[str] = []
    for name in (names,) if isinstance(names, str) else tuple(dict.fromkeys(names)):
        for pub in trusted.values():
            try:
                return parse_and_verify(note, name, pub, origin)
            except VerificationError as e:
                errors.append(str(e))
    raise VerificationError(f"checkpoint is not signed by a trusted key ({'; '.join(errors)[:300]})")


class BulkGet(Protocol):
    """Reads of entry bundles and tiles (:func:`worker._internal.s3.bulk_reader`)."""

    async def get(self, key: str, max_bytes: int) -> bytes: ...


class LedgerReader:
    """Read-only access to the ledger in a registry bucket.

    Args:
        bucket: the registry bucket.
        trusted: keys that may sign checkpoints (needed for checkpoints and proofs).
        checkpoint_name: ``KFM_CHECKPOINT_NAME``, the origin's first part; also the key
            name checkpoints were signed under before the key name became the origin.
        key_names: further key names a checkpoint may be signed under
            (``Settings.checkpoint_key_names``).
        bulk: reads entry bundles and tiles instead of ``bucket.get``: a reader
            that checks every byte against the checkpoint (``kfm ledger verify``)
            passes the lean :class:`~worker._internal.s3.BulkReader`.
    """

    def __init__(
        self, bucket: Bucket, trusted: TrustedKeys | None = None, checkpoint_name: str = "",
        key_names: Sequence[str] = (), bulk: BulkGet | None = None,
    ) -> None:
        self.bucket = bucket
        self._bulk = bulk
        self.trusted = trusted
        self.checkpoint_name = checkpoint_name
        self.origin = checkpoint_origin(checkpoint_name, bucket.name)
        self.key_names = checkpoint_key_names(checkpoint_name, self.origin, key_names)
        self._layout_checked = False

    async def row_for(self, commit: str) -> LedgerRow | None:
        """The row of a lakeFS commit, or None if it has none.

        Raises:
            VerificationError: the stored row object is malformed or names
                another commit.
        """
        found = await self._row_and_line(commit)
        return None if found is None else found[0]

    async def _row_and_line(self, commit: str) -> tuple[LedgerRow, bytes] | None:
        """The commit's row and its line (the Merkle leaf), from its row object."""
        try:
            data, _ = await self.bucket.get(commit_key(commit), MAX_LINE_BYTES)
        except NotFoundError:
            await self._refuse_legacy()
            return None
        line = data.rstrip(b"\n")
        row = parse_line(line, 1)
        if row.lakefs_commit != commit:
            raise VerificationError(f"{commit_key(commit)} holds the row of commit {row.lakefs_commit}")
        return row, line

    async def note(self) -> bytes | None:
        """The latest public checkpoint's bytes, or None for an empty ledger."""
        try:
            note, _ = await self.bucket.get(LEDGER_CHECKPOINT_KEY, MAX_NOTE_BYTES)
        except NotFoundError:
            await self._refuse_legacy()
            return None
        return note

    async def checkpoint(self) -> tuple[Checkpoint, bytes]:
        """The latest checkpoint, verified; an empty ledger has size 0.

        Raises:
            VerificationError: not signed by a trusted key.
        """
        note = await self.note()
        if note is None:
            return Checkpoint(origin=self.origin, size=0, root=merkle.EMPTY_ROOT), b""
        return verify_note(note, self.key_names, self._trusted(), self.origin), note

    async def size(self) -> int:
        """Rows covered by the latest published checkpoint."""
        return (await self.checkpoint())[0].size

    async def _read(self, key: str, max_bytes: int) -> bytes:
        if self._bulk is not None:
            return await self._bulk.get(key, max_bytes)
        return (await self.bucket.get(key, max_bytes))[0]

    async def tiles(self, needed: Iterable[Tile]) -> dict[Tile, bytes]:
        """Fetch tiles concurrently."""
        wanted = sorted(set(needed))
        sem = asyncio.Semaphore(_IN_FLIGHT)

        async def one(tile: Tile) -> bytes:
            async with sem:
                try:
                    return await self._read(tile.key, TILE_WIDTH * merkle.HASH_SIZE)
                except NotFoundError:
                    pass
                # A partial tile is deleted once its tile is full (tlog-tiles allows it): a
                # reader of an older checkpoint takes the full tile's prefix instead.
                if tile.width < TILE_WIDTH:
                    full = Tile(tile.level, tile.index, TILE_WIDTH)
                    try:
                        data = await self._read(full.key, TILE_WIDTH * merkle.HASH_SIZE)
                        return data[: tile.width * merkle.HASH_SIZE]
                    except NotFoundError:
                        pass
                raise VerificationError(f"tile {tile.key} is missing")

        return dict(zip(wanted, await asyncio.gather(*(one(t) for t in wanted)), strict=True))

    async def bundle(self, index: int, width: int) -> bytes:
        """One entry bundle's JSONL bytes.

        Raises:
            VerificationError: missing.
        """
        try:
            return await self._read(entries_key(index, width), _BUNDLE_MAX)
        except NotFoundError:
            pass
        # As for tiles: a partial bundle may be gone once its bundle is full.
        if width < TILE_WIDTH:
            try:
                full = await self._read(entries_key(index, TILE_WIDTH), _BUNDLE_MAX)
            except NotFoundError:
                pass
            else:
                lines = full.split(b"\n")
                if len(lines) > width:
                    return b"\n".join(lines[:width]) + b"\n"
        raise VerificationError(f"entry bundle {entries_key(index, width)} is missing")

    async def bundles(
        self, start: int, end: int, tree_size: int | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """The entry bundles covering rows ``[start, end)``, in order, as (seq of the
        bundle's first row, bytes); several in flight. Bundles are those of the tree
        of ``tree_size`` rows (default ``end``): only published sizes have partial bundles."""
        tree = end if tree_size is None else tree_size
        first, last = start // TILE_WIDTH, (end - 1) // TILE_WIDTH if end else -1
        pending: list[tuple[int, asyncio.Task[bytes]]] = []
        index = first
        try:
            while index <= last or pending:
                while index <= last and len(pending) < _IN_FLIGHT:
                    width = min(TILE_WIDTH, tree - index * TILE_WIDTH)
                    pending.append((index, asyncio.ensure_future(self.bundle(index, width))))
                    index += 1
                done, task = pending.pop(0)
                yield done * TILE_WIDTH, await task
        finally:
            for _, task in pending:
                task.cancel()

    async def lines(
        self, start: int, end: int, tree_size: int | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Rows ``[start, end)`` as (seq, line without newline), of the tree of ``tree_size``."""
        async for first, data in self.bundles(start, end, tree_size):
            for offset, line in enumerate(data.split(b"\n")[:-1]):
                seq = first + offset
                if start <= seq < end:
                    yield seq, line

    async def prove(self, commit: str) -> dict[str, Any]:
        """An inclusion proof of the commit's row against the latest signed checkpoint,
        checked before it is returned.

        Raises:
            IntegrityError: the commit has no row, or its row is not yet covered
                by a signed checkpoint.
            VerificationError: the proof does not verify.
        """
        found = await self._row_and_line(commit)
        if found is None:
            raise IntegrityError(f"no ledger row for commit {commit}")
        row, leaf = found
        cp, note = await self.checkpoint()
        if row.seq >= cp.size:
            raise IntegrityError(
                f"row seq {row.seq} of commit {commit} is not yet covered by a signed checkpoint "
                f"(size {cp.size}); retry in a moment"
            )
        needed = tiles_needed(lambda src: inclusion_proof(row.seq, cp.size, src))
        fetched = await self.tiles(needed)
        proof = inclusion_proof(row.seq, cp.size, fetched.__getitem__)
        merkle.verify_inclusion(leaf, row.seq, cp.size, proof, cp.root)
        return {
            "lakefs_commit": commit,
            "seq": row.seq,
            "row_hash": row.hash,
            "leaf_index": row.seq,
            "tree_size": cp.size,
            "root": cp.root.hex(),
            "inclusion_proof": [h.hex() for h in proof],
            "checkpoint": note.decode("utf-8"),
        }

    async def tail(self, limit: int) -> list[LedgerRow]:
        """The newest ``limit`` rows covered by the checkpoint, oldest first."""
        cp, _ = await self.checkpoint()
        start = max(0, cp.size - limit)
        return [parse_line(line, seq + 1) async for seq, line in self.lines(start, cp.size)]

    async def page(
        self, limit: int, flt: RowFilter | None = None, before: int | None = None
    ) -> tuple[Page, Checkpoint]:
        """The newest ``limit`` rows matching ``flt`` with ``seq`` below ``before`` (default:
        every row the latest checkpoint covers), and that checkpoint.

        Reads entry bundles from the right edge backwards and stops as soon as the
        page is full (:mod:`worker.ledger.listing`): the read-ahead starts at one
        bundle and doubles up to 8 in flight, so an unfiltered page of a few rows
        costs one or two reads, and a rare filter streams the ledger backwards.

        Raises:
            ValueError: ``limit`` or ``before`` out of range.
            VerificationError: the checkpoint, or a bundle that may match, does not verify.
        """
        cp, _ = await self.checkpoint()
        end = cp.size if before is None else min(before, cp.size)
        builder = PageBuilder(limit, flt or RowFilter(), end)
        order = bundles_backwards(end)
        pending: list[tuple[int, asyncio.Task[bytes]]] = []
        ahead = 1
        try:
            while True:
                while len(pending) < ahead:
                    nxt = next(order, None)
                    if nxt is None:
                        break
                    index, first = nxt
                    width = min(TILE_WIDTH, cp.size - first)
                    pending.append((first, asyncio.ensure_future(self.bundle(index, width))))
                if not pending:
                    break
                first, task = pending.pop(0)
                if builder.feed(first, await task):
                    break
                ahead = min(ahead * 2, _IN_FLIGHT)
        finally:
            for _, task in pending:
                task.cancel()
        return builder.page(), cp

    def _trusted(self) -> TrustedKeys:
        if self.trusted is None:
            raise IntegrityError("no trusted keys given: set KFM_TRUSTED_KEYS_DIR or pass --key")
        return self.trusted

    async def _refuse_legacy(self) -> None:
        """A bucket in the single-file layout must be migrated before it is read."""
        if self._layout_checked:
            return
        self._layout_checked = True
        if await self.bucket.head(LEDGER_CHECKPOINT_KEY) is None and await self.bucket.head(
            INDEX_JSONL_KEY
        ) is not None and await self.bucket.head(LEDGER_HEAD_KEY) is None:
            raise IntegrityError(
                "the ledger is in the single-file layout of earlier versions: run "
                "`kfm ledger migrate` (the worker also migrates it when it starts)"
            )


async def export_jsonl(reader: LedgerReader, out: Path | None, steps: Steps | None = None) -> int:
    """Write the ledger up to its latest checkpoint as one JSONL file.

    To ``out``, or (``None``) to the JSONL view ``index/rollback-index.jsonl`` in
    the bucket, streamed through a temporary file: constant memory. The file
    is the concatenation of the entry bundles, so it is byte-identical to the
    single-file ledger of earlier versions at the same size. Returns the rows.
    ``steps`` (the CLI's progress bars) gets a bar of rows read and one of bytes uploaded.
    """
    cp, _ = await reader.checkpoint()
    target = out or Path(tempfile.mkdtemp(prefix="kfm-export-")) / "rollback-index.jsonl"
    handle = await asyncio.to_thread(target.open, "wb")
    try:
        with nullcontext() if steps is None else steps.bar("export", unit="rows", total=cp.size) as progress:
            async for first, data in reader.bundles(0, cp.size):
                await asyncio.to_thread(handle.write, data)
                if progress is not None:
                    progress.advance(min(TILE_WIDTH, cp.size - first))
    finally:
        await asyncio.to_thread(handle.close)
    if out is None:
        try:
            with nullcontext() if steps is None else steps.bar("upload") as progress:
                await reader.bucket.upload_file(INDEX_JSONL_KEY, target, overwrite=True, progress=progress)
        finally:
            await asyncio.to_thread(shutil.rmtree, target.parent, True)
    return cp.size
