"""worker.bundle.extract: refuses anything unsafe and leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.unit.bundle.helpers import (
    Entry,
    build_bundle_bytes,
    craft_tar_zst,
    golden,
    make_manifest,
    manifest_entry,
    reg,
    sign_for,
    special,
    zstd_compress,
)
from worker.bundle import extract_bundle, verify_bundle
from worker.bundle._hashing import (
    BACKGROUND_HASH_BYTES,
    QUEUE_DEPTH,
    WRITE_BYTES,
    BackgroundWriter,
    ChunkRing,
    write_all,
)
from worker.bundle.extract import staged_extraction
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import DEFAULT_LIMITS, Limits

OK = {"a.txt": b"hello"}


def _with(*extra: Entry, contents: dict[str, bytes] | None = None) -> bytes:
    """manifest.json + the listed members + ``extra`` entries, as tarfile writes them."""
    contents = OK if contents is None else contents
    entries = [manifest_entry(make_manifest(contents))]
    entries += [reg(p, d) for p, d in sorted(contents.items())]
    return craft_tar_zst([*entries, *extra])


def _dev(name: str, type_: bytes) -> Entry:
    info, data = special(name, type_)
    info.devmajor, info.devminor = 1, 3
    return info, data


def _sparse_pax() -> bytes:
    info, data = reg("a.txt", b"hello")
    info.pax_headers = {"GNU.sparse.size": "5"}
    return craft_tar_zst([manifest_entry(make_manifest(OK)), (info, data)])


def _raw_tar(entries: list[Entry]) -> bytearray:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return bytearray(raw.getvalue())


def _bad_checksum() -> bytes:
    m = make_manifest(OK)
    raw = _raw_tar([manifest_entry(m), reg("a.txt", b"hello")])
    second = 512 + (len(m.to_bytes()) + 511) // 512 * 512
    raw[second + 100] ^= 0x01  # mode field of a.txt's header
    return zstd_compress(bytes(raw))


def _malformed_pax() -> bytes:
    m = make_manifest(OK)
    info, data = reg("a.txt", b"hello")
    info.pax_headers = {"path": "a.txt"}
    raw = _raw_tar([manifest_entry(m), (info, data)])
    at = raw.index(b"path=a.txt\n")
    raw[at - 3 : at - 1] = b"99"  # record length now points past the header
    return zstd_compress(bytes(raw))


CRAFTED: list[tuple[str, bytes, str]] = [
    ("bad header checksum", _bad_checksum(), "tar: invalid header at offset"),
    ("malformed pax record", _malformed_pax(), "tar: malformed pax header at offset"),
    ("dotdot", _with(reg("../x", b"x")), "member ../x: unsafe path: path contains '..'"),
    (
        "nested dotdot",
        _with(reg("a/../../x", b"x")),
        "member a/../../x: unsafe path: path contains '..'",
    ),
    ("absolute", _with(reg("/etc/x", b"x")), "member /etc/x: unsafe path: absolute path"),
    (
        "symlink",
        _with(special("link", tarfile.SYMTYPE, "/etc/passwd")),
        "member link: symlinks are not allowed",
    ),
    (
        "hardlink",
        _with(special("hard", tarfile.LNKTYPE, "a.txt")),
        "member hard: hard links are not allowed",
    ),
    (
        "char device",
        _with(_dev("null", tarfile.CHRTYPE)),
        "member null: device files are not allowed",
    ),
    (
        "block device",
        _with(_dev("sda", tarfile.BLKTYPE)),
        "member sda: device files are not allowed",
    ),
    ("fifo", _with(special("pipe", tarfile.FIFOTYPE)), "member pipe: fifos are not allowed"),
    (
        "directory",
        _with(special("dir", tarfile.DIRTYPE)),
        "member dir: directory entries are not allowed",
    ),
    (
        "symlink then write through it",
        craft_tar_zst(
            [
                manifest_entry(make_manifest({"d/x": b"x"})),
                special("d", tarfile.SYMTYPE, "/tmp"),
                reg("d/x", b"x"),
            ]
        ),
        "member d: symlinks are not allowed",
    ),
    (
        "GNU longname entry",
        craft_tar_zst(
            [manifest_entry(make_manifest({"x" * 120: b"x"})), reg("x" * 120, b"x")],
            fmt=tarfile.GNU_FORMAT,
        ),
        "unsupported tar entry type b'L'",
    ),
    (
        "pax header with a GNU sparse record",
        _sparse_pax(),
        "tar: pax record 'GNU.sparse.size' at offset",
    ),
]


def _assert_nothing_left(dest: Path) -> None:
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([dest.name, "bundle.tar.zst"])


@pytest.mark.parametrize(("name", "bundle", "needle"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_tars_are_refused(tmp_path: Path, name: str, bundle: bytes, needle: str) -> None:
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(bundle)
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(VerificationError) as exc:
        extract_bundle(src, dest, DEFAULT_LIMITS)
    assert needle in str(exc.value), name
    _assert_nothing_left(dest)


LIMIT_CASES: list[tuple[str, bytes, Limits, str]] = [
    (
        "oversized member",
        _with(contents={"a.txt": b"hello", "big.bin": b"x" * 100}),
        Limits(max_member_bytes=10),
        "member big.bin: size 100 exceeds max_member_bytes 10",
    ),
    (
        "oversized extra member (header checked before reading)",
        _with(reg("huge.bin", b"y" * 100)),
        Limits(max_member_bytes=10),
        "member huge.bin: size 100 exceeds max_member_bytes 10",
    ),
    (
        "total size",
        _with(contents={"a": b"x" * 8, "b": b"x" * 8}),
        Limits(max_member_bytes=10, max_total_bytes=10),
        "total size 16 exceeds max_total_bytes 10",
    ),
    (
        "too many members",
        _with(contents={"a": b"", "b": b"", "c": b""}),
        Limits(max_members=2),
        "3 members exceed max_members 2",
    ),
    (
        "manifest too large",
        _with(),
        Limits(max_manifest_bytes=16),
        "exceeds max_manifest_bytes 16",
    ),
]


@pytest.mark.parametrize(
    ("name", "bundle", "limits", "needle"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES]
)
def test_limits_refuse_and_leave_nothing(
    tmp_path: Path, name: str, bundle: bytes, limits: Limits, needle: str
) -> None:
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(bundle)
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(VerificationError) as exc:
        extract_bundle(src, dest, limits)
    assert needle in str(exc.value), name
    _assert_nothing_left(dest)


def test_failure_after_writing_files_removes_them(tmp_path: Path) -> None:
    # a.txt is extracted fine, then b.txt's digest fails: nothing may remain.
    m = make_manifest({"a.txt": b"hello", "b.txt": b"world"})
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(craft_tar_zst([manifest_entry(m), reg("a.txt", b"hello"), reg("b.txt", b"WORLD")]))
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(VerificationError, match=r"member b\.txt: sha256 mismatch"):
        extract_bundle(src, dest, DEFAULT_LIMITS)
    _assert_nothing_left(dest)


def test_golden_extracts(tmp_path: Path, golden_path: Path) -> None:
    dest = tmp_path / "restore"  # does not exist yet
    expected = hashlib.sha256(golden_path.read_bytes()).hexdigest()
    result = extract_bundle(golden_path, dest, DEFAULT_LIMITS, expected_sha256=expected)
    assert result.manifest == golden.manifest()
    assert set(result.files) == set(golden.MEMBERS)
    for path, (_, data) in golden.MEMBERS.items():
        assert result.files[path] == dest / path
        assert result.files[path].read_bytes() == data
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_expected_sha256_mismatch_is_refused(tmp_path: Path, golden_path: Path) -> None:
    dest = tmp_path / "restore"
    dest.mkdir()
    with pytest.raises(VerificationError, match="does not match expected"):
        extract_bundle(golden_path, dest, DEFAULT_LIMITS, expected_sha256="0" * 64)
    assert list(dest.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["restore"]


@pytest.mark.parametrize("kind", ["non-empty dir", "file", "symlink"])
def test_destination_must_be_absent_or_empty(tmp_path: Path, golden_path: Path, kind: str) -> None:
    dest = tmp_path / "restore"
    if kind == "non-empty dir":
        dest.mkdir()
        (dest / "keep").write_text("mine")
    elif kind == "file":
        dest.write_text("mine")
    else:
        os.symlink(tmp_path, dest)
    with pytest.raises(FileExistsError):
        extract_bundle(golden_path, dest, DEFAULT_LIMITS)
    if kind == "non-empty dir":
        assert (dest / "keep").read_text() == "mine"


def test_one_pass_restore_publishes_nothing_when_the_digest_fails_at_the_end(
    tmp_path: Path, golden_path: Path, trusted: TrustedKeys
) -> None:
    """Every member extracts and matches the manifest, but the file is not the attested one.

    The bundle's digest is known only at its last byte, after every member
    was written to the staging directory: none of it may become visible.
    """
    original = golden_path.read_bytes()
    # The same content recompressed at another level: other bytes, same tar.
    other = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(
        zstandard.ZstdDecompressor().decompressobj().decompress(original)
    )
    assert other != original
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(other)
    dest = tmp_path / "restore"
    with pytest.raises(VerificationError, match="does not match attestation subject"):
        with staged_extraction(dest) as staging:
            verify_bundle(src, sign_for(original), trusted, DEFAULT_LIMITS, sink=staging.sink)
            staging.publish(golden.manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.zst"]
    # Signed for what it is, the same file restores.
    with staged_extraction(dest) as staging:
        v = verify_bundle(src, sign_for(other), trusted, DEFAULT_LIMITS, sink=staging.sink)
        staging.publish(v.manifest)
    for path, (_, data) in golden.MEMBERS.items():
        assert (dest / path).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.zst", "restore"]


def test_a_large_member_is_written_on_another_thread_byte_for_byte(tmp_path: Path, trusted: TrustedKeys) -> None:
    """A member over the threshold goes through BackgroundWriter; the file must still be exact."""
    data = os.urandom(1 << 20) * 5 + b"tail"  # > BACKGROUND_HASH_BYTES, not a multiple of a chunk
    assert len(data) >= BACKGROUND_HASH_BYTES
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(build_bundle_bytes(tmp_path, {"models/m.bin": data, "c.yaml": b"k: v\n"}))
    dest = tmp_path / "restore"
    result = extract_bundle(src, dest, DEFAULT_LIMITS, expected_sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    assert result.files["models/m.bin"].read_bytes() == data
    assert (dest / "c.yaml").read_bytes() == b"k: v\n"


def test_a_write_error_on_the_writer_thread_is_raised(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # writes fail with EBADF
    try:
        writer = BackgroundWriter(fd)
        writer.write(b"x" * 10)
        with pytest.raises(OSError):
            writer.finish()
    finally:
        os.close(fd)


class _ReadOnly:
    """A stream with ``read`` and no ``readinto``: chunks come as the stream's own bytes."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


