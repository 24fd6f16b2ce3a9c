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

__all__ = [
    "BACKGROUND_HASH_BYTES",
    "QUEUE_DEPTH",
    "WRITE_BYTES",
    "BackgroundHash",
    "BackgroundWriter",
    "ChunkRing",
    "write_all",
]

#: A member at least this large is hashed on a thread of its own; below it,
#: handing chunks over costs more than it saves.
BACKGROUND_HASH_BYTES = 4 * 1024 * 1024

#: The most one ``write`` to an extracted file hands the kernel. Why not a whole
#: 1 MiB chunk: the page cache then takes 1 MiB folios, and on the virtual
#: machines measured (2026-11-28) filling those cost ~2.3 s of system time per
#: GiB written, against ~0.25 s in writes of 128-512 KiB (``tar -x`` writes
#: 10 KiB at a time). Smaller writes are no slower anywhere.
WRITE_BYTES = 256 * 1024


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``, in writes of at most :data:`WRITE_BYTES` (os.write may write short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_BYTES]) :]


#: Chunks waiting in the queue of a :class:`BackgroundHash` or
#: :class:`BackgroundWriter` by default; :class:`ChunkRing` relies on it.
QUEUE_DEPTH = 2


class ChunkRing:
    """Buffers handed out in turn, for chunks that background threads read.

    Why: a fresh ``bytes`` per 1 MiB chunk makes malloc map (or trim and
    fault back in) pages for every chunk: 57,000-115,000 page faults per GiB
    verified, against 9,400 with the rings (the zstd CLI: 1,700). On a
    virtual machine whose freed memory goes back to the host, every such
    page can cost a host fault too. Memory is fixed: ``QUEUE_DEPTH + 2``
    chunks per ring, allocated as first used.

    Why reuse is safe: a thread fed through a queue of depth
    :data:`QUEUE_DEPTH` holds, once ``put`` of chunk *x* has returned, only
    chunks *x - QUEUE_DEPTH* to *x* (those queued and the one it took
    before them). With ``QUEUE_DEPTH + 2`` buffers the next one handed out
    held chunk *x + 1 - (QUEUE_DEPTH + 2)*, older than all of those; any
    number of such threads may read the same chunk. So: hand chunks only to
    default-depth consumers, or use them before the next :meth:`next`.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._views: list[memoryview] = []  # allocated as first needed: a small bundle needs one
        self._next = 0

    def next(self) -> memoryview:
        """The buffer whose earlier chunk every consumer is done with."""
        if self._next == len(self._views):
            self._views.append(memoryview(bytearray(self._size)))
        view = self._views[self._next]
        self._next = (self._next + 1) % (QUEUE_DEPTH + 2)
        return view


class BackgroundHash:
    """SHA-256 computed on a thread of its own, in the order chunks are fed.

    Chunks must not change once fed: immutable ``bytes``, or a
    :class:`ChunkRing` buffer (at the default depth), so the thread hashes
    exactly what the caller saw; the queue holds at most ``depth`` of them,
    so memory stays a few chunks whatever the size. Always :meth:`close`
    (or read the digest): it ends the thread.
    """

    _END = b""

    def __init__(self, depth: int = QUEUE_DEPTH) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="kfm-sha256", daemon=True)
        self._thread.start()
        self._digest: str | None = None

    def _run(self) -> None:
        while chunk := self._queue.get():
            self._hash.update(chunk)

    def update(self, data: bytes | memoryview) -> None:
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
    The same rules as :class:`BackgroundHash` (chunks that do not change, a
    bounded queue); a write error is raised by the next :meth:`write` or by
    :meth:`finish`.
    """

    def __init__(self, fd: int, depth: int = QUEUE_DEPTH) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes | memoryview] = queue.Queue(depth)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="kfm-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._queue.get():
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                write_all(self._fd, chunk)
            except OSError as e:
                self._error = e

    def write(self, data: bytes | memoryview) -> None:
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

