"""pyproject.toml states what the code works with; constraints.txt what the tests ran against.

Why both: exact pins in the package's metadata would make it uninstallable next to anything that
needs another patch release, while a range alone makes `make` install whatever is newest that day.
The constraints file must stay the exact closure of the project's dependencies, so a dependency
added to pyproject.toml without `make constraints` fails here rather than going untested.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def test_runtime_dependencies_are_ranges_with_both_bounds() -> None:
    for raw in PROJECT["dependencies"]:
        ops = {s.operator for s in Requirement(raw).specifier}
        assert ops == {">=", "<"}, f"{raw}: a runtime dependency is a range >=tested,<next-breaking"


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins()
    for raw in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no pin in constraints.txt: run `make constraints`"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} vs {raw}"


def test_constraints_are_the_installed_closure() -> None:
    """The environment the tests run in is the one constraints.txt describes, no more and no less."""
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "local" / "constraints.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "constraints.txt").read_text(encoding="utf-8"), (
        "constraints.txt differs from the installed dependency closure: `make venv` installs from it; "
        "after changing a dependency, `make constraints` regenerates it")
