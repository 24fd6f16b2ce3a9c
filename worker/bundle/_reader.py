"""The one streaming reader behind :mod:`verify` and :mod:`extract`.

Why our own tar parser: ``tarfile`` reads a pax extended header into memory
whatever size its header claims, follows GNU sparse maps, and accepts many
entry kinds we never write. Here the grammar is exactly what
:mod:`worker.bundle.tarzst` writes (PAX headers, regular files) and every size
is bounded by :class:`~worker.limits.Limits` *before* it is read.
Headers are still decoded by the documented ``tarfile.TarInfo.frombuf`` so
checksum and number parsing are not ours to get wrong.

Step numbers refer to :func:`worker.bundle.verify.verify_bundle`.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from worker.bundle._hashing import BACKGROUND_HASH_BYTES, BackgroundHash, ChunkRing
from worker.bundle.manifest import (
    MANIFEST_NAME,
    BundleManifest,
    BundleMember,
    check_member_path,
    show_path,
)
from worker.bundle.tarzst import CHUNK_SIZE
from worker.errors import VerificationError
from worker.limits import MAX_PAX_HEADER_BYTES, Limits

__all__ = ["DiscardSink", "MemberSink", "ReadResult", "hash_stream", "read_bundle"]


_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE  # archives end padded to a whole record
_ZERO_BLOCK = bytes(_BLOCK)
# The pax records of one entry other than its path: "size" (>= 8 GiB), and the
# times, ids and names other writers add, each well under 100 bytes.
_PAX_RECORDS_BESIDES_PATH = 1024
# Records other writers add that carry no meaning for a regular file. Anything
# else (GNU.sparse.*, linkpath, hdrcharset, vendor keys) changes how the entry
# would be read, so it is refused.
_ALLOWED_PAX_KEYS = frozenset(
    {"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"}
)
_REFUSED_TYPES = {
    tarfile.SYMTYPE: "symlinks are not allowed",
    tarfile.LNKTYPE: "hard links are not allowed",
    tarfile.CHRTYPE: "device files are not allowed",
    tarfile.BLKTYPE: "device files are not allowed",
    tarfile.FIFOTYPE: "fifos are not allowed",
    tarfile.DIRTYPE: "directory entries are not allowed",
}


class MemberSink(Protocol):
    """Receives the content of each member as it streams past.

    ``end`` is called only after the member's size and SHA-256 matched.
    ``write`` may be given a view of a buffer that is reused for a later
    chunk (:class:`~worker.bundle._hashing.ChunkRing`): a sink uses it before
    returning, copies it, or hands it to a default-depth
    :class:`~worker.bundle._hashing.BackgroundWriter`.
    """

    def begin(self, member: BundleMember) -> None: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def end(self) -> None: ...


class DiscardSink:
    """A sink for verification only: content is hashed, then dropped."""

    def begin(self, member: BundleMember) -> None:
        pass

    def write(self, data: bytes | memoryview) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass(frozen=True)
class ReadResult:
    """What a complete, well-formed bundle stream contained.

    Attributes:
        manifest: the parsed ``manifest.json``.
        sha256: hex SHA-256 of the compressed bytes read.
        size: number of compressed bytes read.
    """

    manifest: BundleManifest
    sha256: str
    size: int


class _ZstdFrameChecker:
    """Walk the zstd frame and block headers (RFC 8878, section 3.1.1) as bytes pass.

    Why: the zstandard stream reader reports a truncated frame as a clean end
    of data. Walking the headers (no decoding) tells a complete frame from a
    cut one, and refuses everything our writer never produces: skippable
    frames, a second frame, reserved bits, a frame without a content checksum.
    """

    _MAGIC = b"\x28\xb5\x2f\xfd"
    _MAX_BLOCK = 128 * 1024  # Block_Maximum_Size

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = bytearray()
        self._skip = 0
        self._checksum = False
        self._done = False

    @staticmethod
    def _fail(reason: str) -> VerificationError:
        return VerificationError(f"bundle: zstd stream does not decode: {reason}")

    def feed(self, data: bytes | memoryview) -> None:
        pos = 0
        while pos < len(data):
            if self._skip:
                n = min(self._skip, len(data) - pos)
                self._skip -= n
                pos += n
                continue
            if self._done:
                raise self._fail("data after the zstd frame")
            take = min(self._need - len(self._buf), len(data) - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._need:
                field = bytes(self._buf)
                self._buf.clear()
                self._step(field)

    def _step(self, field: bytes) -> None:
        if self._state == "magic":
            if field != self._MAGIC:
                raise self._fail("not a zstd frame")
            self._state, self._need = "descriptor", 1
        elif self._state == "descriptor":
            d = field[0]
            if d & 0x08:
                raise self._fail("reserved bit set in frame header")
            if not d & 0x04:
                raise self._fail("frame has no content checksum")
            single_segment = bool(d & 0x20)
            fcs = (1 if single_segment else 0, 2, 4, 8)[d >> 6]
            dict_id = (0, 1, 2, 4)[d & 0x03]
            rest = (0 if single_segment else 1) + dict_id + fcs
            self._state, self._need = ("header", rest) if rest else ("block", 3)
        elif self._state == "header":
            self._state, self._need = "block", 3
        elif self._state == "block":
            h = int.from_bytes(field, "little")
            last, block_type, size = h & 1, (h >> 1) & 3, h >> 3
            if block_type == 3:
                raise self._fail("reserved block type")
            if size > self._MAX_BLOCK:
                raise self._fail("block larger than 128 KiB")
            self._skip = 1 if block_type == 1 else size  # RLE blocks hold one byte
            if last:
                self._state, self._need = "checksum", 4
        else:  # checksum
            self._done = True

    def finish(self) -> None:
        if not self._done or self._skip or self._buf:
            raise self._fail("zstd frame is truncated")


class _HashingReader:
    """Hash and count the compressed bytes, refusing more than ``max_bytes``.

    Reads go into the buffers of a :class:`ChunkRing` when the source can
    ``readinto`` (files can): the decoder is done with a chunk when it asks
    for the next, and a background hash has a queue of the default depth.
    """

    def __init__(
        self,
        raw: BinaryIO,
        max_bytes: int,
        frames: _ZstdFrameChecker | None = None,
        *,
        background: bool = False,
    ) -> None:
        self._raw = raw
        self._readinto: Callable[[memoryview], int | None] | None = getattr(raw, "readinto", None)
        self._ring = ChunkRing(CHUNK_SIZE)
        self._max = max_bytes
        self._frames = frames
        self._hash: BackgroundHash | hashlib._Hash = BackgroundHash() if background else hashlib.sha256()
        self.size = 0

    def _next(self, n: int) -> bytes | memoryview:
        if self._readinto is None or n > CHUNK_SIZE:
            return self._raw.read(n)
        buf = self._ring.next()[:n]
        return buf[: self._readinto(buf) or 0]

    def read(self, n: int = -1) -> bytes | memoryview:
        data = self._next(CHUNK_SIZE if n is None or n < 0 else n)
        self.size += len(data)
        if self.size > self._max:
            raise VerificationError(f"bundle: larger than {self._max} bytes")
        self._hash.update(data)
        if self._frames is not None:
            self._frames.feed(data)
        return data

    def drain(self) -> None:
        """Read (hash, frame-check) everything left in the source."""
        while self.read(CHUNK_SIZE):
            pass

    def hash_rest(self) -> str | None:
        """Hash what is left without parsing it; None if the source is over the limit.

        Why: when parsing fails half-way, the digest of the whole file still
        tells a bundle nobody signed (reported as such) from a signed one
        that is malformed.
        """
        self._frames = None
        try:
            self.drain()
        except VerificationError:
            return None
        return self.hexdigest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if isinstance(self._hash, BackgroundHash):
            self._hash.close()


def hash_stream(f: BinaryIO, max_bytes: int) -> tuple[str, int]:
    """SHA-256 and size of the rest of ``f``, in constant memory.

    Raises:
        VerificationError: more than ``max_bytes`` bytes.
    """
    reader = _HashingReader(f, max_bytes)
    reader.drain()
    return reader.hexdigest(), reader.size


@dataclass(frozen=True)
class _Header:
    name: str
    type: bytes
    size: int
    offset: int


def _padded(n: int) -> int:
    return n + -n % _BLOCK


def _entry_bound(m: BundleMember) -> int:
    """The most tar bytes one declared member may take: a pax header and its
    records, the ustar header, and the data padded to a block."""
    pax = _padded(len(m.path.encode("utf-8")) + 32 + _PAX_RECORDS_BESIDES_PATH)
    return _BLOCK + pax + _BLOCK + _padded(m.size)


class _TarReader:
    def __init__(self, stream: zstandard.ZstdDecompressionReader, max_bytes: int, at_eof: Callable[[], None]) -> None:
        self._s = stream
        self._max = max_bytes
        self._why = f"larger than {max_bytes} bytes"
        self._at_eof = at_eof  # reports a cut zstd frame before a cut tar
        self.offset = 0

    def bound_to(self, manifest: BundleManifest) -> None:
        """From here on, read no more than the manifest's members can take.

        Why: the limits allow tens of GiB, and a few MiB of zstd expand to
        that much; once the manifest is known the work is bounded by what it
        declares instead (members, their headers, the end-of-archive marker
        and its padding to a record).
        """
        declared = self.offset + sum(_entry_bound(m) for m in manifest.members) + 2 * _BLOCK
        declared += -declared % _RECORD
        if declared < self._max:
            self._max = declared
            self._why = f"larger than the {declared} bytes its manifest declares"

    def _account(self, n: int) -> None:
        self.offset += n
        if self.offset > self._max:
            raise VerificationError(f"tar: decompressed stream {self._why}")

    def read_some(self, n: int) -> bytes:
        data = self._s.read(n)
        if not data:
            self._at_eof()
            raise VerificationError(f"tar: truncated at offset {self.offset}")
        self._account(len(data))
        return data

    def read_into(self, buf: memoryview) -> memoryview:
        """As :meth:`read_some`, into ``buf`` (a :class:`ChunkRing` buffer): no new chunk allocated."""
        n = self._s.readinto(buf)
        if not n:
            self._at_eof()
            raise VerificationError(f"tar: truncated at offset {self.offset}")
        self._account(n)
        return buf[:n]

    def read_exact(self, n: int) -> bytes:
        parts = []
        while n:
            data = self.read_some(n)
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.read_some(min(n, CHUNK_SIZE)))

    def skip_padding(self, size: int) -> None:
        self.skip(-size % _BLOCK)

    def next_header(self) -> _Header | None:
        """The next entry's header with pax records applied; ``None`` at the end."""
        pax: dict[str, str] | None = None
        while True:
            start = self.offset
            block = self.read_exact(_BLOCK)
            if block == _ZERO_BLOCK:
                if pax is not None:
                    raise VerificationError(f"tar: pax header at offset {start} has no entry")
                if self.read_exact(_BLOCK) != _ZERO_BLOCK:
                    raise VerificationError(f"tar: malformed end-of-archive at offset {start}")
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
            except (tarfile.HeaderError, ValueError) as e:
                raise VerificationError(f"tar: invalid header at offset {start}: {e}") from e
            if info.size < 0:
                raise VerificationError(f"tar: negative size at offset {start}")
            if info.type == tarfile.XHDTYPE:
                if pax is not None:
                    raise VerificationError(f"tar: two pax headers in a row at offset {start}")
                if info.size > MAX_PAX_HEADER_BYTES:
                    raise VerificationError(f"tar: pax header at offset {start} is too large")
                pax = _parse_pax(self.read_exact(info.size), start)
                self.skip_padding(info.size)
                continue
            name = info.name
            size = info.size
            if pax is not None:
                name = pax.get("path", name)
                if "size" in pax:
                    size = int(pax["size"])
            return _Header(name=name, type=info.type, size=size, offset=start)

    def expect_end(self) -> None:
        """After the end-of-archive blocks only zero padding to the end of the record may follow.

        Why stop there: anything longer is not padding, and reading it all
        before refusing it would let a small bundle keep us busy for
        gigabytes.
        """
        end = self.offset + -self.offset % _RECORD
        while True:
            data = self._s.read(min(CHUNK_SIZE, end - self.offset + 1))
            if not data:
                self._at_eof()
                return
            if data.count(0) != len(data):
                raise VerificationError("tar: data after the end-of-archive marker")
            self.offset += len(data)
            if self.offset > end:
                raise VerificationError(
                    "tar: zero padding after the end-of-archive marker runs past"
                    f" its {_RECORD}-byte record"
                )


