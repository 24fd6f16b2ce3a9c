"""Audit replay over real Kafka and S3: the parallel path (candidates matched to the stored
rows in a pool: threads with the native scan, processes on the pure path) gives the writer's
answer, including where the topic holds a duplicate, a refused candidate and a valid but
non-canonical one, and still reports a ledger that is not what the topic implies."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.helpers import isolated_registry, unique
from tests.unit.ledger.factories import T0, make_candidate
from worker._internal.s3 import open_bucket
from worker.config import Settings, load_settings
from worker.constants import TOPIC_INDEX_CANDIDATES
from worker.errors import IntegrityError
from worker.io import ledger_audit
from worker.io.ledger_audit import replay
from worker.io.ledger_reader import checkpoint_origin
from worker.io.ledger_writer import LedgerStore
from worker.keys import TrustedKeys, load_private_key
from worker.ledger.row import LedgerRow, parse_candidate
from worker.ledger.state import Appender

pytestmark = pytest.mark.stack

ROWS = 700  # about three bundles; the pool is forced on below


@pytest.fixture
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, unique("rpl") + ".", unique("kfm-replay"))


async def _publish(settings: Settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(settings.topic(TOPIC_INDEX_CANDIDATES), value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _record(settings: Settings, env: dict[str, str], values: list[bytes]) -> int:
    """Append, in topic order and in batches of 256, what the writer appends for ``values``."""
    key = load_private_key(Path(env["KFM_SIGNING_KEY"]))
    trusted = TrustedKeys.from_dir(Path(env["KFM_TRUSTED_KEYS_DIR"]))
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    async with open_bucket(settings) as b:
        store, _ = await LedgerStore.open(b, origin, key, settings.checkpoint_name, trusted)
        recorded: dict[str, LedgerRow] = {}  # what the writer looks up for a batch's commits
        for first in range(0, len(values), 256):
            appender = Appender(store.tip, dict(recorded))
            for value in values[first : first + 256]:
                try:
                    candidate = parse_candidate(value)
                except IntegrityError:
                    continue
                appender.apply(candidate, T0 + timedelta(days=1))
            await store.commit(appender)
            recorded |= {row.lakefs_commit: row for row in appender.rows}
        return store.tip.size


def _values() -> list[bytes]:
    values = [make_candidate(i).to_bytes() for i in range(ROWS)]
    values.insert(300, make_candidate(17).to_bytes())  # a second candidate for a recorded commit
    values.insert(450, b'{"body": "not a row"}')  # refused by the writer
    # Valid, but not as the bundler publishes it (keys unsorted, spaces): only the models decide it.
    loose = orjson.loads(make_candidate(ROWS).to_bytes())
    values.insert(600, orjson.dumps(dict(reversed(list(loose.items()))), option=orjson.OPT_INDENT_2))
    return values


async def _replay(settings: Settings, env: dict[str, str], scratch: Path) -> ledger_audit.ReplayReport:
    trusted = TrustedKeys.from_dir(Path(env["KFM_TRUSTED_KEYS_DIR"]))
    async with open_bucket(settings) as b:
        rt = SimpleNamespace(bucket=b, settings=settings)
        return await replay(rt, trusted, scratch)  # type: ignore[arg-type]


async def test_parallel_replay_gives_the_writers_answer(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_audit, "_POOL_ABOVE_ROWS", 0)
    settings = load_settings({**os.environ, **env})
    values = _values()
    size = await _record(settings, env, values)
    assert size == ROWS + 1
    await _publish(settings, values)

    report = await _replay(settings, env, tmp_path / "replay")
    assert report.matches, report.differences
    assert (report.rows, report.candidates, report.duplicates, report.rejected) == (ROWS + 1, len(values), 1, 1)
    assert report.verified_by_round_trip == 0
    # All but the three the models decide were matched in the pool.
    assert report.matched_in_parallel == len(values) - 3
    rebuilt = (tmp_path / "replay" / "rollback-index.jsonl").read_bytes()
    assert rebuilt.count(b"\n") == ROWS + 1


async def test_parallel_replay_reports_a_ledger_the_topic_does_not_imply(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_audit, "_POOL_ABOVE_ROWS", 0)
    settings = load_settings({**os.environ, **env})
    values = _values()
    await _record(settings, env, values)
    # The topic says otherwise for one commit in the middle of a pool run: another producer.
    other = orjson.loads(values[500])
    other["body"]["producer"] = "someone-else"
    values[500] = make_candidate(0, body=parse_candidate(orjson.dumps(other)).body).to_bytes()
    await _publish(settings, values)

    report = await _replay(settings, env, tmp_path / "replay")
    assert not report.matches
    assert report.differences
