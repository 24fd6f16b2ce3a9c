"""Checking entry bundles apart (a process pool) and linking them gives the chain check's verdicts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.unit.ledger.factories import make_body, make_chain
from tests.unit.ledger.paths import PATHS, using
from worker.errors import VerificationError
from worker.io.ledger_audit import _BundleChecker
from worker.ledger import merkle
from worker.ledger.chain import LineChecker, check_bundle, next_row
from worker.ledger.row import leaf_bytes

ROWS = make_chain(700)
LINES = [leaf_bytes(r) for r in ROWS]


@pytest.fixture(autouse=True, scope="module", params=PATHS)
def scan_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on the pure Python scan and on the native one."""
    with using(request.param):
        yield request.param


def bundles(lines: list[bytes]) -> list[tuple[int, bytes]]:
    return [(i, b"".join(x + b"\n" for x in lines[i : i + 256])) for i in range(0, len(lines), 256)]


def link(parts: list[tuple[int, bytes]], start: int = 0) -> LineChecker:
    checker = LineChecker()
    for first, data in parts:
        checker.absorb(check_bundle(data, first, max(0, start - first)))
    return checker


def test_linked_bundles_equal_the_line_by_line_check() -> None:
    checker = link(bundles(LINES))
    one = LineChecker()
    for line in LINES:
        one.check(line)
    assert (checker.seq, checker.prev) == (one.seq, one.prev) == (700, one.prev)
    part = check_bundle(bundles(LINES)[1][1], 256)
    assert part.leaf_hashes[:32] == merkle.leaf_hash(LINES[256])


def test_a_bad_row_is_named_inside_its_bundle() -> None:
    lines = list(LINES)
    lines[300] = lines[300].replace(b'"producer":"a', b'"producer":"b')
    with pytest.raises(VerificationError, match=r"seq=300 \(line 301\): hash mismatch"):
        link(bundles(lines))


def test_a_break_between_bundles_is_named() -> None:
    # Rows 256.. of another history: a valid bundle on its own, not linked to row 255.
    tail = None
    other = []
    for i in range(512):
        tail = next_row(tail, make_body(i + 1000))
        other.append(leaf_bytes(tail))
    checker = LineChecker()
    checker.absorb(check_bundle(bundles(LINES)[0][1], 0))
    with pytest.raises(VerificationError, match=r"seq=256 \(line 257\): prev mismatch"):
        checker.absorb(check_bundle(bundles(other)[1][1], 256))


def test_duplicate_commits_across_bundles_are_found() -> None:
    rows = make_chain(300)
    dup = next_row(rows[-1], rows[5].body())
    lines = [leaf_bytes(r) for r in rows] + [leaf_bytes(dup)]
    assert link(bundles(lines)).duplicate_commits() == [(5, 300)]


def test_duplicate_commits_in_a_range_are_named_by_their_seqs() -> None:
    """A check that starts mid-ledger (``verify --from``) names duplicates by seq, not by position."""
    rows = make_chain(600)
    dup = next_row(rows[-1], rows[450].body())
    lines = [leaf_bytes(r) for r in rows] + [leaf_bytes(dup)]
    checker = LineChecker(seq=300, prev=hashlib.sha256(lines[299]).hexdigest())
    for first, data in bundles(lines)[1:]:
        checker.absorb(check_bundle(data, first, max(0, 300 - first)))
    assert checker.seq == 601
    assert checker.duplicate_commits() == [(450, 600)]


def test_a_range_may_start_mid_bundle() -> None:
    checker = LineChecker(seq=300, prev=hashlib.sha256(LINES[299]).hexdigest())
    for first, data in bundles(LINES)[1:]:
        checker.absorb(check_bundle(data, first, max(0, 300 - first)))
    assert checker.seq == 700


def _through_pool(parts: list[tuple[int, bytes]]) -> tuple[str, LineChecker, list[int]]:
    async def go() -> tuple[str, LineChecker, list[int]]:
        async def source() -> AsyncIterator[tuple[int, bytes]]:
            for b in parts:
                yield b

        checker = LineChecker()
        firsts = []
        async with _BundleChecker(1 << 20) as pool:  # above the threshold: uses the pool
            kind = type(pool._pool).__name__
            async for first, _, part in pool.stream(source(), 0):
                checker.absorb(part)
                firsts.append(first)
        return kind, checker, firsts

    return asyncio.run(go())


def test_the_pool_gives_the_same_results_in_order(scan_path: str) -> None:
    kind, checker, firsts = _through_pool(bundles(LINES))
    # Threads with the native scan (it holds no GIL), processes on the pure path.
    assert kind == ("ThreadPoolExecutor" if scan_path == "native" else "ProcessPoolExecutor")
    assert checker.seq == 700
    assert firsts == [0, 256, 512]
    assert checker.prev == hashlib.sha256(LINES[-1]).hexdigest()


def test_a_bad_row_checked_in_the_pool_is_named() -> None:
    lines = list(LINES)
    lines[300] = lines[300].replace(b'"seq":300', b'"seq":301')
    with pytest.raises(VerificationError, match="seq=30[01]"):
        _through_pool(bundles(lines))
