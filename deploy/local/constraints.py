"""Print constraints.txt: the exact version of every distribution the project installs.

Why a closure and not ``pip freeze``: the virtual environment may hold other
things (a tool installed by hand, the project itself as an editable install);
the constraints file must hold exactly what ``pip install '.[dev]'`` pulls in,
so that ``make`` reproduces the versions the tests ran against and nothing else.
Run with the virtual environment's Python after changing a dependency in
pyproject.toml (``make constraints``).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("dev",)


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Canonical name -> installed version of every distribution ``roots`` need, transitively.

    Raises:
        SystemExit: naming a requirement that is not installed or whose installed version it excludes.
    """
    found: dict[str, str] = {}
    todo = [(r, frozenset(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is required but not installed: run `make venv` first")
        if not req.specifier.contains(dist.version, prereleases=True):
            sys.exit(f"{req.name} {dist.version} is installed but {req} is required: run `make venv` first")
        found[name] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in wanted):
                todo.append((sub, frozenset(sub.extras)))
    return found


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    raw = list(project["dependencies"])
    for extra in EXTRAS:
        raw += project["optional-dependencies"][extra]
    roots = [r for r in map(Requirement, raw) if r.marker is None or r.marker.evaluate()]
    pins = closure(roots)
    sys.stdout.write(
        "# The exact versions the test suite runs against: every distribution that\n"
        "# `pip install '.[dev]'` installs, and nothing else. `make venv` installs with\n"
        "# `-c constraints.txt`; regenerate with `make constraints` after changing a dependency.\n"
    )
    sys.stdout.writelines(f"{name}=={pins[name]}\n" for name in sorted(pins))


if __name__ == "__main__":
    main()
