"""What the bundle benchmarks share: the input, the timing, the table and the results file.

The input is the issue's reference workload: one model file (default 1 GiB)
that compresses as model weights do (16-bit values whose high byte carries
the little entropy of a narrow exponent range, so zstd saves ~10-15 %), 1,000
STAC item JSON files and 20 YAML configs. Every figure is a ratio against the
raw tool run in the same script on the same files (raw tool's time / ours,
1.0 = parity): the machine is shared and noisy, so seconds alone mean little.
"""

from __future__ import annotations

import compileall
import functools
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

COMMIT = "b" * 64
REPO, BRANCH = "bench-repo", "main"


def _exponent_table() -> bytes:
    """Byte map that keeps sign and low bits random and narrows the exponent, as trained weights have it."""
    table = bytearray(256)
    weights = [13] * 16 + [12] * 8 + [11] * 4 + [10] * 2 + [9, 14]
    for b in range(256):
        table[b] = (b & 0x83) | (weights[(b >> 2) & 0x1F] << 2)
    return bytes(table)


_TABLE = _exponent_table()


def model_like(size: int) -> bytes:
    """``size`` bytes of fp16-weight-like data (one call's worth; callers loop)."""
    raw = bytearray(os.urandom(size))
    raw[1::2] = bytes(raw[1::2]).translate(_TABLE)
    return bytes(raw)


def make_inputs(root: Path, model_mib: int, stac_items: int = 1000, configs: int = 20) -> dict[str, Path]:
    """Write the workload under ``root``; member path -> file."""
    files: dict[str, Path] = {}
    model = root / "models" / "model.safetensors"
    model.parent.mkdir(parents=True, exist_ok=True)
    with model.open("wb") as f:
        left = model_mib << 20
        while left:
            n = min(left, 8 << 20)
            f.write(model_like(n))
            left -= n
    files["lakefs/models/model.safetensors"] = model
    for i in range(stac_items):
        p = root / "stac" / f"item-{i:05d}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        item = {
            "type": "Feature", "stac_version": "1.0.0", "id": f"item-{i:05d}",
            "bbox": [-100.0 + i * 1e-3, 37.0, -99.0 + i * 1e-3, 38.0],
            "properties": {"datetime": f"2026-01-{1 + i % 28:02d}T00:00:00Z", "platform": "sentinel-2a",
                           "eo:cloud_cover": (i * 37) % 100, "proj:epsg": 32614},
            "assets": {b: {"href": f"s3://kfm/raw/{i:05d}/{b}.tif", "type": "image/tiff"} for b in
                       ("B02", "B03", "B04", "B08", "SCL")},
            "links": [{"rel": "collection", "href": "../collection.json"}],
        }
        p.write_text(json.dumps(item, indent=2))
        files[f"lakefs/stac/item-{i:05d}.json"] = p
    for i in range(configs):
        p = root / "configs" / f"c{i:02d}.yaml"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"key_{k}: value-{i}-{k}\n" for k in range(60)))
        files[f"lakefs/configs/c{i:02d}.yaml"] = p
    return files


def file_sha256(p: Path) -> str:
    with p.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest_for(files: dict[str, Path]) -> Any:
    from worker.bundle.manifest import BundleManifest, BundleMember

    def kind(name: str) -> str:
        return "model" if "/models/" in name else "stac" if "/stac/" in name else "config"

    members = [BundleMember(path=n, size=p.stat().st_size, sha256=file_sha256(p), kind=kind(n))  # type: ignore[arg-type]
               for n, p in sorted(files.items())]
    return BundleManifest.build(lakefs_repo=REPO, lakefs_branch=BRANCH, lakefs_commit=COMMIT,
                                commit_created_at=datetime(2026, 1, 1, tzinfo=UTC), members=members)


