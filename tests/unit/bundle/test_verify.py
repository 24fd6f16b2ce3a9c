"""worker.bundle.verify: every step fails closed, with a message naming the problem."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.unit.bundle.helpers import (
    COMMIT,
    OTHER_COMMIT,
    Entry,
    build_bundle_bytes,
    craft_tar_zst,
    golden,
    make_manifest,
    manifest_entry,
    raw_envelope,
    raw_tar,
    reg,
    sign_for,
    special,
    zstd_compress,
    zstd_frame_with_zero_tail,
)
from worker.bundle import verify_bundle
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import DEFAULT_LIMITS, Limits

GOLDEN_MEMBERS = {p: d for p, (_, d) in golden.MEMBERS.items()}
FIRST = sorted(GOLDEN_MEMBERS)[0]  # configs/pipeline.yaml


def _golden_entries(
    skip: str | None = None, replace: dict[str, bytes] | None = None
) -> list[Entry]:
    entries = [manifest_entry(golden.manifest())]
    for path in sorted(GOLDEN_MEMBERS):
        if path != skip:
            entries.append(reg(path, (replace or {}).get(path, GOLDEN_MEMBERS[path])))
    return entries


def test_golden_passes(golden_path: Path, golden_envelope: bytes, trusted: TrustedKeys) -> None:
    v = verify_bundle(golden_path, golden_envelope, trusted, DEFAULT_LIMITS)
    assert v.manifest.lakefs_commit == COMMIT
    # a seekable stream works too, and is left open
    with golden_path.open("rb") as f:
        assert verify_bundle(f, golden_envelope, trusted, DEFAULT_LIMITS).sha256 == v.sha256
        assert not f.closed


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _resigned(bundle: bytes) -> tuple[bytes, bytes]:
    """Tampered bundle plus a *valid* signature for it: exercises steps 3-6."""
    return bundle, sign_for(bundle)


# Each case: (bundle, envelope) from (golden bundle, golden envelope) -> message.
Case = Callable[[bytes, bytes], tuple[bytes, bytes]]
CASES: list[tuple[str, Case, str]] = [
    (
        "flipped byte",
        lambda b, e: (_flip(b, len(b) // 2), e),
        "bundle: sha256",
    ),
    (
        "truncated",
        lambda b, e: (b[:-10], e),
        "does not match attestation subject",
    ),
    (
        "swapped attestation (signed for another bundle)",
        lambda b, e: (b, sign_for(b + b"x")),
        "does not match attestation subject",
    ),
    (
        "unknown key",
        lambda b, e: (b, sign_for(b, key=golden.Ed25519PrivateKey.from_private_bytes(bytes(32)))),
        "no signature by a trusted key",
    ),
    (
        "wrong payloadType",
        lambda b, e: (b, raw_envelope(_payload(e), payload_type="application/json")),
        "envelope: payloadType 'application/json'",
    ),
    (
        "no signatures",
        lambda b, e: (b, raw_envelope(_payload(e), signatures=[])),
        "envelope: no signatures",
    ),
    (
        "removed member (re-signed)",
        lambda b, e: _resigned(craft_tar_zst(_golden_entries(skip=FIRST))),
        f"member {FIRST}: missing from the bundle",
    ),
    (
        "extra member (re-signed)",
        lambda b, e: _resigned(craft_tar_zst([*_golden_entries(), reg("zzz/extra.txt", b"x")])),
        "member zzz/extra.txt: not in the manifest (extra member)",
    ),
    (
        "changed member content (re-signed)",
        lambda b, e: _resigned(
            craft_tar_zst(_golden_entries(replace={FIRST: _flip(GOLDEN_MEMBERS[FIRST], 0)}))
        ),
        f"member {FIRST}: sha256 mismatch",
    ),
    (
        "changed member size (re-signed)",
        lambda b, e: _resigned(craft_tar_zst(_golden_entries(replace={FIRST: b"short"}))),
        f"member {FIRST}: size 5 != manifest size",
    ),
    (
        "duplicate member (re-signed)",
        lambda b, e: _resigned(craft_tar_zst([*_golden_entries(), reg(FIRST, b"x")])),
        f"member {FIRST}: duplicate",
    ),
    (
        "manifest not first (re-signed)",
        lambda b, e: _resigned(craft_tar_zst(_golden_entries()[1:] + _golden_entries()[:1])),
        f"tar: first member is {FIRST}, expected manifest.json",
    ),
    (
        "symlink member (re-signed)",
        lambda b, e: _resigned(
            craft_tar_zst([*_golden_entries(), special("x", tarfile.SYMTYPE, "/etc/passwd")])
        ),
        "member x: symlinks are not allowed",
    ),
    (
        "not zstd (re-signed)",
        lambda b, e: _resigned(b"not a zstd frame at all"),
        "bundle: zstd stream does not decode",
    ),
    (
        "trailing garbage after frame (re-signed)",
        lambda b, e: _resigned(b + b"garbage"),
        "bundle: zstd stream does not decode",
    ),
    (
        "zstd frame without checksum (re-signed)",
        lambda b, e: _resigned(zstandard.ZstdCompressor().compress(b"x")),
        "bundle: zstd stream does not decode: frame has no content checksum",
    ),
    (
        "second zstd frame (re-signed)",
        lambda b, e: _resigned(b + zstd_compress(bytes(512))),
        "bundle: zstd stream does not decode: data after the zstd frame",
    ),
    (
        "zstd frame cut inside the checksum (re-signed)",
        lambda b, e: _resigned(b[:-2]),
        "bundle: zstd stream does not decode: zstd frame is truncated",
    ),
    (
        "truncated zstd (re-signed)",
        lambda b, e: _resigned(b[: len(b) // 2]),
        "bundle: zstd stream does not decode: zstd frame is truncated",
    ),
    (
        "data after end of archive (re-signed)",
        lambda b, e: _resigned(
            zstd_compress(
                zstandard.ZstdDecompressor().stream_reader(io.BytesIO(b)).read() + b"x" * 512
            )
        ),
        "tar: data after the end-of-archive marker",
    ),
    (
        "attestation for another commit with this digest",
        lambda b, e: (b, sign_for(b, commit=OTHER_COMMIT)),
        f"attestation: lakefs_commit {OTHER_COMMIT} != manifest lakefs_commit {COMMIT}",
    ),
    (
        "attestation for another repo",
        lambda b, e: (b, sign_for(b, repo="kfm-other")),
        "attestation: lakefs_repo kfm-other != manifest kfm-main",
    ),
    (
        "attestation for another branch",
        lambda b, e: (b, sign_for(b, branch="dev")),
        "attestation: lakefs_branch dev != manifest prod",
    ),
]


def _payload(envelope: bytes) -> bytes:
    return base64.b64decode(json.loads(envelope)["payload"])


@pytest.mark.parametrize(("name", "tamper", "needle"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_refused(
    name: str,
    tamper: Case,
    needle: str,
    golden_bundle: bytes,
    golden_envelope: bytes,
    trusted: TrustedKeys,
) -> None:
    bundle, envelope = tamper(golden_bundle, golden_envelope)
    with pytest.raises(VerificationError) as exc:
        verify_bundle(io.BytesIO(bundle), envelope, trusted, DEFAULT_LIMITS)
    assert needle in str(exc.value), name


def test_expected_commit_is_enforced(
    golden_path: Path, golden_envelope: bytes, trusted: TrustedKeys
) -> None:
    with pytest.raises(VerificationError) as exc:
        verify_bundle(golden_path, golden_envelope, trusted, DEFAULT_LIMITS, expected_commit=OTHER_COMMIT)
    assert str(exc.value) == f"attestation: is for commit {COMMIT}, not {OTHER_COMMIT}"


def test_expected_commit_must_be_the_manifests_too(tmp_path: Path, trusted: TrustedKeys) -> None:
    """An attestation naming the expected commit does not make another commit's manifest acceptable."""
    bundle = build_bundle_bytes(tmp_path, {"a.txt": b"a"}, commit=OTHER_COMMIT)
    envelope = sign_for(bundle, commit=COMMIT)
    with pytest.raises(VerificationError) as exc:
        verify_bundle(io.BytesIO(bundle), envelope, trusted, DEFAULT_LIMITS, expected_commit=COMMIT)
    assert str(exc.value) == f"manifest.json: is for commit {OTHER_COMMIT}, not {COMMIT}"


