"""`make demo`: the registry end to end on the local stack, narrated.

1. A lakeFS repository gets the registry's action; commit A (STAC catalog,
   configs, a model), commit B and a merge C change configs and the model.
2. The real webhooks reach `kfm hooks serve`, the Faust worker bundles and
   signs each commit, and the ledger writer records one row per commit.
3. The bundle of A is verified offline; the ledger is verified and an
   inclusion proof printed.
4. A rollback of main to A (dry run, then revert) restores A's bytes.
5. The writer topic is replayed for audit and matches the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
KFM = [sys.executable, "-m", "worker._cli"]
# The stack `deploy/local/stack up` started: its state dir, as every other script reads it.
STACK = Path(os.environ.get("KFM_STACK_DIR", ROOT / ".stack"))


def load_env() -> None:
    for line in (STACK / "env").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            os.environ[k] = shlex.split(v)[0] if v else ""


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def kfm(*args: str, check: bool = True) -> str:
    print("$ kfm " + " ".join(args), flush=True)
    r = subprocess.run([*KFM, *args], capture_output=True, text=True, cwd=ROOT)
    out = (r.stdout + r.stderr).strip()
    if out:
        print("  " + out.replace("\n", "\n  "), flush=True)
    if check and r.returncode != 0:
        raise SystemExit(f"kfm {args[0]} failed with exit code {r.returncode}")
    return r.stdout


def start(name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(STACK / "logs" / f"demo-{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([*KFM, *args], stdout=log, stderr=log, cwd=ROOT)


async def wait_rows(commits: set[str], timeout: float = 240) -> None:
    from worker._internal.s3 import open_bucket
    from worker.io.ledger_reader import LedgerReader
    from worker.config import load_settings
    from worker.keys import TrustedKeys

    settings = load_settings()
    deadline = time.monotonic() + timeout
    async with open_bucket(settings) as b:
        reader = LedgerReader(b, TrustedKeys.from_dir(Path(settings.trusted_keys_dir)), settings.checkpoint_name)
        while time.monotonic() < deadline:
            rows = [await reader.row_for(c) for c in commits]
            # Recorded, and covered by the published checkpoint (so provable).
            if all(rows) and max(r.seq for r in rows if r) < await reader.size():
                return
            await asyncio.sleep(1)
    raise SystemExit(f"not recorded in {timeout}s: {sorted(commits)}; see {STACK}/logs/demo-worker.log")


async def main() -> int:
    load_env()
    from hooks.install import install_action
    from worker._internal.lakefs import LakeFS
    from worker.config import load_settings
    from worker.topics import ensure_all_topics

    settings = load_settings()
    await ensure_all_topics(settings)
    repo = f"demo-{uuid.uuid4().hex[:6]}"
    hooks = start("hooks", "hooks", "serve")
    worker = start("worker", "worker")
    lakefs = LakeFS(settings)
    try:
        time.sleep(3)
        say(f"1. lakeFS repository {repo}, the registry action on main, commits A, B and merge C")
        await lakefs.create_repository(repo, f"local://{repo}")
        url = f"http://{settings.hooks_host}:{settings.hooks_port}/lakefs/webhook"
        install = await install_action(lakefs, repo, "main", url)
        catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "kfm", "description": "demo",
                   "links": [{"rel": "item", "href": "./items/tile-1.json"}]}
        item = {"type": "Feature", "stac_version": "1.0.0", "id": "tile-1", "geometry": None,
                "properties": {"datetime": "2025-01-01T00:00:00Z"}, "links": [],
                "assets": {"data": {"href": "../../data/tile-1.tif"}}}
        await lakefs.upload(repo, "main", "stac/catalog.json", json.dumps(catalog).encode())
        await lakefs.upload(repo, "main", "stac/items/tile-1.json", json.dumps(item).encode())
        await lakefs.upload(repo, "main", "data/tile-1.tif", os.urandom(20_000))
        await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0.5\n")
        await lakefs.upload(repo, "main", "models/focus/3.1.0.bin", b"weights-A" * 10_000)
        await lakefs.upload(repo, "main", "models/manifest.json", json.dumps(
            {"models": [{"name": "focus-transformer", "version": "3.1.0", "path": "models/focus/3.1.0.bin"}]}
        ).encode())
        a = await lakefs.commit(repo, "main", "A: data, config and model", {"producer": "demo"})
        await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0.9\n")
        b = await lakefs.commit(repo, "main", "B: new threshold")
        await lakefs.create_branch(repo, "feature", "main")
        await lakefs.upload(repo, "feature", "models/focus/3.1.0.bin", b"weights-C" * 10_000)
        await lakefs.commit(repo, "feature", "retrained model")
        c = await lakefs.merge(repo, "feature", "main", "C: merge retrained model")
        print(f"A={a}\nB={b}\nC={c}")

        say("2. webhooks → Kafka → bundler → ledger writer (waiting for the rows)")
        await wait_rows({install, a, b, c})
        kfm("ledger", "list")

        say("3. verify A's bundle offline, verify the ledger, prove A's row")
        kfm("verify", "--bundle", f"s3://{settings.s3_bucket}/artifacts/{a}.tar.zst")
        kfm("ledger", "verify")
        proof = json.loads(kfm("ledger", "prove", "--json", a))
        print(f"  (inclusion of seq {proof['seq']} in a tree of {proof['tree_size']} checked against a signed checkpoint)")

        say("4. roll main back to A: dry run, then revert, following the request")
        kfm("rollback", "--commit", a, "--branch", "main", "--dry-run", "--wait", "--reason", "demo: C regressed")
        kfm("rollback", "--commit", a, "--branch", "main", "--strategy", "revert", "--wait",
            "--reason", "demo: C regressed")
        cfg = await lakefs.read(repo, "main", "configs/pipeline.yaml", 1 << 20)
        model = await lakefs.read(repo, "main", "models/focus/3.1.0.bin", 1 << 24)
        same = cfg == b"threshold: 0.5\n" and model == b"weights-A" * 10_000
        print(f"main now has A's config ({cfg.decode().strip()!r}) and A's model: {same}")
        if not same:
            return 1

        say("5. replay the writer topic for audit")
        kfm("audit", "replay")
        say("demo finished: bundled, recorded, verified, rolled back, replayed")
        return 0
    finally:
        lakefs.close()
        for p in (worker, hooks):
            p.terminate()
        for p in (worker, hooks):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
