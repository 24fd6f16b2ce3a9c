"""Benchmark: time from a lakeFS commit to its ledger row, one at a time and in a burst.

A script, not a test (pytest never collects it). On the local stack (``.stack/env``) it
starts the webhook receiver and one worker on topics and a bucket of their own, creates a
repository whose post-commit action calls the receiver, and then:

- makes ``--n`` commits one at a time, each only after the previous one's row is
  readable, and times each from the commit API's answer to the moment its row object
  (``ledger/commits/<commit>``) can be read: the whole path (webhook, event, bundle,
  attestation, candidate, the writer's batch, head and objects);
- makes ``--n`` commits as fast as the lakeFS API takes them, then times each commit to
  its row the same way (the writer batches what piles up);
- measures the lakeFS commit API itself in the same run (upload + commit, the raw
  operation a commit costs without the registry), for the ratio.

Prints a table and writes the figures as JSON (``--out``).

Usage: .venv/bin/python bench/bench_commit_latency.py [--n 200] [--out commit-latency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402
from _stack import stack_env  # noqa: E402

from hooks.install import install_action  # noqa: E402
from tests.integration.helpers import hooks_server, isolated_registry, unique, worker_process  # noqa: E402
from worker._internal.lakefs import LakeFS  # noqa: E402
from worker._internal.s3 import Bucket, open_bucket  # noqa: E402
from worker.config import Settings, load_settings  # noqa: E402

POLL_S = 0.01


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def commit_one(lakefs: LakeFS, repo: str, i: int) -> tuple[str, float]:
    """A small commit (one config file changed); returns (commit id, when the API answered)."""
    await lakefs.upload(repo, "main", "configs/pipeline.yaml", f"threshold: {i}\n".encode())
    commit = await lakefs.commit(repo, "main", f"bench {i}")
    return commit, time.perf_counter()


async def row_seen(bucket: Bucket, commit: str) -> bool:
    return await bucket.head(f"ledger/commits/{commit}") is not None


async def wait_rows(bucket: Bucket, pending: list[tuple[str, float]], timeout: float = 300) -> list[float]:
    """Seconds from each commit to its row, polling the oldest rows first."""
    latencies: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(latencies) < len(pending):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(pending) - len(latencies)} rows did not appear in {timeout} s")
        waiting = [(c, t) for c, t in pending if c not in latencies]
        found = await asyncio.gather(*(row_seen(bucket, c) for c, _ in waiting[:16]))
        now = time.perf_counter()
        for (commit, at), ok in zip(waiting[:16], found, strict=True):
            if ok:
                latencies[commit] = now - at
        await asyncio.sleep(POLL_S)
    return [latencies[c] for c, _ in pending]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = stack_env()
    prefix = unique("lat") + "."
    env = isolated_registry(base, prefix, unique("kfm-latency"))
    settings: Settings = load_settings({**os.environ, **env})
    lakefs = LakeFS(settings)
    repo = unique("latency")
    out: dict[str, Any] = {"n": args.n, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0\n")
        await lakefs.commit(repo, "main", "before the hook")
        # The raw operation, without the registry: upload + commit through the same API.
        raw = []
        for i in range(20):
            t0 = time.perf_counter()
            await commit_one(lakefs, repo, -i - 1)
            raw.append(time.perf_counter() - t0)
        out["lakefs_commit_api_p50_s"] = statistics.median(raw)
        with hooks_server(env) as url, worker_process(env, prefix):
            await install_action(lakefs, repo, "main", url + "/lakefs/webhook")
            async with open_bucket(settings) as bucket:
                warm = [await commit_one(lakefs, repo, 0)]  # the worker's first commit joins the group
                await wait_rows(bucket, warm, timeout=120)
                single: list[float] = []
                for i in range(1, args.n + 1):
                    single += await wait_rows(bucket, [await commit_one(lakefs, repo, i)])
                out["single_p50_s"], out["single_p99_s"] = quantile(single, 0.5), quantile(single, 0.99)
                out["single_max_s"] = max(single)
                t0 = time.perf_counter()
                burst = [await commit_one(lakefs, repo, args.n + i) for i in range(1, args.n + 1)]
                out["burst_commit_s"] = time.perf_counter() - t0
                lat = await wait_rows(bucket, burst)
                out["burst_p50_s"], out["burst_p99_s"] = quantile(lat, 0.5), quantile(lat, 0.99)
                out["burst_all_rows_s"] = max(at + d for (_, at), d in zip(burst, lat, strict=True)) - t0
    finally:
        lakefs.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="commits per phase (one at a time, then a burst)")
    ap.add_argument("--out", default="commit-latency.json", help="where to write the figures as JSON")
    args = ap.parse_args()
    res = asyncio.run(run(args))
    print(f"| figure ({args.n} commits per phase) | value |\n|---|---:|")
    for key, value in res.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    Path(args.out).write_text(json.dumps({**res, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
