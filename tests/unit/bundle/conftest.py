"""Fixtures for the bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.bundle.helpers import GOLDEN_DIR, golden, golden_key
from worker.keys import TrustedKeys

BUNDLE_FILE: str = golden.BUNDLE_FILE
ENVELOPE_FILE: str = golden.ENVELOPE_FILE


@pytest.fixture
def trusted() -> TrustedKeys:
    return TrustedKeys([golden_key().public_key()])


@pytest.fixture
def golden_bundle() -> bytes:
    return (GOLDEN_DIR / BUNDLE_FILE).read_bytes()


@pytest.fixture
def golden_envelope() -> bytes:
    return (GOLDEN_DIR / ENVELOPE_FILE).read_bytes()


@pytest.fixture
def golden_path() -> Path:
    return GOLDEN_DIR / BUNDLE_FILE
