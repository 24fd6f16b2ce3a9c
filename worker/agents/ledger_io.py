"""Reading the stored ledger: one place every reader goes through.

(Transitional: reads the single JSONL file; the tiled layout replaces the
internals without changing this interface.)
"""

from __future__ import annotations

from worker._internal.s3 import Bucket
from worker.ledger.row import LedgerRow

__all__ = ["LedgerReader"]


class LedgerReader:
    """Read-only access to the ledger in a registry bucket."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket

    async def row_for(self, commit: str) -> LedgerRow | None:
        """The row of a lakeFS commit, or None if it has none."""
        from worker.agents.auditing import load_ledger

        return (await load_ledger(self.bucket)).row_for(commit)

    async def size(self) -> int:
        """Rows covered by the latest published checkpoint."""
        from worker.agents.auditing import load_ledger

        return (await load_ledger(self.bucket)).size
