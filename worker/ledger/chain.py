"""The hash chain: how a row is linked to the one before it, and the check.

Why a chain as well as a Merkle tree: the chain lets anyone verify the JSONL
file alone, line by line, and pinpoint the first bad line; the Merkle tree
(:mod:`worker.ledger.merkle`) gives short proofs and signed checkpoints. The
chain cannot see a truncated tail (the remaining prefix is a valid chain);
comparing against a signed checkpoint's size and root catches that.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from worker.canonical import canonical_pair, sha256_hex
from worker.errors import VerificationError
from worker.ledger import _native
from worker.ledger.row import (
    GENESIS_PREV,
    LedgerRow,
    RowBody,
    compute_hash,
    hash_matches,
    leaf_bytes,
    parse_jsonl,
    parse_line,
)
from worker.ledger.scan import scan_line
from worker.ledger.tiles import TILE_WIDTH, perfect_root

__all__ = ["BundleCheck", "LineChecker", "check_bundle", "link", "next_row", "verify_chain", "verify_jsonl"]


def next_row(prev_rows_tail: LedgerRow | None, body: RowBody) -> LedgerRow:
    """Place ``body`` after ``prev_rows_tail`` (``None`` for the first row).

    Pure linking: it does not look for an earlier row of the same commit,
    because it only sees the tail; the writer's :class:`worker.ledger.state.Appender` does.
    """
    if prev_rows_tail is None:
        return link(None, body)[0]
    return link((prev_rows_tail.seq, sha256_hex(leaf_bytes(prev_rows_tail))), body)[0]


def link(prev: tuple[int, str] | None, body: RowBody) -> tuple[LedgerRow, bytes]:
    """The row of ``body`` after the row ``(seq, SHA-256 of its line)``, and its line.

    The line (without newline) is encoded once here, so appenders that keep
    the previous line's hash never re-encode a row. ``body`` was validated
    when it was parsed, and ``seq``/``prev``/``hash`` are made here, so the
    row is assembled without validating it again.
    """
    seq, prev_hash = (0, GENESIS_PREV) if prev is None else (prev[0] + 1, prev[1])
    # Read fields by name so that a LedgerRow passed as ``body`` cannot smuggle
    # its own seq/prev/hash in.
    fields = {name: getattr(body, name) for name in RowBody.model_fields}
    unhashed = body.model_dump(mode="json", include=set(fields)) | {"seq": seq, "prev": prev_hash}
    unhashed_line, line = canonical_pair(unhashed, "hash", sha256_hex)
    row_hash = sha256_hex(unhashed_line)
    row = LedgerRow.model_construct(**fields, seq=seq, prev=prev_hash, hash=row_hash)
    return row, line


def verify_chain(rows: Sequence[LedgerRow]) -> None:
    """Check that ``rows`` (in file order) form one unbroken chain.

    Row ``i`` (line ``i + 1``) must have, in this order of checking:
        1. ``seq == i`` (catches deleted, inserted, duplicated and reordered rows);
        2. ``hash`` equal to :func:`compute_hash` (catches edited content);
        3. ``prev`` equal to the SHA-256 of line ``i``'s bytes (catches a row
           rewritten together with its own hash);
        4. a ``lakefs_commit`` not seen before (one bundle per commit).

    Raises:
        VerificationError: naming the first bad row by ``seq`` and line number,
            and what is wrong with it.
    """
    expected_prev = GENESIS_PREV
    first_seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        where = f"ledger row seq={row.seq} (line {index + 1})"
        if row.seq != index:
            raise VerificationError(
                f"{where}: expected seq {index}; rows are missing, duplicated or out of order"
            )
        if row.hash != compute_hash(row):
            raise VerificationError(f"{where}: hash mismatch; the row was modified")
        if row.prev != expected_prev:
            raise VerificationError(f"{where}: prev mismatch; it does not follow the row before it")
        if row.lakefs_commit in first_seen:
            raise VerificationError(
                f"{where}: duplicate lakefs_commit {row.lakefs_commit}, first at "
                f"seq={first_seen[row.lakefs_commit]}; one bundle per commit"
            )
        first_seen[row.lakefs_commit] = row.seq
        expected_prev = sha256_hex(leaf_bytes(row))


def verify_jsonl(data: bytes) -> list[LedgerRow]:
    """Parse and verify a whole ledger file; the rows are returned only if valid.

    Raises:
        VerificationError: from :func:`~worker.ledger.row.parse_jsonl` or
            :func:`verify_chain`, naming the first bad line.
    """
    rows = parse_jsonl(data)
    verify_chain(rows)
    return rows


class LineChecker:
    """The chain check of :func:`verify_chain`, one stored line at a time.

    Why a streaming twin: a ledger of a million rows must verify in constant
    memory, straight from its entry bundles. It checks the same things in the
    same order (form, ``seq``, ``hash``, ``prev``) on the bytes as stored,
    without re-encoding a row. The one-row-per-commit rule needs to remember
    every commit: 8 bytes per row (an 8-byte commit prefix; the rows fed are
    consecutive, so a prefix's position is its seq), sorted once at the end
    by :meth:`duplicate_commits`; equal prefixes are reported with both seqs
    for the caller to confirm on the full ids.

    Args:
        seq: the ``seq`` of the first line fed (to check a suffix of the ledger).
        prev: that row's expected ``prev`` (the SHA-256 of the line before it).
    """

    def __init__(self, seq: int = 0, prev: str | None = GENESIS_PREV) -> None:
        self.seq = seq
        # None: the first row's prev is not known here; it is kept for the caller to link.
        self.prev = prev
        self.first_prev: str | None = None
        self._first_seq = seq
        self._prefixes = array("Q")

    def check(self, line: bytes) -> LedgerRow:
        """Check the next line (without its newline) and return its row.

        Raises:
            VerificationError: naming the row by ``seq`` and line number.
        """
        number = self.seq + 1
        row = parse_line(line, number)
        if not hash_matches(line, row):
            raise VerificationError(f"ledger row seq={row.seq} (line {number}): hash mismatch; the row was modified")
        self._advance(line, row.seq, row.prev, row.lakefs_commit)
        return row

    def feed(self, line: bytes) -> None:
        """Check the next line like :meth:`check`, without building its row.

        The bulk path of verification: :func:`worker.ledger.scan.scan_line`
        decides canonical, schema-valid lines with a true ``hash`` about five
        times faster than the row model, which :meth:`check` still applies to
        every line the scan cannot decide (and which names what is wrong).
        """
        key = scan_line(line)
        if key is None:
            self.check(line)
        else:
            self._advance(line, key.seq, key.prev, key.commit)

    def _advance(self, line: bytes, seq: int, prev: str, commit: str) -> None:
        if seq != self.seq:
            raise VerificationError(
                f"ledger row seq={seq} (line {self.seq + 1}): expected seq {self.seq}; "
                "rows are missing, duplicated or out of order"
            )
        if self.prev is None:
            self.first_prev = prev
        elif prev != self.prev:
            raise VerificationError(
                f"ledger row seq={seq} (line {self.seq + 1}): prev mismatch; it does not follow the row before it"
            )
        self._prefixes.append(int(commit[:16], 16))
        self.prev = hashlib.sha256(line).hexdigest()
        self.seq += 1

    def _take(self, count: int, first_prev: str | None, last_hash: str | None, prefixes: bytes) -> None:
        """Record ``count`` lines the native scan checked and linked after the rows fed so far."""
        if self.prev is None:
            self.first_prev = first_prev
        self._prefixes.frombytes(prefixes)
        self.seq += count
        self.prev = last_hash

    def absorb(self, part: BundleCheck) -> None:
        """Link a bundle checked elsewhere (another process) after the rows fed so far.

        Raises:
            VerificationError: its first row does not follow the row before it.
        """
        if part.count == 0:
            return
        if part.first_seq != self.seq:
            raise VerificationError(f"entry bundle starting at seq {part.first_seq} follows seq {self.seq - 1}")
        if part.first_prev != self.prev:
            number = part.first_seq + 1
            raise VerificationError(
                f"ledger row seq={part.first_seq} (line {number}): prev mismatch; it does not follow the row before it"
            )
        self._prefixes.extend(part.prefixes)
        self.seq += part.count
        self.prev = part.last_hash

    def duplicate_commits(self) -> list[tuple[int, int]]:
        """Pairs of seqs whose commits share an 8-byte prefix (first occurrence first)."""
        if len(self._prefixes) < 2:
            return []
        n = len(self._prefixes)
        # Zero-copy over the array's buffer: the peak is the prefixes, their sort order and
        # the sorted copy (24 bytes per row), not a copy of each as well.
        prefixes = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(self._prefixes)])
        order = pc.sort_indices(prefixes)
        ordered = prefixes.take(order)
        same = pc.indices_nonzero(pc.equal(ordered.slice(1), ordered.slice(0, n - 1)))
        pairs: list[tuple[int, int]] = []
        for i in same.to_pylist():
            a, b = order[i].as_py(), order[i + 1].as_py()
            pairs.append((self._first_seq + min(a, b), self._first_seq + max(a, b)))
        return pairs


@dataclass(frozen=True)
class BundleCheck:
    """What :func:`check_bundle` found in one entry bundle, for the caller to link."""

    first_seq: int
    count: int
    first_prev: str | None
    last_hash: str | None
    leaf_hashes: bytes
    prefixes: array[int]
    tile_root: bytes | None = None  # perfect root of the 256 leaf hashes of a full bundle


def check_bundle(data: bytes, first_seq: int, skip: int = 0) -> BundleCheck:
    """Check the rows of one entry bundle on their own (picklable: runs in a process pool).

    Everything :class:`LineChecker` checks except the link to the row before
    the bundle, which the caller makes with :meth:`LineChecker.absorb`.
    ``skip`` leading rows are not checked (a range that starts mid-bundle).

    Raises:
        VerificationError: naming the first bad row.
    """
    if data and not data.endswith(b"\n"):
        raise VerificationError(f"entry bundle at seq {first_seq}: no final newline (truncated write?)")
    checker = LineChecker(seq=first_seq + skip, prev=None)
    native = _native.NATIVE
    if native is None:
        hashes: list[bytes] = []
        for line in data.split(b"\n")[skip:-1]:
            checker.feed(line)
            hashes.append(_leaf_hash(line))
        leaves = b"".join(hashes)
    else:
        leaves = _check_native(native, checker, data, skip)
    count = checker.seq - first_seq - skip
    return BundleCheck(
        first_seq=first_seq + skip,
        count=count,
        first_prev=checker.first_prev,
        last_hash=checker.prev,
        leaf_hashes=leaves,
        prefixes=checker._prefixes,
        tile_root=perfect_root([leaves[i : i + 32] for i in range(0, len(leaves), 32)])
        if count == TILE_WIDTH
        else None,
    )


def _leaf_hash(line: bytes) -> bytes:
    leaf = hashlib.sha256(b"\x00")
    leaf.update(line)
    return leaf.digest()


def _check_native(native: _native.NativeScan, checker: LineChecker, data: bytes, skip: int) -> bytes:
    """The lines of ``data`` after ``skip``, checked natively while it decides them; the
    others one at a time with :meth:`LineChecker.feed` (the model decides them, or names
    what is wrong). Returns the leaf hashes."""
    pos = 0
    for _ in range(skip):
        pos = data.find(b"\n", pos) + 1 or len(data)
    parts: list[bytes] = []
    while pos < len(data):
        end, count, first_prev, last_hash, leaves, prefixes = native.check_lines(data, pos, checker.seq, checker.prev)
        if count:
            checker._take(count, first_prev, last_hash, prefixes)
            parts.append(leaves)
        if end >= len(data):
            break
        newline = data.index(b"\n", end)
        line = data[end:newline]
        checker.feed(line)
        parts.append(_leaf_hash(line))
        pos = newline + 1
    return b"".join(parts)
