"""The wheel is a complete installation: built from the sources alone, installed into a fresh
virtual environment outside the checkout, ``kfm`` runs and verifies the golden bundle.

Why a real build and install rather than checking pyproject.toml: what a wheel lacks (a data
file read at run time, a package left out of ``packages.find``, a dependency only the
development environment happens to have) shows only when the installed copy runs without the
checkout on its path. Dependencies come from PyPI at the versions in constraints.txt, the ones
the tests run against; pip's cache makes a repeat run take well under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "bundle"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

pytestmark = pytest.mark.timeout(600)  # a cold pip cache downloads pyarrow and the rest once


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _clean_env(venv: Path) -> dict[str, str]:
    """The installed ``kfm`` alone: no PYTHONPATH into the checkout, no KFM_* setting of this shell."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("KFM_", "PYTHON", "VIRTUAL_ENV", "AWS_"))}
    return {**keep, "PATH": f"{venv / 'bin'}{os.pathsep}{keep.get('PATH', '')}"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment outside the checkout with the wheel (built from a copy of the sources) in it."""
    work = tmp_path_factory.mktemp("wheel")
    # A copy, so setuptools' build/ directory never lands in (or is reused from) the checkout.
    src = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("worker", "hooks"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = work / "dist"
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src, cwd=work)
    assert built.returncode == 0, built.stderr
    wheels = list(dist.glob("*.whl"))
    assert [w.name for w in wheels] == [f"kfm_rollback_registry-{VERSION}-py3-none-any.whl"]

    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    pip = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt",
               wheels[0], cwd=work, env=_clean_env(venv), timeout=540)
    assert pip.returncode == 0, pip.stderr
    return venv


def test_wheel_holds_the_packages_and_their_data_and_nothing_else(installed: Path) -> None:
    wheel = next((installed.parent / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"worker", "hooks", f"kfm_rollback_registry-{VERSION}.dist-info"}
    for data in ("hooks/lakefs_action.yaml", "hooks/py.typed", "worker/py.typed"):
        assert data in names, f"{data} is read at run time or by type checkers, but is not in the wheel"
    sources = {p.relative_to(ROOT).as_posix() for d in ("worker", "hooks") for p in (ROOT / d).rglob("*.py")}
    assert sources <= set(names), f"modules left out of the wheel: {sorted(sources - set(names))}"


def test_version(installed: Path, tmp_path: Path) -> None:
    out = _run(installed / "bin" / "kfm", "--version", cwd=tmp_path, env=_clean_env(installed))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"kfm {VERSION}\n"


def test_verify_the_golden_bundle_offline(installed: Path, tmp_path: Path) -> None:
    for name in ("golden.tar.zst", "golden.dsse.json", "golden.pub"):
        shutil.copy2(GOLDEN / name, tmp_path / name)
    kfm = installed / "bin" / "kfm"
    args = ["verify", "--offline", "--attestation", "golden.dsse.json", "--key", "golden.pub"]

    good = _run(kfm, *args, "golden.tar.zst", cwd=tmp_path, env=_clean_env(installed))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("OK: bundle golden.tar.zst sha256 ")
    assert "ledger not checked (--offline)" in good.stdout

    forged = bytearray((tmp_path / "golden.tar.zst").read_bytes())
    forged[len(forged) // 2] ^= 0x01
    (tmp_path / "forged.tar.zst").write_bytes(forged)
    bad = _run(kfm, *args, "forged.tar.zst", cwd=tmp_path, env=_clean_env(installed))
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "Traceback" not in bad.stderr


def test_the_action_template_is_read_from_the_installed_package(installed: Path, tmp_path: Path) -> None:
    code = ("import hooks.install as i, sys; "
            "sys.stdout.write(i.__file__ + '\\n' + i.render_action('https://kfm.example/hooks', ['main']).decode())")
    out = _run(installed / "bin" / "python", "-c", code, cwd=tmp_path, env=_clean_env(installed))
    assert out.returncode == 0, out.stderr
    where, _, action = out.stdout.partition("\n")
    assert Path(where).is_relative_to(installed), f"imported from {where}, not from the installed wheel"
    assert 'url: "https://kfm.example/hooks"' in action
    assert 'branches: ["main"]' in action