def test_a_huge_zero_tail_is_refused_at_the_end_of_the_record(tmp_path: Path, trusted: TrustedKeys) -> None:
    """2 MiB of bundle that decompresses to 64 GiB of zeros after the end-of-archive marker.

    Signed, so it reaches the parser. Reading the zeros to the end took
    about 0.7 s per GiB; the reader stops where the record's padding ends.
    """
    tar = raw_tar(build_bundle_bytes(tmp_path, {"a.txt": b"a"}))
    bundle = zstd_frame_with_zero_tail(tar, 64 * 1024**3)
    assert len(bundle) < 3 * 1024**2
    started = time.monotonic()
    with pytest.raises(VerificationError) as exc:
        verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted, DEFAULT_LIMITS)
    assert str(exc.value) == (
        "tar: zero padding after the end-of-archive marker runs past its 10240-byte record"
    )
    assert time.monotonic() - started < 15


def test_zero_padding_beyond_the_record_is_refused(tmp_path: Path, trusted: TrustedKeys) -> None:
    """A well-formed frame (checksum and all) with one record of zeros too many."""
    tar = raw_tar(build_bundle_bytes(tmp_path, {"a.txt": b"a"}))
    assert len(tar) % tarfile.RECORDSIZE == 0
    bundle = zstd_compress(tar + bytes(tarfile.RECORDSIZE))
    with pytest.raises(VerificationError, match="runs past its 10240-byte record"):
        verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted, DEFAULT_LIMITS)
    # Padding that ends within the record, or no padding at all, is fine.
    content = len(tar.rstrip(b"\0"))
    end_marker = content + -content % 512 + 1024
    for cut in (end_marker, end_marker + 512):
        short = zstd_compress(tar[:cut])
        assert verify_bundle(io.BytesIO(short), sign_for(short), trusted, DEFAULT_LIMITS).size == len(short)


