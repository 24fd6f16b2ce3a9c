"""Migration from the single-file ledger of earlier versions to the tiled layout.

A legacy registry (one JSONL file, a Parquet file, archived checkpoints and
``checkpoints/latest.note``) is built with the ledger's own pure functions,
then converted: row bytes, roots and every old checkpoint must stay valid,
and consistency proofs must lead from each old checkpoint to the new one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.helpers import isolated_registry, run_kfm, unique
from tests.unit.ledger.factories import make_chain, to_jsonl
from worker._internal.s3 import open_bucket
from worker.config import Settings, load_settings
from worker.constants import CHECKPOINTS_PREFIX, INDEX_JSONL_KEY, INDEX_PARQUET_KEY, LEDGER_CHECKPOINT_KEY
from worker.io.ledger_reader import checkpoint_key, checkpoint_origin
from worker.io.ledger_writer import LedgerStore
from worker.keys import TrustedKeys, load_private_key
from worker.ledger import merkle
from worker.ledger.checkpoint import sign_checkpoint
from worker.ledger.mirror import to_parquet
from worker.ledger.row import leaf_bytes

pytestmark = pytest.mark.stack

N = 600
OLD_SIZES = (1, 100, 256, 300, N)


async def _legacy_registry(env: dict[str, str]) -> tuple[Settings, bytes]:
    settings = load_settings({**os.environ, **env})
    key = load_private_key(Path(env["KFM_SIGNING_KEY"]))
    rows = make_chain(N)
    data = to_jsonl(rows)
    leaves = [leaf_bytes(r) for r in rows]
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    async with open_bucket(settings) as b:
        await b.put(INDEX_JSONL_KEY, data)
        await b.put(INDEX_PARQUET_KEY, to_parquet(rows))
        for size in OLD_SIZES:
            note = sign_checkpoint(origin, size, merkle.root(leaves[:size]), settings.checkpoint_name, key)
            await b.put(checkpoint_key(size), note)
        await b.put(f"{CHECKPOINTS_PREFIX}latest.note", note)
    return settings, data


@pytest.fixture
def legacy_env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, unique("mig") + ".", unique("kfm-migrate"))


async def test_migrate_keeps_rows_roots_and_old_checkpoints(legacy_env: dict[str, str], tmp_path: Path) -> None:
    env = legacy_env
    settings, original = await _legacy_registry(env)
    refused = run_kfm(env, "ledger", "verify", check=False)
    assert refused.returncode != 0 and "kfm ledger migrate" in refused.stdout + refused.stderr

    out = run_kfm(env, "ledger", "migrate")
    assert f"migrated {N} rows" in out.stdout
    # Every archived checkpoint (old and new) is checked against the tree.
    verify = run_kfm(env, "ledger", "verify", "--derived")
    assert verify.stdout.startswith(f"OK: {N} rows"), verify.stdout
    assert f"match {len(OLD_SIZES) + 1} signed checkpoints" in verify.stdout, verify.stdout
    run_kfm(env, "ledger", "export", "--out", str(tmp_path / "export.jsonl"))
    assert (tmp_path / "export.jsonl").read_bytes() == original  # identical row bytes
    async with open_bucket(settings) as b:
        new_note, _ = await b.get(LEDGER_CHECKPOINT_KEY, 1 << 16)
        old_latest, _ = await b.get(checkpoint_key(N), 1 << 16)
        assert new_note == old_latest  # same size, same root: the very same signed note
        assert await b.head(f"{CHECKPOINTS_PREFIX}latest.note") is None
        assert await b.head(INDEX_PARQUET_KEY) is None  # replaced by the per-bundle dataset
        for size in OLD_SIZES[:-1]:
            note, _ = await b.get(checkpoint_key(size), 1 << 16)
            # Signed under the key name of earlier versions, not the origin: they verify all the same.
            assert note.decode().rsplit("\n\n", 1)[1].split(" ")[1] == settings.checkpoint_name
            (tmp_path / f"{size}.note").write_bytes(note)
    # Consistency proofs from each old checkpoint to the new tree.
    for size in OLD_SIZES[:-1]:
        r = run_kfm(env, "ledger", "verify", "--from", str(tmp_path / f"{size}.note"))
        assert r.stdout.startswith(f"OK: rows {size}..{N}"), r.stdout
    again = run_kfm(env, "ledger", "migrate")
    assert "nothing to do" in again.stdout


async def test_the_writer_migrates_on_start(legacy_env: dict[str, str]) -> None:
    settings, _ = await _legacy_registry(legacy_env)
    key = load_private_key(Path(legacy_env["KFM_SIGNING_KEY"]))
    trusted = TrustedKeys.from_dir(Path(legacy_env["KFM_TRUSTED_KEYS_DIR"]))
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    async with open_bucket(settings) as b:
        store, state = await LedgerStore.open(b, origin, key, settings.checkpoint_name, trusted)
        assert state == "migrated" and store.tip.size == N
        assert store.tip.root() == merkle.root([leaf_bytes(r) for r in make_chain(N)])
        again, state = await LedgerStore.open(b, origin, key, settings.checkpoint_name, trusted)
        assert state == "clean" and again.tip.size == N and again.tip.tail == store.tip.tail