def _parse_pax(data: bytes, offset: int) -> dict[str, str]:
    """Parse ``"<len> <key>=<value>\\n"`` records (POSIX.1-2001 pax)."""
    records: dict[str, str] = {}
    pos = 0
    bad = f"tar: malformed pax header at offset {offset}"
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 21)
        digits = data[pos:sp]
        if sp < 0 or not digits.isdigit():
            raise VerificationError(bad)
        end = pos + int(digits)
        if end <= sp + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise VerificationError(bad)
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        try:
            k, v = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError(bad) from e
        if not eq or k in records:
            raise VerificationError(bad)
        if k not in _ALLOWED_PAX_KEYS:
            raise VerificationError(
                f"tar: pax record {show_path(k)!r} at offset {offset} is not allowed"
            )
        records[k] = v
        pos = end
    if "size" in records and not (records["size"].isascii() and records["size"].isdigit()):
        raise VerificationError(bad)
    return records


def _check_entry(h: _Header) -> None:
    # (4) regular files with safe paths only.
    name = show_path(h.name)
    if h.type != tarfile.REGTYPE:
        reason = _REFUSED_TYPES.get(h.type, f"unsupported tar entry type {h.type!r}")
        raise VerificationError(f"member {name}: {reason}")
    try:
        check_member_path(h.name)
    except ValueError as e:
        raise VerificationError(f"member {name}: unsafe path: {e}") from e


