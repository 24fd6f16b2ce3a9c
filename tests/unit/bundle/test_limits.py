"""worker.bundle.limits and the package boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.bundle import DEFAULT_LIMITS, BundleLimits
from worker.config import Limits


def test_defaults() -> None:
    assert BundleLimits(
        max_member_bytes=8 * 1024**3,
        max_total_bytes=64 * 1024**3,
        max_members=100_000,
        max_manifest_bytes=16 * 1024**2,
        max_envelope_bytes=1024**2,
    ) == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_tar_bytes > DEFAULT_LIMITS.max_total_bytes
    assert DEFAULT_LIMITS.max_bundle_bytes > DEFAULT_LIMITS.max_tar_bytes


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_rejects_non_positive_ints(value: object) -> None:
    with pytest.raises(ValueError, match="max_members must be a positive int"):
        BundleLimits(max_members=value)  # type: ignore[arg-type]


def test_from_config_uses_operator_limits() -> None:
    limits = BundleLimits.from_config(
        Limits(member_max_bytes=10, bundle_max_bytes=20, bundle_max_members=3)
    )
    assert (limits.max_member_bytes, limits.max_total_bytes, limits.max_members) == (10, 20, 3)


def test_bundle_package_imports_no_transport() -> None:
    # Verification code never imports Kafka, lakeFS or storage clients: callers move the bytes.
    code = (
        "import sys, worker.bundle, worker.keys;"
        "bad = {'aiokafka', 'faust', 'lakefs_sdk', 'aioboto3', 'botocore', 'aiohttp'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
