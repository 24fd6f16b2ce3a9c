"""Rollback bundles: build, sign, verify and extract (pure logic, no network).

Nothing here imports Kafka, lakeFS or S3 clients (keep
verification separate from transport); callers move the bytes.
"""

from worker.bundle.attest import (
    VerifiedStatement,
    build_statement,
    bundle_name,
    byproducts_from_manifest,
    pae,
    sign_statement,
    verify_envelope,
)
from worker.bundle.extract import ExtractedBundle, extract_bundle
from worker.bundle.manifest import (
    LEGACY_ZSTD_LEVEL,
    MANIFEST_FORMAT,
    MANIFEST_FORMAT_V1,
    MANIFEST_NAME,
    BundleManifest,
    BundleMember,
    MemberKind,
    check_member_path,
)
from worker.bundle.tarzst import BundleDigest, write_bundle
from worker.bundle.verify import VerifiedBundle, verify_bundle

__all__ = [
    "LEGACY_ZSTD_LEVEL",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMAT_V1",
    "MANIFEST_NAME",
    "BundleDigest",
    "BundleManifest",
    "BundleMember",
    "ExtractedBundle",
    "MemberKind",
    "VerifiedBundle",
    "VerifiedStatement",
    "build_statement",
    "bundle_name",
    "byproducts_from_manifest",
    "check_member_path",
    "extract_bundle",
    "pae",
    "sign_statement",
    "verify_bundle",
    "verify_envelope",
    "write_bundle",
]