def _read_manifest(tar: _TarReader, limits: Limits) -> BundleManifest:
    # (4) the first member is manifest.json, within its size limit.
    h = tar.next_header()
    if h is None:
        raise VerificationError(f"tar: empty archive (no {MANIFEST_NAME})")
    if h.name != MANIFEST_NAME:
        raise VerificationError(
            f"tar: first member is {show_path(h.name)}, expected {MANIFEST_NAME}"
        )
    _check_entry(h)
    if h.size > limits.max_manifest_bytes:
        raise VerificationError(
            f"{MANIFEST_NAME}: size {h.size} exceeds max_manifest_bytes {limits.max_manifest_bytes}"
        )
    manifest = BundleManifest.from_bytes(tar.read_exact(h.size))
    tar.skip_padding(h.size)
    # Refuse a manifest that promises more than the limits before reading on.
    if len(manifest.members) > limits.max_members:
        raise VerificationError(
            f"{MANIFEST_NAME}: {len(manifest.members)} members exceed"
            f" max_members {limits.max_members}"
        )
    for m in manifest.members:
        if m.size > limits.max_member_bytes:
            raise VerificationError(
                f"member {show_path(m.path)}: size {m.size} exceeds"
                f" max_member_bytes {limits.max_member_bytes}"
            )
    if manifest.total_size > limits.max_total_bytes:
        raise VerificationError(
            f"{MANIFEST_NAME}: total size {manifest.total_size} exceeds"
            f" max_total_bytes {limits.max_total_bytes}"
        )
    tar.bound_to(manifest)
    return manifest


