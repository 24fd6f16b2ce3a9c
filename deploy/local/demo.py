"""`make demo`: the registry end to end on the local stack, narrated.

Creates a lakeFS repository with the registry's action installed, makes a
commit and a merge, and shows what reached Kafka, then (when the worker is
part of the demo) the bundles, ledger rows and a rollback.
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


def load_env() -> None:
    for line in (ROOT / ".stack" / "env").read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            os.environ[k] = shlex.split(v)[0] if v else ""


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


async def main() -> int:
    load_env()
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from hooks.install import install_action
    from worker._internal.kafka import partition_count
    from worker._internal.lakefs import LakeFS
    from worker.config import load_settings
    from worker.constants import TOPIC_EVENTS
    from worker.events import CommitEvent
    from worker.topics import ensure_all_topics

    settings = load_settings()
    await ensure_all_topics(settings)
    repo = f"demo-{uuid.uuid4().hex[:6]}"
    logs = ROOT / ".stack" / "logs"
    hooks_log = open(logs / "demo-hooks.log", "wb")  # noqa: SIM115
    hooks = subprocess.Popen(
        [sys.executable, "-m", "worker._cli", "hooks", "serve"], stdout=hooks_log, stderr=hooks_log, cwd=ROOT
    )
    lakefs = LakeFS(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        time.sleep(2)
        say(f"lakeFS repository {repo} with the registry action on main")
        await lakefs.create_repository(repo, f"local://{repo}")
        url = f"http://{settings.hooks_host}:{settings.hooks_port}/lakefs/webhook"
        print("action committed:", await install_action(lakefs, repo, "main", url))

        await consumer.start()
        count = await partition_count(settings.kafka_bootstrap, TOPIC_EVENTS) or 1
        tps = [TopicPartition(TOPIC_EVENTS, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)

        say("a commit on main and a merge of a feature branch")
        await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0.5\n")
        c1 = await lakefs.commit(repo, "main", "pipeline config", {"producer": "demo"})
        print("commit:", c1)
        await lakefs.create_branch(repo, "feature", "main")
        await lakefs.upload(repo, "feature", "configs/pipeline.yaml", b"threshold: 0.7\n")
        await lakefs.commit(repo, "feature", "raise threshold")
        merge = await lakefs.merge(repo, "feature", "main", "merge feature")
        print("merge: ", merge)

        say("events read back from Kafka topic " + TOPIC_EVENTS)
        seen: dict[str, CommitEvent] = {}
        deadline = time.monotonic() + 30
        while {c1, merge} - set(seen) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    e = CommitEvent.model_validate_json(r.value)
                    if e.repository_id == repo:
                        seen[e.commit_id] = e
                        print(json.dumps({"key": r.key.decode(), "source": e.source, "commit": e.commit_id,
                                          "branch": e.branch_id, "message": e.commit_message}))
        if {c1, merge} - set(seen):
            print("missing events; see .stack/logs/demo-hooks.log", file=sys.stderr)
            return 1
        say("demo finished: both lakeFS events reached Kafka")
        return 0
    finally:
        await consumer.stop()
        lakefs.close()
        hooks.terminate()
        hooks.wait(15)
        hooks_log.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
