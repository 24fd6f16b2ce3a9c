"""worker.limits: one object for every size limit, set by the operator."""

from __future__ import annotations

from dataclasses import fields

import pytest

from worker.config import load_settings
from worker.limits import DEFAULT_LIMITS, Limits, limit_variable


def test_defaults() -> None:
    assert Limits(
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
        Limits(max_members=value)  # type: ignore[arg-type]


def test_operator_limits_bound_bundles() -> None:
    limits = load_settings({
        "KFM_LIMIT_MEMBER_MAX_BYTES": "10", "KFM_LIMIT_BUNDLE_MAX_BYTES": "20", "KFM_LIMIT_BUNDLE_MAX_MEMBERS": "3",
    }).limits
    assert (limits.max_member_bytes, limits.max_total_bytes, limits.max_members) == (10, 20, 3)


def test_every_limit_is_named_max_and_has_its_own_variable() -> None:
    names = [f.name for f in fields(Limits)]
    assert all(n.startswith("max_") for n in names), names
    variables = [limit_variable(f) for f in fields(Limits)]
    assert len(set(variables)) == len(variables)
    assert all(v.startswith("KFM_LIMIT_") for v in variables)
