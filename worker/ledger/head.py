"""The writer's commit point: the last batch and its signed checkpoint, in one object.

Why one small object: an append must be atomic, yet it touches many objects
(rows, tiles, row objects per commit, mirrors, checkpoints). The writer first
replaces ``ledger/head`` with a conditional write (``If-Match`` on the ETag it
read); that single write is the append. Everything else is derived from the
head and the tiles before it, written after it, and can be re-derived by
whoever reads the head next (a restarted writer), so a crash anywhere leaves
either no append or a complete one. The head holds only the last batch, so
its size does not grow with the ledger.

Format (RFC 8785 JSON)::

    {"checkpoint": "<signed note>", "format": "kfm-ledger-head/1",
     "lines": ["<row line>", ...], "size": <start + len(lines)>, "start": <n>}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

from worker.canonical import canonical_bytes
from worker.errors import VerificationError
from worker.ledger.row import MAX_LINE_BYTES

__all__ = ["HEAD_FORMAT", "MAX_HEAD_BYTES", "Head"]

HEAD_FORMAT: Final = "kfm-ledger-head/1"
MAX_BATCH: Final = 1000
MAX_HEAD_BYTES: Final = 64 * MAX_LINE_BYTES


@dataclass(frozen=True)
class Head:
    """The batch appended last: rows ``start .. start + len(lines)`` and their checkpoint."""

    start: int
    lines: tuple[bytes, ...]
    note: bytes

    @property
    def size(self) -> int:
        return self.start + len(self.lines)

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "checkpoint": self.note.decode("utf-8"),
                "format": HEAD_FORMAT,
                "lines": [line.decode("utf-8") for line in self.lines],
                "size": self.size,
                "start": self.start,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        """Parse a stored head (its rows and note are verified by the caller).

        Raises:
            VerificationError: not a head of this format.
        """
        if len(data) > MAX_HEAD_BYTES:
            raise VerificationError(f"ledger head: larger than {MAX_HEAD_BYTES} bytes")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise VerificationError(f"ledger head: not JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
            raise VerificationError(f"ledger head: not format {HEAD_FORMAT}")
        start, size, lines, note = obj.get("start"), obj.get("size"), obj.get("lines"), obj.get("checkpoint")
        if (
            not isinstance(start, int)
            or not isinstance(size, int)
            or not isinstance(lines, list)
            or not isinstance(note, str)
            or not all(isinstance(line, str) for line in lines)
            or start < 0
            or len(lines) > MAX_BATCH
            or size != start + len(lines)
        ):
            raise VerificationError("ledger head: malformed (start, size, lines, checkpoint)")
        return cls(start, tuple(line.encode("utf-8") for line in lines), note.encode("utf-8"))
