"""Benchmark: `kfm verify --offline` against `zstd -dc | openssl dgst -sha256`, same bundle, same run.

Ours is the whole process (start-up, signature, one pass hashing the
compressed stream and every member while decompressing); the raw tool only
decompresses and hashes the tar. Ratio = raw tool's time / ours (1.0 =
parity), medians of --repeat runs taken alternately; CPU seconds too, since
the machine is shared. Writes bench/results/verify.json.

Usage: .venv/bin/python bench/bench_verify.py [--mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
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
    with tempfile.TemporaryDirectory(prefix="kfm-bench-verify-") as tmp:
        root = Path(tmp)
        files = c.make_inputs(root / "in", args.mib)
        bundle, _, pub = c.write_signed_bundle(files, root)
        q = shlex.quote(str(bundle))
        m = c.compare(c.kfm("verify", "--offline", "--key", str(pub), str(bundle)),
                      f"zstd -dc {q} | openssl dgst -sha256 >/dev/null", args.repeat)
        t = c.Table("verify", f"kfm verify (offline), {args.mib} MiB model + 1,000 STAC items + 20 configs;"
                              f" medians of {args.repeat}")
        t.add("kfm verify --offline", "zstd -dc | openssl dgst -sha256", m,
              bundle_mib=round(bundle.stat().st_size / 2**20, 1))
        t.show()
        t.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
