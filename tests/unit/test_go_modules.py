"""The Go checked in under deploy/local/ and tests/interop/ is held to Go's own tools.

Every module there is gofmt-clean and passes ``go vet``; a wrapper module's
stand-ins for lakeFS's nested modules (``local/...``, wired in by ``replace``
lines) are vetted through the wrapper, which is the only place they build.
``go`` runs in the build scripts' environment and with their flags (by sourcing
``deploy/local/gobuild.sh``), so it uses the same module cache under ``.cache/``
and reuses what the builds compiled. The cache key of ``go_build`` is tested on
a throwaway module: unchanged sources reuse the binary, any edit rebuilds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOBUILD = ROOT / "deploy" / "local" / "gobuild.sh"
SEARCHED = (ROOT / "deploy" / "local", ROOT / "tests" / "interop")

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None, reason="the Go toolchain (go) is not installed; it builds the local stack"
)


def _modules() -> list[Path]:
    """Directories of the Go modules under SEARCHED that are not nested in another one."""
    found = sorted(p.parent for root in SEARCHED for p in root.rglob("go.mod"))
    return [d for d in found if not any(o != d and o in d.parents for o in found)]


MODULES = _modules()
IDS = [str(m.relative_to(ROOT)) for m in MODULES]


def _go(cwd: Path, *args: str, build_flags: bool = False, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``go ARGS`` with the build scripts' environment; ``build_flags`` adds their GO_FLAGS
    after the subcommand (-mod=readonly: a check never edits a checked-in go.mod or go.sum)."""
    flags = '"${GO_FLAGS[@]}" ' if build_flags else ""
    script = f'. "$0" && cmd=$1 && shift && go "$cmd" {flags}"$@"'
    return subprocess.run(["bash", "-c", script, str(GOBUILD), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _vet_targets(module: Path) -> list[str]:
    """The module's own packages plus every module it replaces with a directory inside it."""
    own = _go(module, "list", "./...", build_flags=True)
    assert own.returncode == 0, own.stderr
    edit = _go(module, "mod", "edit", "-json")
    assert edit.returncode == 0, edit.stderr
    local = [r for r in json.loads(edit.stdout).get("Replace") or [] if r["New"]["Path"].startswith(".")]
    nested = {p.parent for p in module.rglob("go.mod")} - {module}
    assert {(module / r["New"]["Path"]).resolve() for r in local} == nested, (
        "every nested module must be wired in by a local replace line, or it is never built or vetted")
    return own.stdout.split() + [r["Old"]["Path"] for r in local]


def test_modules_found() -> None:
    assert {"deploy/local/lakefs-wrapper", "deploy/local/seaweedfs-wrapper", "tests/interop/tlogcheck"} <= set(IDS)


@pytest.mark.parametrize("module", MODULES, ids=IDS)
def test_gofmt_clean(module: Path) -> None:
    gofmt = shutil.which("gofmt") or str(Path(_go(ROOT, "env", "GOROOT").stdout.strip()) / "bin" / "gofmt")
    out = subprocess.run([gofmt, "-l", "."], cwd=module, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "", f"not gofmt-formatted (run gofmt -w):\n{out.stdout}"


VETTED = [m for m in MODULES if m.name != "seaweedfs-wrapper"]  # that one holds no Go of ours but tools.go


@pytest.mark.timeout(900)  # a cold run analyses every dependency of lakeFS; a warm one takes seconds
@pytest.mark.parametrize("module", VETTED, ids=[str(m.relative_to(ROOT)) for m in VETTED])
def test_go_vet(module: Path) -> None:
    targets = _vet_targets(module)
    assert targets, f"{module}: no packages to vet"
    out = _go(module, "vet", *targets, build_flags=True, timeout=900)
    assert out.returncode == 0, f"go vet {' '.join(targets)}:\n{out.stderr}"


def test_seaweedfs_wrapper_has_nothing_to_vet() -> None:
    """The one module left out of test_go_vet has no package of its own and replaces nothing locally."""
    assert _vet_targets(ROOT / "deploy" / "local" / "seaweedfs-wrapper") == []


def _go_build(module: Path, cache: Path, *flags: str) -> Path:
    script = '. "$0" && go_build hello "$@"'
    env = {**os.environ, "KFM_CACHE_DIR": str(cache)}
    out = subprocess.run(["bash", "-c", script, str(GOBUILD), str(module), ".", *flags], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1, f"stdout must hold only the binary's path: {out.stdout!r}"
    return Path(lines[0])


def test_go_build_reuses_binary_until_module_changes(tmp_path: Path) -> None:
    mod, cache = tmp_path / "hello", tmp_path / "cache"
    mod.mkdir()
    (mod / "go.mod").write_text("module kfm.local/hello\n\ngo 1.26\n")
    main = mod / "main.go"
    main.write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("one") }\n')

    first = _go_build(mod, cache)
    assert first.parent == cache / "bin" and first.name.startswith("hello-")
    assert subprocess.run([first], capture_output=True, text=True, check=True).stdout == "one\n"
    built_at = first.stat().st_mtime_ns

    (mod / "README.md").write_text("not Go: does not change the key\n")
    assert _go_build(mod, cache) == first
    assert first.stat().st_mtime_ns == built_at, "an unchanged module was rebuilt"

    main.write_text(main.read_text() + "\n// A comment is an edit too.\n")
    second = _go_build(mod, cache)
    assert second != first

    (mod / "extra.go").write_text("package main\n")
    third = _go_build(mod, cache)
    assert third not in (first, second)

    assert _go_build(mod, cache, "-ldflags", "-s -w") not in (first, second, third), "flags are part of the key"
    assert sorted(p.name for p in (cache / "bin").iterdir()) == sorted(
        {first.name, second.name, third.name, _go_build(mod, cache, "-ldflags", "-s -w").name}
    ), "no temporary file is left behind"


def test_build_script_refuses_a_version_it_does_not_pin() -> None:
    env = {**os.environ, "LAKEFS_VERSION": "v0.0.1"}
    out = subprocess.run([str(ROOT / "deploy" / "local" / "build-lakefs.sh")], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "LAKEFS_VERSION=v0.0.1: deploy/local/lakefs-wrapper/go.mod pins v1.80.0; "
        "change the version there (see its README.md)"
    ]