def test_decompression_is_bounded_by_what_the_manifest_declares(trusted: TrustedKeys) -> None:
    """A pax header within the per-header limit, but far larger than any member could need."""
    data = b"x"
    m = make_manifest({"a.txt": data})
    info = tarfile.TarInfo("a.txt")
    info.size = len(data)
    info.pax_headers = {"uname": "u" * 60_000}
    bundle = craft_tar_zst([manifest_entry(m), (info, data)])
    with pytest.raises(VerificationError) as exc:
        verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted, DEFAULT_LIMITS)
    assert "bytes its manifest declares" in str(exc.value)
    assert str(exc.value).startswith("tar: decompressed stream larger than the ")


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        (Limits(max_member_bytes=100), "exceeds max_member_bytes 100"),
        (Limits(max_total_bytes=1000), "exceeds max_total_bytes 1000"),
        (Limits(max_members=3), "exceed max_members 3"),
        (Limits(max_manifest_bytes=100), "exceeds max_manifest_bytes 100"),
        (Limits(max_envelope_bytes=100), "envelope: larger than 100 bytes"),
    ],
)
def test_limits_are_enforced(
    limits: Limits,
    needle: str,
    golden_path: Path,
    golden_envelope: bytes,
    trusted: TrustedKeys,
) -> None:
    with pytest.raises(VerificationError) as exc:
        verify_bundle(golden_path, golden_envelope, trusted, limits)
    assert needle in str(exc.value)


def test_a_stream_that_cannot_seek_is_verified_in_one_pass(
    golden_path: Path, golden_envelope: bytes, trusted: TrustedKeys
) -> None:
    """One pass: a pipe (a download as it arrives) verifies like the file, read once to its end."""
    data = golden_path.read_bytes()
    reads: list[int] = []

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._f = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            n = self._f.readinto(b)
            reads.append(n)
            return n

    v = verify_bundle(io.BufferedReader(Pipe()), golden_envelope, trusted, DEFAULT_LIMITS)
    assert v.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(reads) == len(data)  # every byte read exactly once


def test_bundle_built_by_writer_verifies(tmp_path: Path, trusted: TrustedKeys) -> None:
    bundle = build_bundle_bytes(tmp_path, {"a/b.txt": b"hello", "c.bin": bytes(10_000)})
    v = verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted, DEFAULT_LIMITS)
    assert [m.path for m in v.manifest.members] == ["a/b.txt", "c.bin"]
