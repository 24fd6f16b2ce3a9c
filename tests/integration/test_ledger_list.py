"""`kfm ledger list` as a process against a tiled ledger in a real S3 server.

The ledger (three full entry bundles and a partial one, rows of two
repositories and two branches) is written in the single-file layout with the
ledger's own pure functions and converted by `kfm ledger migrate`, the real
writer code. Listing the newest rows must not read the older bundles: the
test deletes the first entry bundle, and the newest rows, paging down to it
and a filter whose matches are all newer still work.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.helpers import isolated_registry, run_kfm, unique
from tests.integration.terminal import run_in_terminal, run_piped
from tests.unit.ledger.factories import T0, make_body
from worker._internal.s3 import open_bucket
from worker.config import load_settings
from worker.constants import INDEX_JSONL_KEY
from worker.ledger.chain import next_row
from worker.ledger.row import LedgerRow, row_to_line
from worker.ledger.tiles import TILE_WIDTH, entries_key
from worker.utc import format_utc

pytestmark = pytest.mark.stack

N = 3 * TILE_WIDTH + 40
RARE = (5, 300, 700)


def _row_repo(i: int) -> str:
    return "rare-repo" if i in RARE else "kfm-main"


@pytest.fixture(scope="module")
def ledger(stack_env: dict[str, str]) -> tuple[dict[str, str], list[LedgerRow]]:
    env = isolated_registry(stack_env, unique("ll") + ".", unique("kfm-list"))
    rows: list[LedgerRow] = []
    for i in range(N):
        rows.append(next_row(rows[-1] if rows else None, make_body(i, lakefs_repo=_row_repo(i))))

    async def put() -> None:
        async with open_bucket(load_settings({**os.environ, **env})) as b:
            await b.put(INDEX_JSONL_KEY, b"".join(row_to_line(r) for r in rows))

    asyncio.run(put())
    assert f"migrated {N} rows" in run_kfm(env, "ledger", "migrate").stdout
    return env, rows


def _listed(stdout: str) -> tuple[list[tuple[int, str]], str]:
    """(seq, commit) of each row line, and the summary line."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["SEQ", "COMMIT", "REPOSITORY", "BRANCH", "CREATED"]
    rows = [(int(x.split()[0]), x.split()[1]) for x in lines[1:-1]]
    return rows, lines[-1]


def test_the_newest_rows_and_their_cursor(ledger: tuple[dict[str, str], list[LedgerRow]]) -> None:
    env, rows = ledger
    got, summary = _listed(run_kfm(env, "ledger", "list", "--limit", "20").stdout)
    assert got == [(r.seq, r.lakefs_commit) for r in rows[-20:]]  # full commit ids, newest last
    assert summary.startswith(f"{N} rows, root ") and "(20 shown, 1 entry bundles read)" in summary
    assert summary.endswith(f"; older: --before {N - 20}")
    doc = json.loads(run_kfm(env, "ledger", "list", "--limit", "3", "--json").stdout)
    assert [r["seq"] for r in doc["rows"]] == [N - 3, N - 2, N - 1] and doc["next_before"] == N - 3
    assert doc["tree_size"] == N and doc["rows"][-1]["hash"] == rows[-1].hash
    got, _ = _listed(run_kfm(env, "ledger", "list", "--limit", "20", "--before", str(N - 20)).stdout)
    assert [s for s, _ in got] == list(range(N - 40, N - 20))


def test_filters_since_and_bad_input(ledger: tuple[dict[str, str], list[LedgerRow]]) -> None:
    env, _ = ledger
    got, summary = _listed(run_kfm(env, "ledger", "list", "--repo", "rare-repo").stdout)
    assert [s for s, _ in got] == list(RARE) and "older" not in summary
    got, _ = _listed(
        run_kfm(
            env, "ledger", "list", "--repo", "lakefs://kfm-main", "--branch", "feature/river-gauges", "--limit", "5"
        ).stdout
    )
    assert [s for s, _ in got] == [s for s in range(N) if s % 3 == 0 and s not in RARE][-5:]
    since = format_utc(T0 + timedelta(minutes=N - 7))
    got, summary = _listed(run_kfm(env, "ledger", "list", "--since", since).stdout)
    assert [s for s, _ in got] == list(range(N - 7, N))
    assert "2 entry bundles read" in summary and "older" not in summary
    for bad, says in (
        (["--limit", "0"], "between 1 and"),
        (["--before", "x"], "not a whole number"),
        (["--since", "yesterday"], "expected an RFC 3339 date"),
    ):
        r = run_kfm(env, "ledger", "list", *bad, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr and says in r.stderr, r.stderr


async def test_listing_never_reads_the_older_bundles(ledger: tuple[dict[str, str], list[LedgerRow]]) -> None:
    env, _ = ledger
    settings = load_settings({**os.environ, **env})
    async with open_bucket(settings) as b:
        first, _ = await b.get(entries_key(0, TILE_WIDTH), 1 << 24)
        await b.delete(entries_key(0, TILE_WIDTH))
        try:
            # The newest rows, the page that ends at the first bundle's edge, and a filter
            # filled before it all leave bundle 0 unread.
            assert len(_listed(run_kfm(env, "ledger", "list", "--limit", "300").stdout)[0]) == 300
            got, _ = _listed(run_kfm(env, "ledger", "list", "--limit", "10", "--before", str(TILE_WIDTH + 10)).stdout)
            assert [s for s, _ in got] == list(range(TILE_WIDTH, TILE_WIDTH + 10))
            got, summary = _listed(run_kfm(env, "ledger", "list", "--repo", "rare-repo", "--limit", "2").stdout)
            assert [s for s, _ in got] == [300, 700] and summary.endswith("; older: --before 300")
            # Reaching it is an error naming the missing object, in one line.
            r = run_kfm(env, "ledger", "list", "--repo", "rare-repo", "--before", "300", check=False)
            assert r.returncode != 0 and "Traceback" not in r.stderr
            assert re.search(r"entry bundle ledger/rows/\S+ is missing", r.stderr), r.stderr
        finally:
            await b.put(entries_key(0, TILE_WIDTH), first)
    got, _ = _listed(run_kfm(env, "ledger", "list", "--repo", "rare-repo", "--before", "300").stdout)
    assert [s for s, _ in got] == [5]


def test_export_draws_its_steps_in_a_terminal(ledger: tuple[dict[str, str], list[LedgerRow]], tmp_path: Path) -> None:
    """`kfm ledger export` in a terminal: a bar of rows read, then one of bytes uploaded; piped, one line."""
    env, rows = ledger
    run = run_in_terminal(env, "ledger", "export")
    assert run.returncode == 0, run.screen
    lines = run.lines()
    assert any(x.startswith("export: 100%|") and f"| {N}/{N} [" in x for x in lines), run.screen
    assert any(x.startswith("upload: 100%|") for x in lines), run.screen
    assert lines[-2] == f"exported {N} rows to s3://{env['KFM_S3_BUCKET']}/index/rollback-index.jsonl"
    piped = run_piped(env, "ledger", "export", "--out", str(tmp_path / "x.jsonl"))
    assert piped.stderr == "" and piped.stdout.splitlines() == [f"exported {N} rows to {tmp_path / 'x.jsonl'}"]
    assert (tmp_path / "x.jsonl").read_bytes() == b"".join(row_to_line(r) for r in rows)
