"""The whole ledger in memory: the reference model the tiled writer is held to.

It keeps every row, leaf and leaf hash and computes roots and proofs from the
whole list, the simplest correct form of what ``worker.ledger.state`` (a tip
of constant size) and ``worker.ledger.tiles`` (proofs from tiles) do at any
size. Tests only: production never holds the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.errors import IntegrityError, VerificationError
from worker.ledger import merkle
from worker.ledger.chain import next_row, verify_chain, verify_jsonl
from worker.ledger.checkpoint import Checkpoint
from worker.ledger.row import IndexCandidate, LedgerRow, leaf_bytes, row_to_line
from worker.ledger.state import DEFAULT_MAX_FUTURE_SKEW, Appended, ApplyResult, Duplicate
from worker.utc import format_utc, parse_utc

__all__ = ["InclusionProof", "Ledger"]


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of one row in the tree of ``size`` rows."""

    index: int
    size: int
    hashes: tuple[bytes, ...]


class Ledger:
    """The ledger as one writer sees it: verified rows plus indexes over them.

    Args:
        rows: the existing rows in file order; verified here (fail closed), so
            a tampered ledger cannot be extended.
        max_future_skew: how far a candidate's ``created_at`` may be ahead of
            the writer's clock.

    Raises:
        VerificationError: ``rows`` do not form a valid chain.
    """

    def __init__(
        self,
        rows: Sequence[LedgerRow] = (),
        *,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        verify_chain(rows)
        self._max_future_skew = max_future_skew
        self._rows: list[LedgerRow] = []
        self._leaves: list[bytes] = []
        self._leaf_hashes: list[bytes] = []
        self._by_commit: dict[str, int] = {}
        self._root_cache: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
        for row in rows:
            self._add(row)

    @classmethod
    def from_jsonl(
        cls, data: bytes, *, max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW
    ) -> Ledger:
        """Load a ledger file.

        Raises:
            VerificationError: the file is malformed or the chain is broken.
        """
        return cls(verify_jsonl(data), max_future_skew=max_future_skew)

    def _add(self, row: LedgerRow) -> None:
        leaf = leaf_bytes(row)
        self._by_commit[row.lakefs_commit] = len(self._rows)
        self._rows.append(row)
        self._leaves.append(leaf)
        self._leaf_hashes.append(merkle.leaf_hash(leaf))

    @property
    def size(self) -> int:
        """Number of rows, which is also the Merkle tree size."""
        return len(self._rows)

    @property
    def rows(self) -> tuple[LedgerRow, ...]:
        """The rows in ``seq`` order (a copy: the ledger only grows through ``apply``)."""
        return tuple(self._rows)

    @property
    def leaves(self) -> tuple[bytes, ...]:
        """Merkle leaf data: each row's JSONL line without its newline."""
        return tuple(self._leaves)

    @property
    def tail(self) -> LedgerRow | None:
        """The last row, which the next row's ``prev`` links to."""
        return self._rows[-1] if self._rows else None

    def to_jsonl(self) -> bytes:
        """The whole ledger file, byte-identical to what was loaded plus appends."""
        return b"".join(row_to_line(r) for r in self._rows)

    def root(self) -> bytes:
        """RFC 6962 root over all rows (cached until the next append)."""
        size, cached = self._root_cache
        if size != self.size:
            cached = merkle.root_from_hashes(self._leaf_hashes)
            self._root_cache = (self.size, cached)
        return cached

    def root_at(self, size: int) -> bytes:
        """Root of the first ``size`` rows, for checking an older checkpoint.

        Raises:
            ValueError: ``size`` is negative or beyond the ledger.
        """
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} not in 0..{self.size}")
        return merkle.root_from_hashes(self._leaf_hashes[:size])

    def row_for(self, commit: str) -> LedgerRow | None:
        """The row of a lakeFS commit, if it has one."""
        index = self._by_commit.get(commit)
        return None if index is None else self._rows[index]

    def inclusion_proof(self, commit: str) -> InclusionProof:
        """Proof that the commit's row is in the current tree.

        Raises:
            KeyError: the commit has no row.
        """
        index = self._by_commit[commit]
        hashes = merkle.inclusion_proof_from_hashes(index, self._leaf_hashes)
        return InclusionProof(index=index, size=self.size, hashes=tuple(hashes))

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Proof that the tree at ``old_size`` is a prefix of the current tree.

        Raises:
            ValueError: ``old_size`` is negative or beyond the ledger.
        """
        return merkle.consistency_proof_from_hashes(old_size, self.size, self._leaf_hashes)

    def verify_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Check that a verified checkpoint describes a prefix of this ledger.

        This is what catches what the chain cannot: a truncated file (fewer
        rows than a checkpoint already vouched for) and a rewritten history
        (same size, different root).

        Raises:
            VerificationError: the ledger is shorter than the checkpoint, or
                its first ``checkpoint.size`` rows have another root.
        """
        if checkpoint.size > self.size:
            raise VerificationError(
                f"ledger has {self.size} rows but checkpoint {checkpoint.origin} vouches for "
                f"{checkpoint.size}; rows were removed"
            )
        if self.root_at(checkpoint.size) != checkpoint.root:
            raise VerificationError(
                f"ledger root at size {checkpoint.size} differs from the checkpoint; "
                "history was rewritten"
            )

    def apply(self, candidate: IndexCandidate, created_at: datetime) -> ApplyResult:
        """Append ``candidate`` unless its commit already has a row.

        Args:
            candidate: a parsed (so already schema-checked) candidate. Bundle
                and attestation verification is the caller's job, before this.
            created_at: the writer's clock now (UTC). Not written into the
                row; see the module docstring.

        Raises:
            ValueError: ``created_at`` is not an aware UTC datetime.
            IntegrityError: the body's ``created_at`` is further in the
                future than ``max_future_skew``.
        """
        format_utc(created_at)  # refuses naive and non-UTC clocks
        body = candidate.body
        existing = self.row_for(body.lakefs_commit)
        if existing is not None:
            same = existing.checksums.artifact_sha256 == candidate.bundle_sha256
            return Duplicate(existing_row=existing, same_digest=same)
        if parse_utc(body.created_at) > created_at + self._max_future_skew:
            raise IntegrityError(
                f"index candidate for commit {body.lakefs_commit}: created_at "
                f"{body.created_at} is more than {self._max_future_skew} ahead of the writer"
            )
        row = next_row(self.tail, body)
        self._add(row)
        return Appended(row=row)
