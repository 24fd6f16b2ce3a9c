#!/usr/bin/env python3
"""Benchmark: verify's per-row check on one core, pure Python vs native, against bare hashing.

The figure behind issue 8's "within 2x of hashing the same bytes plus the
Merkle tree" with the S3 server and the pool taken out: entry bundles of
bench_ledger.py's rows (about 2.6 KB each) are checked in memory, in this
process, three ways, interleaved round by round so that a busy host slows all
three alike:

- pure: ``check_bundle`` on the pure Python scan (``KFM_PURE_PYTHON=1``'s path);
- native: ``check_bundle`` on the native scan (``kfm_scan``, deploy/local/build-native.sh);
- raw: SHA-256 of every line and its RFC 6962 leaf hash (hashlib), nothing else.

Each way also adds its leaf hashes to a Merkle tree (``TreeEdge``), as verify
does; the table gives µs per row, rows/s and the ratio to raw. Needs no stack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ledger import generate  # noqa: E402

from worker.ledger import _native  # noqa: E402
from worker.ledger.chain import check_bundle  # noqa: E402
from worker.ledger.tiles import TILE_WIDTH, TreeEdge  # noqa: E402


def bundles(rows: int) -> list[tuple[int, bytes]]:
    lines, _ = generate(0, rows, None, False)
    return [(i, b"".join(x + b"\n" for x in lines[i : i + TILE_WIDTH])) for i in range(0, rows, TILE_WIDTH)]


def checked(work: list[tuple[int, bytes]]) -> bytes:
    edge = TreeEdge()
    for first, data in work:
        part = check_bundle(data, first)
        if part.tile_root is not None:
            edge.append_tile(part.leaf_hashes, part.tile_root)
        else:
            for i in range(0, len(part.leaf_hashes), 32):
                edge.append(part.leaf_hashes[i : i + 32])
    return edge.root()


def raw(work: list[tuple[int, bytes]]) -> bytes:
    edge = TreeEdge()
    sha256 = hashlib.sha256
    for _, data in work:
        for line in data.split(b"\n")[:-1]:
            sha256(line).digest()
            edge.append(sha256(b"\x00" + line).digest())
    return edge.root()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=25_600, help="rows checked per round (default 25600: 100 bundles)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    ap.add_argument("--out", help="where to write the figures as JSON")
    args = ap.parse_args()

    native = _native.load()
    work = bundles(args.rows)
    nbytes = sum(len(d) for _, d in work)

    def pure_path(w: list[tuple[int, bytes]]) -> bytes:
        _native.NATIVE = None
        return checked(w)

    def native_path(w: list[tuple[int, bytes]]) -> bytes:
        _native.NATIVE = native
        return checked(w)

    ways: dict[str, Callable[[list[tuple[int, bytes]]], bytes]] = {"raw": raw, "pure": pure_path}
    if native is not None:
        ways["native"] = native_path
    else:
        sys.stderr.write("kfm_scan is not built: native leg skipped (deploy/local/build-native.sh)\n")
    times: dict[str, list[float]] = {k: [] for k in ways}
    roots = set()
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            roots.add(fn(work))
            times[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    if len(roots) != 1:
        raise AssertionError("the ways disagree on the tree's root")

    base = statistics.median(times["raw"])
    result = {
        "rows": args.rows,
        "mean_line_bytes": round(nbytes / args.rows),
        "load_average": [round(x, 1) for x in (*load_before, *load_after)],
        "native_built": native is not None,
        "ways": {},
    }
    say(
        f"{args.rows} rows of {nbytes / args.rows:.0f} B, median of {args.rounds} rounds; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    say(f"{'way':<8}{'µs/row':>10}{'rows/s':>12}{'÷ raw':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        per_row = med / args.rows * 1e6
        result["ways"][name] = {
            "us_per_row": round(per_row, 2),
            "rows_per_s": round(args.rows / med),
            "ratio_to_raw": round(med / base, 2),
        }
        say(f"{name:<8}{per_row:>10.2f}{args.rows / med:>12,.0f}{med / base:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
