"""The committed golden bundle: rebuilds byte-identically and verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.bundle.helpers import GOLDEN_DIR, golden
from worker.bundle import verify_bundle
from worker.keys import TrustedKeys, key_id
from worker.limits import DEFAULT_LIMITS


@pytest.mark.parametrize("name", [golden.BUNDLE_FILE, golden.ENVELOPE_FILE, golden.PUBLIC_KEY_FILE])
def test_rebuild_is_byte_identical(tmp_path: Path, name: str) -> None:
    golden.build(tmp_path)
    assert (tmp_path / name).read_bytes() == (GOLDEN_DIR / name).read_bytes(), (
        f"{name} changed: if intended, run tests/data/bundle/make_golden.py and review the diff"
    )


def test_golden_files_are_tiny() -> None:
    for name in (golden.BUNDLE_FILE, golden.ENVELOPE_FILE, golden.PUBLIC_KEY_FILE):
        assert (GOLDEN_DIR / name).stat().st_size < 20 * 1024


def test_golden_verifies_with_committed_public_key(golden_path: Path) -> None:
    trusted = TrustedKeys.from_paths([GOLDEN_DIR / golden.PUBLIC_KEY_FILE])
    envelope = (GOLDEN_DIR / golden.ENVELOPE_FILE).read_bytes()
    v = verify_bundle(golden_path, envelope, trusted, DEFAULT_LIMITS, expected_commit=golden.COMMIT)
    assert v.manifest == golden.manifest()
    assert v.key_id == key_id(golden.private_key_for_tests().public_key())
    assert v.statement.subject_sha256 == v.sha256
    assert v.size == golden_path.stat().st_size
    byproducts = v.statement.statement["predicate"]["runDetails"]["byproducts"]
    assert [b["name"] for b in byproducts] == [
        "energy/energy.json",
        "lineage/openlineage.json",
        "trace/otel.json",
    ]