def _read_members(
    tar: _TarReader, manifest: BundleManifest, limits: Limits, sink: MemberSink
) -> None:
    expected = {m.path: m for m in manifest.members}
    seen: set[str] = set()
    ring = ChunkRing(CHUNK_SIZE)  # for the large members' chunks
    while (h := tar.next_header()) is not None:
        # (4) well formed: type, path, size limit, no duplicates.
        _check_entry(h)
        name = show_path(h.name)
        if h.size > limits.max_member_bytes:
            raise VerificationError(
                f"member {name}: size {h.size} exceeds max_member_bytes {limits.max_member_bytes}"
            )
        if h.name in seen or h.name == MANIFEST_NAME:
            raise VerificationError(f"member {name}: duplicate")
        member = expected.get(h.name)
        # (5) every member is in the manifest, with the manifest's size and digest.
        if member is None:
            raise VerificationError(f"member {name}: not in the manifest (extra member)")
        if h.size != member.size:
            raise VerificationError(
                f"member {name}: size {h.size} != manifest size {member.size}"
            )
        seen.add(h.name)
        big = h.size >= BACKGROUND_HASH_BYTES
        digest = BackgroundHash() if big else hashlib.sha256()
        try:
            sink.begin(member)
            remaining = h.size
            while remaining:
                chunk: bytes | memoryview
                if big:
                    # Read by the hash thread and the sink's writer: default depths.
                    chunk = tar.read_into(ring.next()[: min(remaining, CHUNK_SIZE)])
                else:
                    chunk = tar.read_some(min(remaining, CHUNK_SIZE))
                digest.update(chunk)
                sink.write(chunk)
                remaining -= len(chunk)
            tar.skip_padding(h.size)
            ok = digest.hexdigest() == member.sha256
        finally:
            if isinstance(digest, BackgroundHash):
                digest.close()
        if not ok:
            raise VerificationError(f"member {name}: sha256 mismatch")
        sink.end()
    # (5) nothing missing.
    missing = [p for p in expected if p not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise VerificationError(f"member {show_path(missing[0])}: missing from the bundle{more}")


def _decode(hashing: _HashingReader, limits: Limits, sink: MemberSink, at_eof: Callable[[], None]) -> BundleManifest:
    try:
        # zstandard only calls read(); the cast is for its IO[bytes] annotation.
        with zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], hashing), read_size=CHUNK_SIZE, read_across_frames=False, closefd=False
        ) as zr:
            tar = _TarReader(zr, limits.max_tar_bytes, at_eof)
            manifest = _read_manifest(tar, limits)
            _read_members(tar, manifest, limits, sink)
            tar.expect_end()
    except zstandard.ZstdError as e:
        # (3) the zstd frame does not decode.
        raise VerificationError(f"bundle: zstd stream does not decode: {e}") from e
    return manifest


