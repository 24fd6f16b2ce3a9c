"""Partial bundles and tiles are deleted once their bundle or tile is full, and every
reader (an older checkpoint's, and a writer restarting inside a filled bundle) still
finds its rows through the full object's prefix."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.helpers import isolated_registry, run_kfm, unique
from tests.unit.ledger.factories import T0, make_candidate
from worker._internal.s3 import open_bucket
from worker.config import load_settings
from worker.io.ledger_reader import LedgerReader, checkpoint_origin
from worker.io.ledger_writer import LedgerStore, load_tip
from worker.keys import TrustedKeys, load_private_key
from worker.ledger import merkle
from worker.ledger.row import leaf_bytes
from worker.ledger.state import Appender
from worker.ledger.tiles import LOG_PREFIX, tiles_for_size

pytestmark = pytest.mark.stack


@pytest.fixture
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, unique("sup") + ".", unique("kfm-superseded"))


async def test_superseded_partials_are_deleted_and_readers_fall_back(env: dict[str, str]) -> None:
    settings = load_settings({**os.environ, **env})
    key = load_private_key(Path(env["KFM_SIGNING_KEY"]))
    trusted = TrustedKeys.from_dir(Path(env["KFM_TRUSTED_KEYS_DIR"]))
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    lines: list[bytes] = []
    async with open_bucket(settings) as b:
        store, state = await LedgerStore.open(b, origin, key, settings.checkpoint_name, trusted)
        assert state == "empty"
        # Batches of 7 rows: the first bundle fills at 256, within the batch ending at 259.
        for first in range(0, 266, 7):
            appender = Appender(store.tip, {})
            for i in range(first, first + 7):
                appender.apply(make_candidate(i), T0 + timedelta(days=1))
            await store.commit(appender)
            lines += appender.lines
        assert store.tip.size == 266
        partial_rows = await b.list_keys(f"{LOG_PREFIX}rows/000.p/")
        partial_tiles = await b.list_keys(f"{LOG_PREFIX}tile/0/000.p/")
        assert partial_rows == [] and partial_tiles == []
        assert await b.list_keys(f"{LOG_PREFIX}rows/001.p/")  # the open bundle's partials stay

        # A reader of an older checkpoint (size 252) gets its rows and root from the full objects.
        reader = LedgerReader(b, trusted, settings.checkpoint_name)
        got = [line async for _, line in reader.lines(0, 252, 252)]
        assert got == lines[:252]
        needed = await reader.tiles(tiles_for_size(252))
        assert all(len(v) == t.width * 32 for t, v in needed.items())

        # A writer restarting at a size inside the filled bundle still loads its tip.
        tip = await load_tip(b, 252)
        assert tip.size == 252 and tip.root() == merkle.root(lines[:252])
        assert tip.tail is not None and leaf_bytes(tip.tail) == lines[251]
    r = run_kfm(env, "ledger", "verify")
    assert r.stdout.startswith("OK: 266 rows"), r.stdout
