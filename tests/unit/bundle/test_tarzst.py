"""worker.bundle.tarzst: deterministic, checked, streaming writer."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.unit.bundle.helpers import (
    COMMIT,
    CREATED,
    build_bundle_bytes,
    golden_key,
    make_manifest,
    sign_for,
    stage,
)
from worker.bundle import BundleDigest, BundleManifest, BundleMember, verify_bundle, write_bundle
from worker.bundle.tarzst import CHUNK_SIZE
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import DEFAULT_LIMITS

CONTENTS = {
    "configs/b.yaml": b"b: 2\n",
    "configs/a.yaml": b"a: 1\n",
    "models/m/1/model.bin": os.urandom(300_000),
    "stac/" + "deep/" * 30 + "item.json": b"{}",  # > 100 bytes: pax path record
}


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    # Separate staging directories: file names and inodes must not matter.
    assert build_bundle_bytes(tmp_path / "1", CONTENTS) == build_bundle_bytes(
        tmp_path / "2", CONTENTS
    )


def test_other_mtime_or_level_gives_other_bytes(tmp_path: Path) -> None:
    base = build_bundle_bytes(tmp_path, CONTENTS)
    assert build_bundle_bytes(tmp_path, CONTENTS, mtime=1) != base
    assert build_bundle_bytes(tmp_path, CONTENTS, level=3) != base


def test_layout_is_fixed(tmp_path: Path) -> None:
    data = build_bundle_bytes(tmp_path, CONTENTS)
    # one zstd frame, with a checksum and no content size
    params = zstandard.get_frame_parameters(data)
    assert params.has_checksum
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert len(raw) % tarfile.RECORDSIZE == 0
    m = make_manifest(CONTENTS)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        assert [x.name for x in members] == ["manifest.json", *sorted(CONTENTS)]
        for x in members:
            assert x.isreg()
            assert (x.mtime, x.mode, x.uid, x.gid, x.uname, x.gname) == (
                m.commit_mtime, 0o644, 0, 0, "", ""
            )
            assert set(x.pax_headers) <= {"path"}
            f = tf.extractfile(x)
            assert f is not None
            body = f.read()
            assert body == (m.to_bytes() if x.name == "manifest.json" else CONTENTS[x.name])


def test_digest_is_of_bytes_written(tmp_path: Path) -> None:
    m = make_manifest(CONTENTS)
    out = io.BytesIO()
    d = write_bundle(out, m, stage(tmp_path, CONTENTS), mtime=m.commit_mtime)
    assert d == BundleDigest(hashlib.sha256(out.getvalue()).hexdigest(), len(out.getvalue()))


def _replace_with_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _replace_with_fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)  # opening it must not block the writer


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda p: p.write_bytes(b"a: 1\n\n"), "staged file size 6 != manifest size 5"),
        (lambda p: p.write_bytes(b"a: 9\n"), "sha256 mismatch"),
        (_replace_with_dir, "not a regular file"),
        (_replace_with_fifo, "not a regular file"),
    ],
)
def test_staged_file_changed_under_us(
    tmp_path: Path, mutate: Callable[[Path], object], needle: str
) -> None:
    m = make_manifest(CONTENTS)
    files = stage(tmp_path, CONTENTS)
    mutate(files["configs/a.yaml"])
    with pytest.raises(VerificationError, match=needle) as exc:
        write_bundle(io.BytesIO(), m, files, mtime=0)
    assert "member configs/a.yaml" in str(exc.value)


def test_files_must_match_manifest(tmp_path: Path) -> None:
    m = make_manifest(CONTENTS)
    files = stage(tmp_path, CONTENTS)
    partial = {k: v for k, v in files.items() if k != "configs/a.yaml"}
    with pytest.raises(ValueError, match=r"no staged file for member configs/a\.yaml"):
        write_bundle(io.BytesIO(), m, partial, mtime=0)
    with pytest.raises(ValueError, match="not in the manifest"):
        write_bundle(io.BytesIO(), m, {**files, "x": files["configs/a.yaml"]}, mtime=0)


@pytest.mark.parametrize(
    "kwargs", [{"mtime": -1}, {"mtime": 8**11}, {"mtime": 1.5}, {"mtime": 0, "zstd_level": 0}]
)
def test_rejects_bad_parameters(tmp_path: Path, kwargs: dict[str, object]) -> None:
    m = make_manifest(CONTENTS)
    with pytest.raises(ValueError, match="must be an int"):
        write_bundle(io.BytesIO(), m, stage(tmp_path, CONTENTS), **kwargs)  # type: ignore[arg-type]


def _v2(level: int) -> BundleManifest:
    return BundleManifest.build(lakefs_repo="kfm-main", lakefs_branch="prod", lakefs_commit=COMMIT,
                                commit_created_at=CREATED, members=make_manifest(CONTENTS).members,
                                zstd_level=level)


def _frame_level_bytes(tmp_path: Path, m: BundleManifest, level: int | None) -> bytes:
    out = io.BytesIO()
    write_bundle(out, m, stage(tmp_path, CONTENTS), mtime=m.commit_mtime, zstd_level=level)
    return out.getvalue()


def test_level_defaults_to_the_manifests_record(tmp_path: Path) -> None:
    """A v2 manifest's level is the one written; a v1 manifest means 10, as every v1 bundle was made."""
    for level in (1, 3, 10):
        assert _frame_level_bytes(tmp_path, _v2(level), None) == _frame_level_bytes(tmp_path, _v2(level), level)
    assert _frame_level_bytes(tmp_path, _v2(1), None) != _frame_level_bytes(tmp_path, _v2(10), None)
    v1 = make_manifest(CONTENTS)
    assert _frame_level_bytes(tmp_path, v1, None) == build_bundle_bytes(tmp_path, CONTENTS, level=10)


