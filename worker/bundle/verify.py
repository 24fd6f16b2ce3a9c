"""Verify a bundle against its signed attestation, streaming, failing closed.

Numbered steps (referred to in comments here and in :mod:`._reader`):

1. The DSSE envelope is signed by a trusted key.
2. The bundle's SHA-256 equals the attestation's subject digest, and the
   subject name is ``<manifest commit>.tar.zst`` (checked with step 6, once
   the manifest is known).
3. The zstd stream decodes.
4. The tar is well formed: first member ``manifest.json``; every member a
   regular file with a safe path; no duplicates; sizes within limits.
5. Every member's size and SHA-256 match the manifest; none missing or extra.
6. The attestation's lakeFS repo, branch and commit equal the manifest's;
   if the caller knows which commit the bundle is for, both name it.

Every size is bounded by the caller's :class:`~worker.limits.Limits` (the
configured ``KFM_LIMIT_*``; there is no default, so no caller can fall back
to other numbers), and once the manifest is read, the decompressed stream by
what the manifest declares.

Why one pass: the bundle is read once, and its SHA-256 (2), the zstd
decoding (3) and the member digests (4-5) are all computed on the same bytes
as they stream past (hashes on other threads, see :mod:`._hashing`), so
verification costs about what ``zstd -dc | sha256`` costs and a file that
changes under us cannot pass one check with one content and another check
with another. The parsers do see the bytes before (2) has vouched for them;
they are bounded by the limits, hold nothing back, and nothing they produce
is returned or published unless (2) matches in the end. When parsing fails,
the rest of the file is hashed all the same, so a file nobody signed is
reported as that (2), not as the parse error its tampering caused.
Every path that does not return a :class:`VerifiedBundle` raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from worker.bundle._reader import DiscardSink, MemberSink, read_bundle
from worker.bundle.attest import VerifiedStatement, bundle_name, verify_envelope
from worker.bundle.manifest import MANIFEST_NAME, BundleManifest
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import Limits

__all__ = ["VerifiedBundle", "verify_bundle"]


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every step.

    Attributes:
        manifest: the bundle's manifest.
        sha256: hex SHA-256 of the compressed bundle (= the attested subject).
        size: size of the compressed bundle in bytes.
        key_id: the trusted key that signed the attestation.
        statement: the verified attestation, with its exact signed bytes.
    """

    manifest: BundleManifest
    sha256: str
    size: int
    key_id: str
    statement: VerifiedStatement


@contextlib.contextmanager
def _open(bundle: Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(bundle, Path):
        with bundle.open("rb") as f:
            yield f
        return
    yield bundle


def verify_bundle(
    bundle: Path | BinaryIO,
    envelope_bytes: bytes,
    trusted_keys: TrustedKeys,
    limits: Limits,
    *,
    expected_commit: str | None = None,
    sink: MemberSink | None = None,
) -> VerifiedBundle:
    """Run steps 1-6 on ``bundle``; return what was verified.

    Args:
        bundle: path, or a binary stream positioned at the bundle's first
            byte, read once to its end (it is left open; a pipe will do).
        envelope_bytes: the DSSE envelope holding the attestation.
        trusted_keys: keys whose signatures are accepted.
        limits: bounds on everything read (``Settings.limits``).
        expected_commit: if given, the commit the bundle is used for; the
            attestation and the manifest must both name it, so a valid
            bundle of another commit stored under this one's name is refused.
        sink: receives every member's content as it is verified (an
            extraction); a member reaches ``sink.end`` only once its own
            size and digest matched, but the bundle as a whole is verified
            only when this returns, so the caller must not publish what the
            sink wrote before then.

    Raises:
        VerificationError: naming the step and what failed.
        OSError: ``bundle`` cannot be read.
    """
    # (1) DSSE signature by a trusted key.
    statement = verify_envelope(envelope_bytes, trusted_keys, max_bytes=limits.max_envelope_bytes)
    if expected_commit is not None and statement.lakefs_commit != expected_commit:
        raise VerificationError(
            f"attestation: is for commit {statement.lakefs_commit}, not {expected_commit}"
        )

    def check_subject(sha256: str) -> None:
        # (2) bundle SHA-256 equals the attestation subject digest.
        if sha256 != statement.subject_sha256:
            raise VerificationError(
                f"bundle: sha256 {sha256} does not match attestation subject"
                f" {statement.subject_sha256}"
            )

    with _open(bundle) as f:
        # (2)-(5) in one pass: decode, check the tar and every member against
        # the manifest, and the whole file's digest against the attestation.
        result = read_bundle(f, limits, sink or DiscardSink(), check_digest=check_subject)
    sha256, size = result.sha256, result.size

    # (6) the attestation is about this manifest's commit (and so, via the
    # subject name, step 2's name check).
    manifest = result.manifest
    if expected_commit is not None and manifest.lakefs_commit != expected_commit:
        raise VerificationError(
            f"{MANIFEST_NAME}: is for commit {manifest.lakefs_commit}, not {expected_commit}"
        )
    if statement.lakefs_commit != manifest.lakefs_commit:
        raise VerificationError(
            f"attestation: lakefs_commit {statement.lakefs_commit} != manifest"
            f" lakefs_commit {manifest.lakefs_commit}"
        )
    if statement.subject_name != bundle_name(manifest.lakefs_commit):
        raise VerificationError(
            f"attestation: subject name {statement.subject_name} does not match the manifest commit"
        )
    if statement.lakefs_repo != manifest.lakefs_repo:
        raise VerificationError(
            f"attestation: lakefs_repo {statement.lakefs_repo} != manifest {manifest.lakefs_repo}"
        )
    if statement.lakefs_branch != manifest.lakefs_branch:
        raise VerificationError(
            f"attestation: lakefs_branch {statement.lakefs_branch} != manifest"
            f" {manifest.lakefs_branch}"
        )
    return VerifiedBundle(
        manifest=manifest,
        sha256=sha256,
        size=size,
        key_id=statement.key_id,
        statement=statement,
    )
