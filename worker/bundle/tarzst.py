"""Deterministic, streaming ``.tar.zst`` writer for rollback bundles.

Why deterministic: the bundle's SHA-256 is what the attestation signs and
what the ledger records, so rebuilding a commit's bundle from the same staged
files must give the same bytes. Everything that could vary is fixed: member
order (``manifest.json`` first, then members sorted by path), ustar headers
with mtime = the commit's creation time, uid/gid 0, empty user/group names,
mode 0644, regular files only, no directory entries, a pax extended header
only for a path or size ustar cannot hold (never an mtime/atime/ctime record),
single-threaded zstd with a content checksum and no content size. The exact
header bytes are in docs/bundles.md ("Tar headers").

Why streaming: model binaries run to gigabytes. Data flows
``staged file -> tar framing -> zstd stream writer -> hashing writer -> out``
through one fixed buffer, so memory does not grow with file size. We write
the tar headers ourselves (``TarInfo.tobuf``) instead of using ``tarfile``'s
stream mode so that the chunk size is ours and every staged byte can be hashed
on its way through.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol, cast

import zstandard

from worker.bundle._hashing import BACKGROUND_HASH_BYTES, BackgroundHash
from worker.bundle.manifest import MANIFEST_NAME, BundleManifest, BundleMember, show_path
from worker.errors import VerificationError

if TYPE_CHECKING:
    from worker.progress import Progress

__all__ = ["CHUNK_SIZE", "BundleDigest", "write_bundle"]

#: Bytes moved per read; the only buffer whose size is ours.
CHUNK_SIZE = 1024 * 1024
# Read size of a staged file hashed on another thread: each read is a new
# bytes object handed to that thread, so a few of them are alive at once.
_THREADED_READ = CHUNK_SIZE // 2

_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 10240: tar(1) and tarfile pad archives to this
# ustar stores mtime in 11 octal digits; beyond that tarfile would emit a pax
# "mtime" record, which we never want.
_MAX_MTIME = 8**11 - 1


class _Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class BundleDigest:
    """Identity of the written bundle: exactly what the attestation signs.

    Attributes:
        sha256: lowercase hex SHA-256 of the compressed bytes written to ``out``.
        size: number of compressed bytes written to ``out``.
    """

    sha256: str
    size: int


class _HashingWriter:
    """Hash (on another thread) and count every byte on its way to ``out``."""

    def __init__(self, out: _Writable) -> None:
        self._out = out
        self._hash = BackgroundHash()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        # zstandard hands over a new bytes object per write; anything else is copied.
        self._hash.update(data if isinstance(data, bytes) else bytes(view))
        written = 0
        while written < len(view):  # raw streams may write short
            n = self._out.write(view[written:])
            written = len(view) if n is None else written + n
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._hash.close()


class _TarWriter:
    """Just enough of a tar writer: PAX headers, regular files, padding."""

    def __init__(self, out: _Writable, mtime: int, progress: Progress | None = None) -> None:
        self._out = out
        self._mtime = mtime
        self._offset = 0
        self._progress = progress

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.size = size
        info.mtime = self._mtime
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # PAX adds an extended header only for long/non-ASCII names and sizes
        # of 8 GiB or more; both are functions of the content, so still fixed.
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def _pad(self) -> None:
        rem = self._offset % _BLOCK
        if rem:
            self._write(bytes(_BLOCK - rem))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._write(data)
        self._pad()

    def add_file(self, member: BundleMember, path: Path, buf: bytearray) -> None:
        name = show_path(member.path)
        # O_NONBLOCK: opening a FIFO put where a staged file should be must
        # not hang the bundler; it is refused below like any non-regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise VerificationError(f"member {name}: staged file is not a regular file")
            os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        with f:
            if st.st_size != member.size:
                raise VerificationError(
                    f"member {name}: staged file size {st.st_size} != manifest size {member.size}"
                )
            self._header(member.path, member.size)
            if member.size >= BACKGROUND_HASH_BYTES:
                digest = self._copy_threaded(f, member, name)
            else:
                digest = self._copy(f, member, name, buf)
            if f.read(1):
                raise VerificationError(f"member {name}: staged file grew while being read")
        if digest != member.sha256:
            raise VerificationError(
                f"member {name}: sha256 mismatch (staged file changed since the manifest was made)"
            )
        self._pad()

    def _copy(self, f: io.FileIO, member: BundleMember, name: str, buf: bytearray) -> str:
        digest = hashlib.sha256()
        view = memoryview(buf)
        remaining = member.size
        while remaining:
            n = f.readinto(view[: min(remaining, len(view))])
            if not n:
                raise VerificationError(f"member {name}: staged file shrank while being read")
            digest.update(view[:n])
            self._write(view[:n])
            remaining -= n
            if self._progress is not None:
                self._progress.advance(n)
        return digest.hexdigest()

    def _copy_threaded(self, f: io.FileIO, member: BundleMember, name: str) -> str:
        """As :meth:`_copy`, the file's SHA-256 taken on another thread while zstd compresses."""
        digest = BackgroundHash(depth=1)
        try:
            remaining = member.size
            while remaining:
                data = f.read(min(remaining, _THREADED_READ))
                if not data:
                    raise VerificationError(f"member {name}: staged file shrank while being read")
                digest.update(data)
                self._write(data)
                remaining -= len(data)
                if self._progress is not None:
                    self._progress.advance(len(data))
            return digest.hexdigest()
        finally:
            digest.close()

    def close(self) -> None:
        # End of archive: two zero blocks, then pad to a whole record as
        # tar(1) and tarfile do, so standard tools read the result unchanged.
        self._write(bytes(2 * _BLOCK))
        rem = self._offset % _RECORD
        if rem:
            self._write(bytes(_RECORD - rem))


