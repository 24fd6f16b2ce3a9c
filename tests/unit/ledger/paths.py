"""Run a ledger-scan test on the pure Python path and on the native one (``kfm_scan``).

The native leg is skipped only when the module is not built; ``KFM_REQUIRE_NATIVE=1``
(CI sets it) makes a missing module a failure instead, so CI never skips it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from worker.ledger import _native

_BUILT = _native.load() if os.environ.get("KFM_PURE_PYTHON") != "1" else None
_REQUIRED = os.environ.get("KFM_REQUIRE_NATIVE") == "1"

PATHS = [
    pytest.param("python", id="python"),
    pytest.param(
        "native",
        id="native",
        marks=pytest.mark.skipif(
            _BUILT is None and not _REQUIRED,
            reason="the native scan is not built (deploy/local/build-native.sh)",
        ),
    ),
]


@contextmanager
def using(path: str) -> Iterator[None]:
    """Within: every scan and bundle check takes ``path``."""
    if path == "native":
        module = _native.load()
        if module is None:
            pytest.fail("KFM_REQUIRE_NATIVE=1 but kfm_scan is not importable (deploy/local/build-native.sh)")
    else:
        module = None
    saved = _native.NATIVE
    _native.NATIVE = module
    try:
        yield
    finally:
        _native.NATIVE = saved
