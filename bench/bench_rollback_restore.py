"""Benchmark: the rollback agent's restore against the raw download plus the writes a restore needs.

A script, not a test (pytest never collects it). On the local stack (``$KFM_STACK_DIR/env``,
default ``.stack/env``) it commits the reference workload to a lakeFS repository of its own
(a ``--mib`` model file under ``models/`` with its manifest, 1,000 STAC items, 20 configs),
lets the receiver and one worker bundle and record it, stops them, and then times, alternately
and ``--repeat`` times each:

- **ours**: one rollback request handled by the agent's own function
  (:func:`worker.io.rolling_back.handle_rollback_request`, in this process, strategy
  ``branch``): download the bundle, verify it and extract it in one pass, plan, claim,
  create the rollback branch, publish the pinned STAC documents with the rollback, check
  the restored tree (every config and model re-hashed from lakeFS), record the result;
- **raw**: what a restore of this bundle cannot do without, with the fastest plain clients:
  the bundle downloaded from S3 with boto3's ``download_file`` in one GET, plus the writes
  the agent makes: the same lakeFS branch created through the same API, and the same
  STAC documents PUT into the registry bucket, 16 at a time. (The agent restores lakeFS
  data by moving a ref, not by uploading it, so the model is not uploaded; a model kept
  in the registry bucket would be, by both.)

Ratio = raw time / ours (1.0 = parity). A breakdown of ours by step (wall time inside each
of the handler's steps) says where the rest goes. Prints a table and writes
``bench/results/rollback-restore.json``.

Usage: .venv/bin/python bench/bench_rollback_restore.py [--mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3  # noqa: E402
import lakefs_sdk  # noqa: E402
from _common import Table, make_inputs  # noqa: E402
from _stack import stack_env  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config  # noqa: E402

import worker.io.rolling_back as rb  # noqa: E402
from hooks.install import install_action  # noqa: E402
from tests.integration.helpers import hooks_server, isolated_registry, unique, worker_process  # noqa: E402
from worker._internal.lakefs import LakeFS  # noqa: E402
from worker._internal.s3 import open_bucket  # noqa: E402
from worker.config import Settings, load_settings  # noqa: E402
from worker.io.runtime import Runtime  # noqa: E402
from worker.keys import TrustedKeys  # noqa: E402
from worker.logs import configure_logging  # noqa: E402
from worker.rollback.plan import stac_key  # noqa: E402
from worker.rollback.request import RollbackRequest  # noqa: E402

PUT_IN_FLIGHT = 16
# The bundle in one streamed GET: the fastest plain download here. boto3's default (8 MiB
# ranges, 10 threads) took 106-180 s for a 917 MiB bundle from the local moto server, against
# 3-5 s for one GET.
ONE_GET = TransferConfig(multipart_threshold=1 << 40)
# The handler's steps timed for the breakdown (module functions of worker.io.rolling_back).
STEPS = ("_verify", "_plan", "_claim", "_move_ref", "_write_models", "_publish_stac", "_check", "_record", "_finish")


def cpu_s() -> float:
    """User + system seconds of this process, all threads (the servers' CPU is not counted)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def upload_all(lakefs: LakeFS, repo: str, files: dict[str, Path]) -> None:
    sem = asyncio.Semaphore(PUT_IN_FLIGHT)

    async def one(path: str, local: Path) -> None:
        async with sem:
            await lakefs.upload(repo, "main", path, local)

    await asyncio.gather(*(one(m.removeprefix("lakefs/"), p) for m, p in files.items()))


async def wait_key(settings: Settings, key: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    async with open_bucket(settings) as bucket:
        while await bucket.head(key) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{key} did not appear within {within_s:.0f} s (see the worker's log)")
            await asyncio.sleep(0.5)


def drop_bucket(settings: Settings) -> None:
    """Delete the bench's bucket (the S3 server may hold it in memory), best effort."""
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region or "us-east-1",
                      aws_access_key_id=settings.s3_access_key_id,
                      aws_secret_access_key=settings.s3_secret_access_key)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=settings.s3_bucket)
    except Exception as e:  # cleanup only
        print(f"  (bucket {settings.s3_bucket} not deleted: {e})")  # noqa: T201


def timed_steps() -> tuple[dict[str, list[float]], Callable[[], None]]:
    """Wrap the handler's steps to sum their wall time per run; returns (times, undo)."""
    times: dict[str, list[float]] = defaultdict(list)
    saved = {name: getattr(rb, name) for name in STEPS}

    def wrap(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def step(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                times[name].append(time.perf_counter() - t0)

        return step

    for name, fn in saved.items():
        setattr(rb, name, wrap(name, fn))

    def undo() -> None:
        for name, fn in saved.items():
            setattr(rb, name, fn)

    return times, undo


async def run(args: argparse.Namespace) -> Table:  # noqa: PLR0915 - one benchmark, in the order it runs
    base = stack_env()
    prefix = unique("rbb") + "."
    env = isolated_registry(base, prefix, unique("kfm-rollback-bench"))
    settings = load_settings({**os.environ, **env})
    lakefs = LakeFS(settings)
    repo = unique("rbbench")
    work = Path(tempfile.mkdtemp(prefix="kfm-bench-rollback-", dir=settings.work_dir or None))
    table = Table("rollback-restore", f"Rollback agent's restore, {args.mib} MiB model + 1,000 STAC + 20 configs "
                                      f"(median of {args.repeat})")
    table.notes["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        # The commit to roll back to, bundled and recorded by the real receiver and worker.
        files = make_inputs(work / "in", args.mib)
        manifest = work / "in" / "models" / "manifest.json"
        manifest.write_text(json.dumps({"models": [{"name": "bench-model", "version": "1.0.0",
                                                    "path": "models/model.safetensors"}]}))
        files["lakefs/models/manifest.json"] = manifest
        await lakefs.create_repository(repo, f"local://{repo}")
        t0 = time.perf_counter()
        with hooks_server(env) as url, worker_process(env, prefix):
            await install_action(lakefs, repo, "main", url + "/lakefs/webhook")
            await upload_all(lakefs, repo, files)
            commit = await lakefs.commit(repo, "main", "the commit to roll back to")
            await wait_key(settings, f"ledger/commits/{commit}", 900)
            await wait_key(settings, "ledger/checkpoint", 60)
        # A later commit, so the restore has something to undo on main.
        await lakefs.upload(repo, "main", "configs/c00.yaml", b"key_0: changed\n")
        await lakefs.commit(repo, "main", "a change to roll back")
        table.notes["setup_s (upload, bundle, record; not a figure)"] = round(time.perf_counter() - t0, 1)
        stac = sorted(m.removeprefix("lakefs/") for m in files if m.startswith("lakefs/stac/"))

        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region or "us-east-1",
                          aws_access_key_id=settings.s3_access_key_id,
                          aws_secret_access_key=settings.s3_secret_access_key,
                          config=Config(max_pool_connections=PUT_IN_FLIGHT * 2))
        cfg = lakefs_sdk.Configuration(host=settings.lakefs_endpoint.rstrip("/") + "/api/v1",
                                       username=settings.lakefs_access_key_id,
                                       password=settings.lakefs_secret_access_key)
        branches = lakefs_sdk.BranchesApi(lakefs_sdk.ApiClient(cfg))
        bundle_key = f"artifacts/{commit}.tar.zst"
        bundle_bytes = s3.head_object(Bucket=settings.s3_bucket, Key=bundle_key)["ContentLength"]
        table.notes["bundle_bytes"] = bundle_bytes

        def raw_restore(n: int) -> None:
            """The bundle down, the branch, the STAC documents up: nothing checked, nothing recorded."""
            s3.download_file(settings.s3_bucket, bundle_key, str(work / "raw.tar.zst"), Config=ONE_GET)
            branches.create_branch(repo, lakefs_sdk.BranchCreation(name=f"raw-{n}-{uuid.uuid4().hex[:8]}",
                                                                   source=commit))
            rid = f"raw-{uuid.uuid4()}"

            def put(path: str) -> None:
                body = files["lakefs/" + path].read_bytes()
                s3.put_object(Bucket=settings.s3_bucket, Key=stac_key(rid, path), Body=body)

            with ThreadPoolExecutor(PUT_IN_FLIGHT) as pool:
                list(pool.map(put, stac))
            (work / "raw.tar.zst").unlink()

        trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
        steps, undo = timed_steps()
        runs: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
        async with await Runtime.open(settings) as rt:
            try:
                for n in range(args.repeat):
                    req = RollbackRequest(request_id=str(uuid.uuid4()), lakefs_repo=repo, commit=commit,
                                          target_branch="main", strategy="branch", requested_by="bench",
                                          reason="bench", requested_at=datetime.now(UTC))
                    c0, t0 = cpu_s(), time.perf_counter()
                    result = await rb.handle_rollback_request(rt, req.to_bytes(), trusted)
                    runs["ours"].append((time.perf_counter() - t0, cpu_s() - c0))
                    if result.status != "completed":
                        raise SystemExit(f"rollback {result.status}: {result.reason}")
                    c0, t0 = cpu_s(), time.perf_counter()
                    await asyncio.to_thread(raw_restore, n)
                    runs["raw"].append((time.perf_counter() - t0, cpu_s() - c0))
            finally:
                undo()
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
        table.add("rollback restore (strategy branch)",
                  "boto3 GET + create_branch + STAC PUTs x16",
                  {"ours_s": med["ours"][0], "raw_s": med["raw"][0], "ours_cpu_s": med["ours"][1],
                   "raw_cpu_s": med["raw"][1], "ours_runs": [round(w, 3) for w, _ in runs["ours"]],
                   "raw_runs": [round(w, 3) for w, _ in runs["raw"]]})
        table.notes["ours by step, median s"] = {k: round(statistics.median(v), 3) for k, v in steps.items()}
        table.notes["stac_documents"] = len(stac)
    finally:
        lakefs.close()
        shutil.rmtree(work, ignore_errors=True)
        drop_bucket(settings)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="size of the model file (MiB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of ours and of the raw restore, alternately")
    args = ap.parse_args()
    configure_logging("WARNING")
    table = asyncio.run(run(args))
    table.show()
    table.save()


if __name__ == "__main__":
    main()