def write_signed_bundle(files: dict[str, Path], out_dir: Path, level: int = 10) -> tuple[Path, Path, Path]:
    """Bundle, envelope and public key as `kfm verify` finds them: <commit>.tar.zst beside <commit>.intoto.json."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from worker.bundle.attest import build_statement, sign_statement
    from worker.bundle.tarzst import write_bundle

    manifest = manifest_for(files)
    bundle = out_dir / f"{COMMIT}.tar.zst"
    with bundle.open("wb") as f:
        digest = write_bundle(f, manifest, files, mtime=manifest.commit_mtime, zstd_level=level)
    key = Ed25519PrivateKey.generate()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    stmt = build_statement(bundle_sha256=digest.sha256, lakefs_repo=REPO, lakefs_branch=BRANCH, lakefs_commit=COMMIT,
                           builder_id="https://kfm.local/bench", invocation_id="00000000-0000-4000-8000-000000000000",
                           started_on=when, finished_on=when)
    envelope = out_dir / f"{COMMIT}.intoto.json"
    envelope.write_bytes(sign_statement(stmt, key))
    pub = out_dir / "bench.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return bundle, envelope, pub


@functools.cache
def _compile_checkout() -> None:
    for package in ("worker", "hooks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def kfm(*args: str) -> list[str]:
    """The installed `kfm` console script of this venv (a whole process, start-up included).

    The first call compiles the checkout's bytecode (``__pycache__``, git-ignored), as
    installing the wheel does: with PYTHONDONTWRITEBYTECODE=1 (set here, and in the
    image, which compiles at install), an editable checkout would otherwise compile
    ~30 modules from source in every run, start-up that no installed kfm pays (`kfm
    verify --offline` of the golden bundle, medians of 15 alternating: 0.32 -> 0.27 s,
    CPU 0.32 -> 0.27 s). Python still checks each file's time and size, so an edited
    module is recompiled, never run stale.
    """
    _compile_checkout()
    return [str(Path(sys.executable).with_name("kfm")), *args]


def run(cmd: Sequence[str] | str, **kw: Any) -> None:
    """Run a command (a string goes through bash, for pipelines); fail loudly."""
    shell = isinstance(cmd, str)
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd] if shell else list(cmd),  # noqa: S603
                       capture_output=True, text=True, env={**os.environ, "KFM_LOG_LEVEL": "WARNING"}, **kw)
    if r.returncode:
        raise SystemExit(f"{cmd if shell else shlex.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")


def time_cmd(cmd: Sequence[str] | str) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys, all threads and children) of one command."""
    before = os.times()
    t0 = time.perf_counter()
    run(cmd)
    wall = time.perf_counter() - t0
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def compare(ours: Sequence[str] | str, raw: str, repeat: int,
            before: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run ours and the raw tool alternately ``repeat`` times (so both see the same noise); medians.

    ``before`` runs untimed ahead of every run (e.g. to remove a restore's output).
    """
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
    for _ in range(repeat):
        for name, cmd in (("ours", ours), ("raw", raw)):
            if before is not None:
                before()
            runs[name].append(time_cmd(cmd))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    return {"ours_s": med["ours"][0], "raw_s": med["raw"][0], "ours_cpu_s": med["ours"][1], "raw_cpu_s": med["raw"][1],
            "ours_runs": [round(w, 3) for w, _ in runs["ours"]], "raw_runs": [round(w, 3) for w, _ in runs["raw"]]}


@dataclass
class Table:
    """Rows of (path, ours, raw tool, ratio), printed and saved together."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, path: str, raw_tool: str, m: dict[str, Any], **extra: Any) -> None:
        """One row from :func:`compare`'s medians: ratio = raw tool's time / ours (1.0 = parity)."""
        self.rows.append({"path": path, "raw_tool": raw_tool, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                 for k, v in m.items()},
                          "ratio": round(m["raw_s"] / m["ours_s"], 3),
                          "cpu_ratio": round(m["raw_cpu_s"] / m["ours_cpu_s"], 3) if m.get("ours_cpu_s") else None,
                          **extra})

    def show(self) -> None:
        print(f"\n{self.title}")
        print(f"| {'path':<34} | {'ours':>8} | {'raw tool, same run':<44} | {'raw':>8} | ratio | cpu ratio |")
        print(f"|{'-' * 36}|{'-' * 10}|{'-' * 46}|{'-' * 10}|-------|-----------|")
        for r in self.rows:
            cpu = f"{r['cpu_ratio']:9.2f}" if r.get("cpu_ratio") else f"{'-':>9}"
            print(f"| {r['path']:<34} | {r['ours_s']:>7.2f}s | {r['raw_tool']:<44} | {r['raw_s']:>7.2f}s |"
                  f" {r['ratio']:5.2f} | {cpu} |")
        for k, v in self.notes.items():
            print(f"  {k}: {v}")

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{self.name}.json"
        doc = {"name": self.name, "title": self.title, "when": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": machine(), "rows": self.rows, "notes": self.notes}
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"  -> {out.relative_to(ROOT)}")
        return out


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError:
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, Any]:
    """CPU, cores, load and the versions of everything measured, for the results file."""
    import ssl

    import zstandard

    cpu = "?"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "sha_extensions": "sha_ni" in flags,
        "load_avg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
        "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
        "python_zstandard": f"{zstandard.__version__} ({zstandard.backend}, libzstd {zstandard.ZSTD_VERSION})",
        "zstd_cli": _tool_version(["zstd", "--version"]), "tar": _tool_version(["tar", "--version"]),
        "openssl_cli": _tool_version(["openssl", "version"]),
    }


def drop_tree(path: Path) -> None:
    """Remove a restore's output between runs (not timed)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
