"""Shared builders for the bundle tests: golden data, crafted tars, re-signing."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import tarfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker.bundle import (
    BundleManifest,
    BundleMember,
    MemberKind,
    build_statement,
    pae,
    sign_statement,
    write_bundle,
)
from worker.canonical import canonical_bytes
from worker.keys import key_id

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "bundle"


def load_golden_module() -> ModuleType:
    """tests/data/bundle/make_golden.py is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = load_golden_module()

COMMIT = golden.COMMIT
OTHER_COMMIT = "0" * 63 + "1"
CREATED = datetime(2025, 11, 30, 12, 0, 0, tzinfo=UTC)


def member(path: str, data: bytes, kind: MemberKind = "config") -> BundleMember:
    return BundleMember(
        path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), kind=kind
    )


def make_manifest(
    contents: Mapping[str, bytes], *, commit: str = COMMIT, repo: str = "kfm-main"
) -> BundleManifest:
    return BundleManifest.build(
        lakefs_repo=repo,
        lakefs_branch="prod",
        lakefs_commit=commit,
        commit_created_at=CREATED,
        members=[member(p, d) for p, d in contents.items()],
    )


def stage(tmp: Path, contents: Mapping[str, bytes]) -> dict[str, Path]:
    staged = tmp / "staged"
    staged.mkdir(exist_ok=True)
    files = {}
    for i, (path, data) in enumerate(sorted(contents.items())):
        f = staged / f"{i}.bin"
        f.write_bytes(data)
        files[path] = f
    return files


def build_bundle_bytes(
    tmp: Path,
    contents: Mapping[str, bytes],
    *,
    mtime: int | None = None,
    commit: str = COMMIT,
    level: int = 10,
) -> bytes:
    m = make_manifest(contents, commit=commit)
    out = io.BytesIO()
    write_bundle(
        out,
        m,
        stage(tmp, contents),
        mtime=m.commit_mtime if mtime is None else mtime,
        zstd_level=level,
    )
    return out.getvalue()


def golden_key() -> Ed25519PrivateKey:
    key: Ed25519PrivateKey = golden.private_key_for_tests()
    return key


def sign_for(
    bundle: bytes,
    *,
    commit: str = COMMIT,
    repo: str = "kfm-main",
    branch: str = "prod",
    key: Ed25519PrivateKey | None = None,
) -> bytes:
    """A valid envelope for ``bundle`` (so later verification steps get exercised)."""
    statement = build_statement(
        bundle_sha256=hashlib.sha256(bundle).hexdigest(),
        lakefs_repo=repo,
        lakefs_branch=branch,
        lakefs_commit=commit,
        builder_id="https://kfm.local/builders/test",
        invocation_id="inv-1",
        started_on=CREATED,
        finished_on=CREATED,
    )
    return sign_statement(statement, key or golden_key())


def raw_envelope(
    payload: bytes,
    *,
    payload_type: str = "application/vnd.in-toto+json",
    key: Ed25519PrivateKey | None = None,
    signatures: Sequence[dict[str, str]] | None = None,
) -> bytes:
    """An envelope signed over arbitrary payload bytes and type."""
    k = key or golden_key()
    if signatures is None:
        sig = k.sign(pae(payload_type, payload))
        signatures = [
            {"keyid": key_id(k.public_key()), "sig": base64.b64encode(sig).decode()}
        ]
    return canonical_bytes(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": list(signatures),
        }
    )


Entry = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes, *, size: int | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    return info, data


def special(name: str, type_: bytes, linkname: str = "") -> Entry:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info, None


def craft_tar_zst(entries: Sequence[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A .tar.zst written by tarfile itself, with whatever entries a test needs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstd_compress(raw.getvalue())


def zstd_compress(data: bytes) -> bytes:
    """One zstd frame with a content checksum, as the bundle writer makes."""
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def manifest_entry(m: BundleManifest) -> Entry:
    return reg("manifest.json", m.to_bytes())


def raw_tar(bundle: bytes) -> bytes:
    """The tar inside a bundle."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle)).read()


def zstd_frame_with_zero_tail(tar: bytes, zeros: int) -> bytes:
    """One zstd frame holding ``tar`` then ``zeros`` zero bytes, written by hand.

    RLE blocks (4 bytes for up to 128 KiB of zeros) make tens of GiB of
    decompressed zeros a few MiB of bundle. The content checksum is a
    placeholder: computing it would mean hashing every zero, and a verifier
    must refuse the bundle long before it reaches the checksum.
    """
    block = 128 * 1024
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0x04, 0x38])  # content checksum, no content size; window 128 KiB
    blocks: list[bytes] = []
    for i in range(0, len(tar), block):
        chunk = tar[i : i + block]
        blocks.append((len(chunk) << 3 | 0 << 1).to_bytes(3, "little") + chunk)  # raw block
    full, rest = divmod(zeros, block)
    rle = (block << 3 | 1 << 1).to_bytes(3, "little") + b"\x00"
    blocks.extend([rle] * full)
    if rest:
        blocks.append((rest << 3 | 1 << 1).to_bytes(3, "little") + b"\x00")
    last = bytearray(blocks[-1])
    last[0] |= 1  # Last_Block
    blocks[-1] = bytes(last)
    for b in blocks:
        out += b
    out += b"\x00\x00\x00\x00"
    return bytes(out)