def test_level_contradicting_the_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^zstd_level 10 is not the manifest's \(3\)$"):
        _frame_level_bytes(tmp_path, _v2(3), 10)


def test_v2_bundle_verifies_like_v1(tmp_path: Path) -> None:
    data = _frame_level_bytes(tmp_path, _v2(3), None)
    v = verify_bundle(io.BytesIO(data), sign_for(data), TrustedKeys([golden_key().public_key()]), DEFAULT_LIMITS)
    assert v.manifest.zstd_level == 3
    assert v.manifest.compression_level == 3


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def _sparse_file(path: Path, size: int) -> str:
    """A mostly-sparse file with some data every 16 MiB; returns its SHA-256."""
    with path.open("wb") as f:
        f.truncate(size)
        for off in range(0, size - 4096, 16 * 1024 * 1024):
            f.seek(off)
            f.write(hashlib.sha256(str(off).encode()).digest() * 128)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def test_memory_does_not_grow_with_file_size(tmp_path: Path, trusted: TrustedKeys) -> None:
    size = 200 * 1024 * 1024
    staged = tmp_path / "big.bin"
    sha = _sparse_file(staged, size)
    m = BundleManifest.build(
        lakefs_repo="kfm-main",
        lakefs_branch="prod",
        lakefs_commit=COMMIT,
        commit_created_at=CREATED,
        members=[BundleMember(path="models/big.bin", size=size, sha256=sha, kind="model")],
    )
    bundle = tmp_path / "big.tar.zst"

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with bundle.open("wb") as out:
            write_bundle(out, m, {"models/big.bin": staged}, mtime=m.commit_mtime)
        _, write_peak = tracemalloc.get_traced_memory()

        envelope = sign_for(bundle.read_bytes())
        tracemalloc.reset_peak()
        verified = verify_bundle(bundle, envelope, trusted, DEFAULT_LIMITS)
        _, verify_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verified.manifest == m
    assert write_peak < 4 * 1024 * 1024, write_peak
    assert verify_peak < 6 * 1024 * 1024, verify_peak
