"""The native ledger scan is optional: without Rust `make` still works, and it can be turned off.

deploy/local/build-native.sh must not fail a developer's `make` for want of a
toolchain (one line says the pure Python path is used), must fail CI's, which
sets KFM_REQUIRE_NATIVE=1, and KFM_PURE_PYTHON=1 must take every check off it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.ledger import _native

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "build-native.sh"


def _without_cargo(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"  # only what the script needs besides cargo
    bin_dir.mkdir()
    for tool in ("bash", "find", "sort", "xargs", "sha256sum", "cut", "cat", "dirname", "mktemp"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            (bin_dir / tool).symlink_to(found.stdout.strip())
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "KFM_CACHE_DIR": str(tmp_path / "cache"), **extra}
    return subprocess.run(
        ["bash", str(SCRIPT), sys.executable], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_without_cargo_make_goes_on_with_one_line(tmp_path: Path) -> None:
    done = _without_cargo(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "native ledger scan not built (no cargo: install Rust with rustup): ledger checks use the pure Python path"
    ]


def test_ci_requires_it(tmp_path: Path) -> None:
    done = _without_cargo(tmp_path, KFM_REQUIRE_NATIVE="1")
    assert done.returncode == 1
    assert "KFM_REQUIRE_NATIVE=1" in done.stderr


def test_kfm_pure_python_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFM_PURE_PYTHON", "1")
    assert _native.load() is None
    monkeypatch.delenv("KFM_PURE_PYTHON")
    if os.environ.get("KFM_REQUIRE_NATIVE") == "1":
        assert _native.load() is not None
