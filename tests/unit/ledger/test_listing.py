"""`kfm ledger list`'s page rules: newest first from the right edge, filters, cursor, early stop."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.ledger.factories import T0, make_body
from worker.ledger.chain import next_row
from worker.ledger.listing import Page, PageBuilder, RowFilter, bundles_backwards
from worker.ledger.row import LedgerRow, row_to_line
from worker.ledger.tiles import TILE_WIDTH
from worker.utc import format_utc

N = 3 * TILE_WIDTH + 40  # three full bundles and a partial one


def _repo(i: int) -> str:
    return "rare" if i in (5, 300, 700) else "kfm-main"


@pytest.fixture(scope="module")
def rows() -> list[LedgerRow]:
    out: list[LedgerRow] = []
    for i in range(N):
        out.append(next_row(out[-1] if out else None, make_body(i, lakefs_repo=_repo(i))))
    return out


def _bundles(rows: list[LedgerRow]) -> dict[int, bytes]:
    return {
        first: b"".join(row_to_line(r) for r in rows[first : first + TILE_WIDTH])
        for first in range(0, len(rows), TILE_WIDTH)
    }


def _page(rows: list[LedgerRow], limit: int, flt: RowFilter | None = None, before: int | None = None) -> Page:
    """Feed bundles newest first as the reader does, stopping when the builder says so."""
    data = _bundles(rows)
    end = len(rows) if before is None else min(before, len(rows))
    b = PageBuilder(limit, flt or RowFilter(), end)
    for _, first in bundles_backwards(end):
        if b.feed(first, data[first]):
            break
    return b.page()


def test_bundles_are_walked_from_the_right_edge() -> None:
    assert list(bundles_backwards(0)) == []
    assert list(bundles_backwards(1)) == [(0, 0)]
    assert list(bundles_backwards(TILE_WIDTH)) == [(0, 0)]
    assert list(bundles_backwards(TILE_WIDTH + 1)) == [(1, TILE_WIDTH), (0, 0)]


def test_the_last_rows_read_only_the_last_bundle(rows: list[LedgerRow]) -> None:
    page = _page(rows, 20)
    assert [r.seq for r in page.rows] == list(range(N - 20, N))  # oldest first, newest last
    assert page.bundles_read == 1
    assert page.next_before == N - 20


def test_a_page_across_a_bundle_boundary_reads_two(rows: list[LedgerRow]) -> None:
    page = _page(rows, 50)
    assert [r.seq for r in page.rows] == list(range(N - 50, N))
    assert page.bundles_read == 2


def test_paging_with_the_cursor_visits_every_row_once(rows: list[LedgerRow]) -> None:
    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        page = _page(rows, 100, before=before)
        seen = [r.seq for r in page.rows] + seen
        pages += 1
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == list(range(N)) and pages == (N + 99) // 100


def test_the_last_page_has_no_cursor(rows: list[LedgerRow]) -> None:
    page = _page(rows, 10, before=10)
    assert [r.seq for r in page.rows] == list(range(10)) and page.next_before is None
    assert _page(rows, 10, before=0).rows == ()


def test_a_rare_filter_scans_back_until_filled(rows: list[LedgerRow]) -> None:
    page = _page(rows, 2, RowFilter(repo="rare"))
    assert [r.seq for r in page.rows] == [300, 700]
    assert page.bundles_read == 3  # bundles 3, 2 and 1; bundle 0 not read
    assert page.next_before == 300  # full: row 5 is older
    rest = _page(rows, 2, RowFilter(repo="rare"), before=page.next_before)
    assert [r.seq for r in rest.rows] == [5] and rest.next_before is None
    assert _page(rows, 5, RowFilter(repo="none")).bundles_read == 4  # a filter nothing matches reads all


def test_branch_and_repo_filters_compare_exact_values(rows: list[LedgerRow]) -> None:
    page = _page(rows, 30, RowFilter(repo="kfm-main", branch="feature/river-gauges"))
    assert page.rows and all(
        r.lakefs_branch == "feature/river-gauges" and r.lakefs_repo == "kfm-main" for r in page.rows
    )
    assert all(r.seq % 3 == 0 for r in page.rows)
    # A prefix of a name is not the name.
    assert _page(rows, 5, RowFilter(repo="kfm")).rows == ()
    assert _page(rows, 5, RowFilter(branch="feature")).rows == ()


def test_since_stops_at_the_first_bundle_entirely_older(rows: list[LedgerRow]) -> None:
    # Row i was created at T0 + i minutes.
    since = T0 + timedelta(minutes=N - 30)
    page = _page(rows, 100, RowFilter(since=since))
    assert [r.seq for r in page.rows] == list(range(N - 30, N)) and page.next_before is None
    assert page.bundles_read == 2  # the partial bundle, then one bundle wholly older
    assert format_utc(since) <= page.rows[0].created_at


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        PageBuilder(0, RowFilter(), 10)
    with pytest.raises(ValueError):
        PageBuilder(10, RowFilter(), -1)
