"""SHA-256 beside the work that produces the bytes: the bundle writer's and reader's second core.

Why: writing a bundle hashes every staged file and the compressed output,
reading one hashes the compressed input and every member, all while zstd
runs. hashlib (OpenSSL's SHA-256, with the CPU's SHA extensions where it has
them) and zstandard both release the GIL on large buffers, so hashing on
another thread overlaps the compression or decompression instead of adding
~1 s per GiB after it, as the raw tools' pipelines (``zstd | sha256``) do.
"""

from __future__ import annotations

import hashlib
import queue
import threading

__all__ = ["BACKGROUND_HASH_BYTES", "BackgroundHash"]

#: A member at least this large is hashed on a thread of its own; below it,
#: handing chunks over costs more than it saves.
BACKGROUND_HASH_BYTES = 4 * 1024 * 1024


class BackgroundHash:
    """SHA-256 computed on a thread of its own, in the order chunks are fed.

    Chunks must be immutable ``bytes`` (never a view of a buffer that is
    reused), so the thread hashes exactly what the caller saw; the queue
    holds at most ``depth`` of them, so memory stays a few chunks whatever
    the size. Always :meth:`close` (or read the digest): it ends the thread.
    """

    _END = b""

    def __init__(self, depth: int = 2) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="kfm-sha256", daemon=True)
        self._thread.start()
        self._digest: str | None = None

    def _run(self) -> None:
        while chunk := self._queue.get():
            self._hash.update(chunk)

    def update(self, data: bytes) -> None:
        if data:
            self._queue.put(data)

    def hexdigest(self) -> str:
        if self._digest is None:
            self._queue.put(self._END)
            self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest

    def close(self) -> None:
        """Stop the thread (idempotent); on error paths the digest is never read."""
        if self._digest is None and self._thread.is_alive():
            self.hexdigest()
