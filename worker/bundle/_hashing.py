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
import os
import queue
import threading

__all__ = ["BACKGROUND_HASH_BYTES", "BackgroundHash", "BackgroundWriter"]

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


class BackgroundWriter:
    """Write chunks to a file descriptor on a thread of its own, in order.

    Why: a restore writes as many bytes as it decompresses; on another thread
    the writes overlap the decompression, as ``tar -x`` overlaps ``zstd -dc``.
    The same rules as :class:`BackgroundHash` (immutable chunks, a bounded
    queue); a write error is raised by the next :meth:`write` or by
    :meth:`finish`.
    """

    def __init__(self, fd: int, depth: int = 2) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes] = queue.Queue(depth)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="kfm-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._queue.get():
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            view = memoryview(chunk)
            try:
                while view:  # os.write may write short
                    view = view[os.write(self._fd, view) :]
            except OSError as e:
                self._error = e

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if data:
            self._queue.put(data)

    def finish(self) -> None:
        """Wait for every queued write (idempotent); raise the first write error."""
        if self._thread.is_alive():
            self._queue.put(b"")
            self._thread.join()
        if self._error is not None:
            raise self._error