def write_bundle(
    out: BinaryIO,
    manifest: BundleManifest,
    files: Mapping[str, Path],
    *,
    mtime: int,
    zstd_level: int | None = None,
    progress: Progress | None = None,
) -> BundleDigest:
    """Write the bundle for ``manifest`` to ``out``, streaming.

    Each staged file is checked against the manifest (regular file, size,
    SHA-256) while it is copied. On any error the bytes already written to
    ``out`` are an incomplete bundle: write to a temporary file and publish
    it only after this returns.

    Args:
        out: where the compressed bundle goes; only ``write`` is used.
        manifest: the bundle's manifest; it is written as ``manifest.json``.
        files: staged file for every manifest member path, and nothing else.
        mtime: mtime of every tar member; pass ``manifest.commit_mtime`` so
            the bundle depends on the commit, not on when it was built.
        zstd_level: zstd compression level (1-22). Part of the output's
            identity: rebuilding with another level gives other bytes. Default:
            the level a v2 manifest records, else 10 (every v1 bundle's); a level
            that contradicts the manifest's record is refused, so the record
            cannot lie about the bytes.
        progress: told the members' total size, then each chunk of member
            content as it is compressed (a progress bar; never changes the output).

    Returns:
        SHA-256 and size of the bytes written to ``out``.

    Raises:
        ValueError: ``files`` does not match the manifest, or ``mtime`` or
            ``zstd_level`` is out of range or not the manifest's.
        VerificationError: a staged file is not a regular file, or its size or
            SHA-256 differs from the manifest (it changed under us).
        OSError: a staged file cannot be read, or ``out`` cannot be written.
    """
    if isinstance(mtime, bool) or not isinstance(mtime, int) or not 0 <= mtime <= _MAX_MTIME:
        raise ValueError(f"mtime must be an int in [0, {_MAX_MTIME}]")
    if zstd_level is None:
        zstd_level = manifest.compression_level
    if isinstance(zstd_level, bool) or not isinstance(zstd_level, int) or not 1 <= zstd_level <= 22:
        raise ValueError("zstd_level must be an int in [1, 22]")
    if manifest.zstd_level is not None and zstd_level != manifest.zstd_level:
        raise ValueError(f"zstd_level {zstd_level} is not the manifest's ({manifest.zstd_level})")
    wanted = {m.path for m in manifest.members}
    missing = sorted(wanted - files.keys())
    extra = sorted(files.keys() - wanted)
    if missing:
        raise ValueError(f"no staged file for member {show_path(missing[0])}")
    if extra:
        raise ValueError(f"staged file {show_path(extra[0])} is not in the manifest")

    sink = _HashingWriter(out)
    # threads=0: multi-threaded zstd may split work differently between runs
    # and machines; single-threaded output depends only on input and level.
    cctx = zstandard.ZstdCompressor(
        level=zstd_level, write_checksum=True, write_content_size=False, threads=0
    )
    buf = bytearray(CHUNK_SIZE)
    try:
        # zstandard only calls write(); the cast is for its IO[bytes] annotation.
        with cctx.stream_writer(cast(IO[bytes], sink), closefd=False) as zw:
            if progress is not None:
                progress.expect(sum(m.size for m in manifest.members))
            tar = _TarWriter(zw, mtime, progress)
            tar.add_bytes(MANIFEST_NAME, manifest.to_bytes())
            for member in manifest.members:
                tar.add_file(member, files[member.path], buf)
            tar.close()
        return BundleDigest(sha256=sink.hexdigest(), size=sink.size)
    finally:
        sink.close()
