"""Benchmark: start-up of the `kfm` verbs a person types, against the bare interpreter, same run.

Each command runs --repeat times as its own process: `--help` of verify and of
the ledger verbs (argument parsing and every import they need), and an
offline verify of the golden bundle (a few KiB: all start-up, no payload).
The goal is under 0.3 s each; wall and CPU seconds are both shown, as the
machine is shared. Writes bench/results/startup.json.

Usage: .venv/bin/python bench/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

GOLDEN = c.ROOT / "tests" / "data" / "bundle"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bare = [sys.executable, "-c", "pass"]
    t = c.Table("startup", f"CLI start-up; medians of {args.repeat} (goal: under 0.3 s)")
    cases = {
        "kfm verify --help": c.kfm("verify", "--help"),
        "kfm ledger list --help": c.kfm("ledger", "list", "--help"),
        "kfm verify --offline (golden)": c.kfm("verify", "--offline", "--key", str(GOLDEN / "golden.pub"),
                                               "--attestation", str(GOLDEN / "golden.dsse.json"),
                                               "--bundle", str(GOLDEN / "golden.tar.zst")),
    }
    for name, cmd in cases.items():
        t.add(name, "python -c pass", c.compare(cmd, bare, args.repeat))
    t.show()
    t.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
