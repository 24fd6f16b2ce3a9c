"""Benchmark: `kfm restore --offline` against `zstd -dc | tar -x`, same bundle, same run.

Ours is the whole process: signature, one pass that hashes the compressed
stream, decompresses, checks and hashes every member while writing it into a
staging directory, then the rename into place. The raw tool decompresses and
extracts, nothing else. Ratio = raw tool's time / ours, medians of --repeat
runs taken alternately (the output is removed, untimed, before each run).
Writes bench/results/restore.json.

Usage: .venv/bin/python bench/bench_restore.py [--mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="model file size in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kfm-bench-restore-") as tmp:
        root = Path(tmp)
        files = c.make_inputs(root / "in", args.mib)
        bundle, _, pub = c.write_signed_bundle(files, root)
        ours_out, raw_out = root / "ours", root / "raw"

        def clean() -> None:
            c.drop_tree(ours_out)
            c.drop_tree(raw_out)
            raw_out.mkdir()
            # Untimed: the previous run's gigabyte is written back now, not during the next
            # run, which would otherwise pay for it (whichever of the two comes next).
            os.sync()

        m = c.compare(c.kfm("restore", "--offline", "--key", str(pub), "--bundle", str(bundle), "--to", str(ours_out)),
                      f"zstd -dc {shlex.quote(str(bundle))} | tar -x -C {shlex.quote(str(raw_out))}",
                      args.repeat, before=clean)
        t = c.Table("restore", f"kfm restore (offline), {args.mib} MiB model + 1,000 STAC items + 20 configs;"
                               f" medians of {args.repeat}")
        t.add("kfm restore --offline", "zstd -dc | tar -x", m, bundle_mib=round(bundle.stat().st_size / 2**20, 1))
        t.show()
        t.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