@pytest.mark.parametrize("source", ["file", "read-only stream"])
def test_chunks_in_reused_buffers_are_hashed_and_written_exactly(
    tmp_path: Path, trusted: TrustedKeys, source: str
) -> None:
    """The compressed stream and large members pass through ChunkRing buffers, each reused
    every QUEUE_DEPTH + 2 chunks while hash and writer threads still read earlier ones; one
    overwritten too early would show as a wrong digest or a wrong file."""
    data = os.urandom(11 << 20) + b"tail"  # incompressible: ~11 compressed chunks as well
    bundle = build_bundle_bytes(tmp_path, {"models/m.bin": data, "c.yaml": b"k: v\n"})
    src = tmp_path / "bundle.tar.zst"
    src.write_bytes(bundle)
    dest = tmp_path / "restore"
    with staged_extraction(dest) as staging, src.open("rb") as f:
        stream = f if source == "file" else _ReadOnly(bundle)
        v = verify_bundle(stream, sign_for(bundle), trusted, DEFAULT_LIMITS, sink=staging.sink)  # type: ignore[arg-type]
        staging.publish(v.manifest)
    assert v.sha256 == hashlib.sha256(bundle).hexdigest()
    assert (dest / "models" / "m.bin").read_bytes() == data
    assert (dest / "c.yaml").read_bytes() == b"k: v\n"


def test_a_chunk_ring_hands_out_its_buffers_in_turn() -> None:
    ring = ChunkRing(16)
    first = [ring.next() for _ in range(QUEUE_DEPTH + 2)]
    assert len({id(v.obj) for v in first}) == QUEUE_DEPTH + 2  # distinct buffers
    assert all(len(v) == 16 for v in first)
    assert ring.next().obj is first[0].obj  # then the oldest again


def test_write_all_writes_everything_in_bounded_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short writes are resumed, and no write hands the kernel more than WRITE_BYTES (1 MiB
    writes cost ~9x the system time on the VMs measured: the page cache's 1 MiB folios)."""
    sizes: list[int] = []
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        sizes.append(len(data))
        return real_write(fd, data[: max(1, len(data) - 1000)])  # always a little short

    monkeypatch.setattr(os, "write", short_write)
    data = os.urandom(3 * WRITE_BYTES + 123)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        write_all(fd, memoryview(data))
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert max(sizes) == WRITE_BYTES
    assert len(sizes) > 4  # the short writes were resumed
