"""Benchmark: building a bundle against `tar -c | zstd -LEVEL | sha256`, at several zstd levels, same run.

Ours is a whole process (bench/_build_once.py: start-up, the deterministic
tar, each staged file re-hashed against the manifest, single-threaded zstd
with a checksum, the bundle's SHA-256). The raw tool: GNU tar of the same
files piped to the zstd CLI at the same level (-T1, with its checksum) and
OpenSSL's SHA-256 of the output. Both write their output to disk. Ratio =
raw tool's time / ours; sizes show what each level buys on model-like data.
Writes bench/results/build.json.

Usage: .venv/bin/python bench/bench_build.py [--mib 1024] [--repeat 3] [--levels 3 6 10]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


_COPY_STREAM = (
    "import sys, zstandard; zstandard.ZstdCompressor(level=int(sys.argv[1]), write_checksum=True)"
    ".copy_stream(sys.stdin.buffer, sys.stdout.buffer, read_size=1 << 20, write_size=1 << 20)"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="model file size in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--levels", type=int, nargs="+", default=[3, 6, 10])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kfm-bench-build-") as tmp:
        root = Path(tmp)
        staged = root / "staged"
        inputs = c.make_inputs(root / "in", args.mib)
        files = {}
        for name, p in inputs.items():  # lay the files out under their member paths, as staging does
            target = staged / name
            target.parent.mkdir(parents=True, exist_ok=True)
            p.rename(target)
            files[name] = target
        manifest = c.manifest_for(files)
        mpath = root / "manifest.json"
        mpath.write_bytes(manifest.to_bytes())
        payload = sum(m.size for m in manifest.members)
        t = c.Table("build", f"bundle build, {args.mib} MiB model + 1,000 STAC items + 20 configs"
                             f" ({payload / 2**20:.0f} MiB); medians of {args.repeat}")
        for level in args.levels:
            ours_out, raw_out = root / f"ours-{level}.tar.zst", root / f"raw-{level}.tar.zst"
            ours = [sys.executable, str(Path(__file__).with_name("_build_once.py")), str(mpath), str(staged),
                    str(level), str(ours_out)]
            # The same libzstd as ours (python-zstandard's), driven as thinly as it can be.
            same_lib = shlex.join([sys.executable, "-c", _COPY_STREAM, str(level)])
            tar = f"tar -c --format=pax -C {shlex.quote(str(staged))} lakefs"
            hashed = f" | tee {shlex.quote(str(raw_out))} | openssl dgst -sha256 >/dev/null"
            m = c.compare(ours, f"{tar} | {same_lib}{hashed}", args.repeat)
            size = ours_out.stat().st_size
            t.add(f"build, level {level}", f"tar | libzstd -{level} (same lib) | openssl", m,
                  level=level, bundle_mib=round(size / 2**20, 1), ratio_compressed=round(size / payload, 4),
                  raw_mib=round(raw_out.stat().st_size / 2**20, 1),
                  ours_mib_per_s=round(payload / 2**20 / m["ours_s"], 1))
            m = c.compare(ours, f"{tar} | zstd -q -T1 -{level} -c{hashed}", args.repeat)
            t.add(f"build, level {level}", f"tar | zstd CLI -{level} -T1 | openssl", m, level=level)
        t.notes["sizes"] = {r["path"]: f"{r['bundle_mib']} MiB ({r['ratio_compressed']:.1%} of payload)"
                            for r in t.rows if "bundle_mib" in r}
        t.show()
        t.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