def read_bundle(
    source: BinaryIO,
    limits: Limits,
    sink: MemberSink,
    *,
    check_digest: Callable[[str], None] | None = None,
) -> ReadResult:
    """Decode, check and stream one bundle in one pass: steps (3)-(5).

    Args:
        source: the compressed bundle, read once from its current position.
        limits: bounds on everything read.
        sink: receives each member's content as it streams past.
        check_digest: called with the hex SHA-256 of the whole source (step
            2) once it is read to the end; it raises to refuse. When parsing
            fails first, the rest of the source is hashed and this is called
            all the same, so a file that does not match its attestation is
            reported as that rather than as whatever parse error its
            tampering caused.

    Raises:
        VerificationError: naming the first problem found.
    """
    frames = _ZstdFrameChecker()
    hashing = _HashingReader(source, limits.max_bundle_bytes, frames, background=True)

    def at_eof() -> None:
        # (3) the decoder stopped: the frame must be complete and nothing may
        # follow it.
        hashing.drain()
        frames.finish()

    try:
        try:
            manifest = _decode(hashing, limits, sink, at_eof)
        except VerificationError:
            if check_digest is not None and (digest := hashing.hash_rest()) is not None:
                check_digest(digest)
            raise
        if check_digest is not None:
            check_digest(hashing.hexdigest())
    finally:
        hashing.close()
    return ReadResult(manifest=manifest, sha256=hashing.hexdigest(), size=hashing.size)
