"""The optional native ledger scan (``kfm_scan``, built from ``native/kfm_scan``), if usable.

Why optional: it is an accelerator, not a definition. The pure Python scan
(:func:`worker.ledger.scan.scan_line` without it) stays the reference, and
the registry, its wheel and its tests work without Rust; with the module
installed, verification spends its time hashing instead of matching a
pattern (docs/ledger.md, "The native accelerator"). ``KFM_PURE_PYTHON=1``
turns it off, to compare or to bisect.
"""

from __future__ import annotations

import importlib
import os
from typing import Final, Protocol, cast

__all__ = ["NATIVE", "SCAN_VERSION", "NativeScan", "load"]

SCAN_VERSION: Final = 2
"""What the Rust side must report: a build from other sources is not used."""


class NativeScan(Protocol):
    """The functions ``kfm_scan`` exports (native/kfm_scan/src/lib.rs)."""

    SCAN_VERSION: int
    FAST_MAX_LINE_BYTES: int

    def scan_line(self, line: bytes, /) -> tuple[int, str, str, str] | None: ...

    def check_lines(
        self, data: bytes, start: int, seq: int, prev: str | None, /
    ) -> tuple[int, int, str | None, str | None, bytes, bytes]: ...

    def match_run(
        self, values: list[bytes], stored: list[bytes], seq: int, prev: str | None, /
    ) -> list[tuple[str, bytes, str]]: ...


def load() -> NativeScan | None:
    """The module, unless disabled, missing, or built from other sources."""
    if os.environ.get("KFM_PURE_PYTHON") == "1":
        return None
    try:
        module = cast(NativeScan, importlib.import_module("kfm_scan"))
    except ImportError:
        return None
    if getattr(module, "SCAN_VERSION", None) != SCAN_VERSION:
        return None
    return module


NATIVE: NativeScan | None = load()
"""Read at each call (not imported by name), so tests can switch paths."""
