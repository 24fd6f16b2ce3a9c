"""Benchmark: bundle packaging and verification against a plain tar+zstd baseline.

Prints figures as ratios against a baseline run in the same process on the same
files (the machine is shared and noisy, so absolute seconds mean little):

- baseline: ``tarfile`` streaming the files into a ``zstandard`` stream writer
  at the same level, no hashing, no manifest;
- ours: ``write_bundle`` (manifest, per-member SHA-256 re-check, whole-bundle
  hash, deterministic headers) and ``verify_bundle`` (signature, one pass).

Usage: python bench/bench_bundle.py [--mib 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tarfile
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker.bundle.attest import build_statement, sign_statement
from worker.bundle.manifest import BundleManifest, BundleMember
from worker.bundle.tarzst import write_bundle
from worker.bundle.verify import verify_bundle
from worker.keys import TrustedKeys
from worker.limits import DEFAULT_LIMITS


def make_files(root: Path, total_mib: int) -> dict[str, Path]:
    """A model-like mix: one large binary, some medium files, many small configs."""
    files: dict[str, Path] = {}
    rnd = os.urandom
    sizes = [("lakefs/models/big.bin", total_mib * 3 // 4 << 20)]
    sizes += [(f"lakefs/data/part-{i}.bin", (total_mib // 4 << 20) // 8) for i in range(8)]
    sizes += [(f"lakefs/configs/c{i}.yaml", 2048) for i in range(200)]
    for name, size in sizes:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as f:
            left = size
            while left:
                n = min(left, 4 << 20)
                # Half random, half repetitive: models and rasters compress somewhat.
                f.write(rnd(n // 2) + bytes(n - n // 2))
                left -= n
        files[name] = p
    return files


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def baseline(files: dict[str, Path], out: Path) -> None:
    with out.open("wb") as f, zstandard.ZstdCompressor(level=10).stream_writer(f) as z:
        with tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, p in sorted(files.items()):
                tar.add(p, arcname=name)


def timed(fn, repeat: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    runs, peak = [], 0
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(runs), peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="total payload size in MiB (default 256)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kfm-bench-") as tmp:
        root = Path(tmp)
        files = make_files(root / "in", args.mib)
        members = [BundleMember(path=n, size=p.stat().st_size, sha256=sha256(p), kind="model") for n, p in files.items()]
        manifest = BundleManifest.build(lakefs_repo="bench-repo", lakefs_branch="main", lakefs_commit="a" * 64,
                                        commit_created_at=datetime(2026, 1, 1, tzinfo=UTC), members=members)
        base_out, ours_out = root / "base.tar.zst", root / "ours.tar.zst"
        t_base, m_base = timed(lambda: baseline(files, base_out), args.repeat)

        def ours() -> None:
            with ours_out.open("wb") as f:
                write_bundle(f, manifest, files, mtime=manifest.commit_mtime)

        t_ours, m_ours = timed(ours, args.repeat)
        key = Ed25519PrivateKey.generate()
        stmt = build_statement(bundle_sha256=sha256(ours_out), lakefs_repo="bench-repo", lakefs_branch="main",
                               lakefs_commit="a" * 64, builder_id="https://kfm.local/bench",
                               invocation_id="00000000-0000-4000-8000-000000000000",
                               started_on=datetime(2026, 1, 1, tzinfo=UTC), finished_on=datetime(2026, 1, 1, tzinfo=UTC))
        env = sign_statement(stmt, key)
        trusted = TrustedKeys([key.public_key()])
        t_ver, m_ver = timed(lambda: verify_bundle(ours_out, env, trusted, DEFAULT_LIMITS), args.repeat)

        def base_read() -> None:
            with base_out.open("rb") as f:
                r = zstandard.ZstdDecompressor().stream_reader(f)
                with tarfile.open(fileobj=r, mode="r|") as tar:  # type: ignore[call-overload]
                    for m in tar:
                        fo = tar.extractfile(m)
                        while fo is not None and fo.read(1 << 20):
                            pass

        t_bread, _ = timed(base_read, args.repeat)
        mib = sum(p.stat().st_size for p in files.values()) / 2**20
        print(f"payload {mib:.0f} MiB in {len(files)} files; median of {args.repeat} runs; python {sys.version.split()[0]}")
        print(f"baseline tar|zstd write : {t_base:6.2f} s  ({mib / t_base:6.1f} MiB/s)  peak py alloc {m_base / 2**20:5.1f} MiB")
        print(f"write_bundle            : {t_ours:6.2f} s  ({mib / t_ours:6.1f} MiB/s)  peak py alloc {m_ours / 2**20:5.1f} MiB"
              f"  ratio {t_ours / t_base:4.2f}x baseline")
        print(f"baseline untar|unzstd   : {t_bread:6.2f} s")
        print(f"verify_bundle           : {t_ver:6.2f} s  ({mib / t_ver:6.1f} MiB/s)  peak py alloc {m_ver / 2**20:5.1f} MiB"
              f"  ratio {t_ver / t_bread:4.2f}x baseline read")
        print(f"bundle {ours_out.stat().st_size / 2**20:.1f} MiB vs baseline {base_out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
