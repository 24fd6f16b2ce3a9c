"""The hash chain: how a row is linked to the one before it, and the check.

Why a chain as well as a Merkle tree: the chain lets anyone verify the JSONL
file alone, line by line, and pinpoint the first bad line; the Merkle tree
(:mod:`worker.ledger.merkle`) gives short proofs and signed checkpoints. The
chain cannot see a truncated tail (the remaining prefix is a valid chain);
comparing against a signed checkpoint's size and root catches that.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.canonical import canonical_bytes, sha256_hex
from worker.errors import VerificationError
from worker.ledger.row import (
    GENESIS_PREV,
    LedgerRow,
    RowBody,
    compute_hash,
    leaf_bytes,
    parse_jsonl,
)

__all__ = ["next_row", "verify_chain", "verify_jsonl"]


def next_row(prev_rows_tail: LedgerRow | None, body: RowBody) -> LedgerRow:
    """Place ``body`` after ``prev_rows_tail`` (``None`` for the first row).

    Pure linking: it does not look for an earlier row of the same commit,
    because it only sees the tail. :class:`worker.ledger.state.Ledger` does.
    """
    if prev_rows_tail is None:
        seq, prev = 0, GENESIS_PREV
    else:
        seq, prev = prev_rows_tail.seq + 1, sha256_hex(leaf_bytes(prev_rows_tail))
    # Read fields by name so that a LedgerRow passed as ``body`` cannot smuggle
    # its own seq/prev/hash in.
    fields = {name: getattr(body, name) for name in RowBody.model_fields}
    unhashed = body.model_dump(mode="json", include=set(fields)) | {"seq": seq, "prev": prev}
    return LedgerRow(**fields, seq=seq, prev=prev, hash=sha256_hex(canonical_bytes(unhashed)))


def verify_chain(rows: Sequence[LedgerRow]) -> None:
    """Check that ``rows`` (in file order) form one unbroken chain.

    Row ``i`` (line ``i + 1``) must have, in this order of checking:
        1. ``seq == i`` (catches deleted, inserted, duplicated and reordered rows);
        2. ``hash`` equal to :func:`compute_hash` (catches edited content);
        3. ``prev`` equal to the SHA-256 of line ``i``'s bytes (catches a row
           rewritten together with its own hash);
        4. a ``lakefs_commit`` not seen before (one bundle per commit, spec 7).

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
