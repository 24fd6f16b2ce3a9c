"""worker.bundle.verify: every step fails closed, with a message naming the problem."""

from __future__ import annotations

import base64
import io
import json
import tarfile
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
    manifest_entry,
    raw_envelope,
    reg,
    sign_for,
    special,
    zstd_compress,
)
from worker.bundle import verify_bundle
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import Limits

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
    v = verify_bundle(golden_path, golden_envelope, trusted)
    assert v.manifest.lakefs_commit == COMMIT
    # a seekable stream works too, and is left open
    with golden_path.open("rb") as f:
        assert verify_bundle(f, golden_envelope, trusted).sha256 == v.sha256
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
        verify_bundle(io.BytesIO(bundle), envelope, trusted)
    assert needle in str(exc.value), name


def test_expected_commit_is_enforced(
    golden_path: Path, golden_envelope: bytes, trusted: TrustedKeys
) -> None:
    with pytest.raises(VerificationError, match=f"is for commit {COMMIT}, expected"):
        verify_bundle(golden_path, golden_envelope, trusted, expected_commit=OTHER_COMMIT)


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


def test_non_seekable_stream_is_refused(golden_envelope: bytes, trusted: TrustedKeys) -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    with pytest.raises(ValueError, match="seekable"):
        verify_bundle(Pipe(), golden_envelope, trusted)  # type: ignore[arg-type]


def test_bundle_built_by_writer_verifies(tmp_path: Path, trusted: TrustedKeys) -> None:
    bundle = build_bundle_bytes(tmp_path, {"a/b.txt": b"hello", "c.bin": bytes(10_000)})
    v = verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted)
    assert [m.path for m in v.manifest.members] == ["a/b.txt", "c.bin"]
