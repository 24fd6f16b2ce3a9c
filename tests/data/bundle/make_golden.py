"""Build the golden bundle and its signed attestation (test data only).

Run from the repository root to regenerate after an intended format change:

    .venv/bin/python tests/data/bundle/make_golden.py

tests/unit/bundle/test_golden.py rebuilds into a temporary directory with
:func:`build` and asserts the result is byte-identical to the committed files,
so any change in the writer's output is a deliberate, reviewed event. The key
is hard-coded for reproducibility, as tuf does in
``tests/generated_data/generate_md.py``.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker.bundle import (
    BundleManifest,
    BundleMember,
    MemberKind,
    build_statement,
    byproducts_from_manifest,
    sign_statement,
    write_bundle,
)

__all__ = [
    "BUNDLE_FILE",
    "COMMIT",
    "ENVELOPE_FILE",
    "MEMBERS",
    "PUBLIC_KEY_FILE",
    "build",
    "private_key_for_tests",
]

# !!! TEST-ONLY KEY. Published in the repository; never trust it anywhere real. !!!
TEST_ONLY_ED25519_PRIVATE_KEY_HEX = (
    "811767bcc92684ed348ab3bdd022108e2b00287581a46e11d99c14d1bfd46987"
)

REPO = "kfm-main"
BRANCH = "prod"
COMMIT = "f7f327b26803a260194b5b786cd39e74e81352f81cd940e78812b5cadffe739f"
CREATED_AT = datetime(2025, 11, 30, 12, 0, 0, tzinfo=UTC)
STARTED_ON = datetime(2025, 11, 30, 12, 0, 5, tzinfo=UTC)
FINISHED_ON = datetime(2025, 11, 30, 12, 0, 9, 250000, tzinfo=UTC)
BUILDER_ID = "https://kfm.local/builders/bundler/test"
INVOCATION_ID = "3f0c5a52-7a55-4c1e-9d1b-5f6c0c2a9e10"

BUNDLE_FILE = "golden.tar.zst"
ENVELOPE_FILE = "golden.dsse.json"
PUBLIC_KEY_FILE = "golden.pub"

#: path -> (kind, content). Tiny on purpose; the files are committed.
MEMBERS: dict[str, tuple[MemberKind, bytes]] = {
    "stac/collections/landcover/collection.json": (
        "stac",
        b'{"id":"landcover","stac_version":"1.0.0","type":"Collection"}',
    ),
    "stac/collections/landcover/items/2025-11-30.json": (
        "stac",
        b'{"id":"2025-11-30","stac_version":"1.0.0","type":"Feature"}',
    ),
    "configs/pipeline.yaml": ("config", b"pipeline: kfm-promote\nschedule: '@daily'\n"),
    "models/focus-transformer/3.1.0/model.bin": ("model", bytes(range(256)) * 4),
    "lineage/openlineage.json": ("lineage", b'{"eventType":"COMPLETE","run":{"runId":"x"}}'),
    "trace/otel.json": ("trace", b'{"resourceSpans":[]}'),
    "energy/energy.json": ("energy", b'{"co2e_kg":0.81,"kwh":1.72}'),
    "meta/commit.json": ("meta", b'{"committer":"ci","message":"golden"}'),
    # Non-ASCII and > 100 bytes: exercises the PAX "path" record.
    "stac/collections/landcover/items/" + "très-long-" * 8 + ".json": ("stac", b"{}"),
}


def private_key_for_tests() -> Ed25519PrivateKey:
    """The hard-coded test key (TEST ONLY)."""
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(TEST_ONLY_ED25519_PRIVATE_KEY_HEX))


def manifest() -> BundleManifest:
    """The golden manifest."""
    return BundleManifest.build(
        lakefs_repo=REPO,
        lakefs_branch=BRANCH,
        lakefs_commit=COMMIT,
        commit_created_at=CREATED_AT,
        members=[
            BundleMember(
                path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), kind=kind
            )
            for path, (kind, data) in MEMBERS.items()
        ],
    )


def build(out_dir: Path) -> None:
    """Write the bundle, the DSSE envelope and the public key into ``out_dir``."""
    m = manifest()
    with tempfile.TemporaryDirectory() as staging:
        files: dict[str, Path] = {}
        for i, (path, (_, data)) in enumerate(sorted(MEMBERS.items())):
            staged = Path(staging) / f"{i}.bin"
            staged.write_bytes(data)
            files[path] = staged
        with (out_dir / BUNDLE_FILE).open("wb") as out:
            digest = write_bundle(out, m, files, mtime=m.commit_mtime)
    statement = build_statement(
        bundle_sha256=digest.sha256,
        lakefs_repo=REPO,
        lakefs_branch=BRANCH,
        lakefs_commit=COMMIT,
        builder_id=BUILDER_ID,
        invocation_id=INVOCATION_ID,
        started_on=STARTED_ON,
        finished_on=FINISHED_ON,
        byproducts=byproducts_from_manifest(m),
    )
    key = private_key_for_tests()
    (out_dir / ENVELOPE_FILE).write_bytes(sign_statement(statement, key))
    (out_dir / PUBLIC_KEY_FILE).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


if __name__ == "__main__":
    build(Path(__file__).resolve().parent)
