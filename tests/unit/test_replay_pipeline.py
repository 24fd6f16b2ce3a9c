"""The replay's read-ahead: windows from the writer topic and bundles from the bucket.

Both readers run as tasks ahead of matching; what they read must arrive in
order and whole, and an error that stops either must reach the replay
instead of leaving it waiting for a window or a bundle that never comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from worker.errors import TransientError
from worker.io import ledger_audit
from worker.io.ledger_audit import _REPLAY_WINDOW, _Canonical, _feed_windows


def _topic(values: list[bytes], fail_after: int | None = None) -> Any:
    async def candidates(rt: object, progress: object = None) -> AsyncIterator[bytes]:
        for i, value in enumerate(values):
            if i == fail_after:
                raise TransientError("read kfm.index-candidates: Kafka: KafkaConnectionError")
            yield value

    return candidates


async def _drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while True:
        item = await asyncio.wait_for(queue.get(), timeout=5)
        items.append(item)
        if item is None or isinstance(item, Exception):
            return items


async def test_windows_arrive_in_order_and_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [b"%d" % i for i in range(2 * _REPLAY_WINDOW + 5)]
    monkeypatch.setattr(ledger_audit, "_candidates", _topic(values))
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)  # the reader waits for the matcher
    task = asyncio.create_task(_feed_windows(object(), queue))  # type: ignore[arg-type]
    items = await _drain(queue)
    await task
    assert [len(w) for w in items[:-1]] == [_REPLAY_WINDOW, _REPLAY_WINDOW, 5]
    assert items[-1] is None
    assert [v for w in items[:-1] for v in w] == values


async def test_a_topic_error_reaches_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [b"%d" % i for i in range(_REPLAY_WINDOW + 10)]
    monkeypatch.setattr(ledger_audit, "_candidates", _topic(values, fail_after=_REPLAY_WINDOW + 3))
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=3)
    await _feed_windows(object(), queue)  # type: ignore[arg-type]
    items = await _drain(queue)
    assert len(items[0]) == _REPLAY_WINDOW
    assert isinstance(items[1], TransientError)


class _Bundles:
    """A reader whose ``bundles`` yields entry bundles of three lines, failing after ``fail_after``."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count, self.fail_after = count, fail_after

    async def bundles(self, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
        for i in range(self.count):
            if i == self.fail_after:
                raise TransientError("s3 GET ledger/tile/entries/x000: connection refused")
            await asyncio.sleep(0)
            yield 3 * i, b"".join(b"line-%d\n" % (3 * i + j) for j in range(3))


async def test_stored_lines_arrive_in_order_and_the_cursor_moves() -> None:
    canonical = _Canonical(_Bundles(4), 12)  # type: ignore[arg-type]
    try:
        assert await canonical.ahead(5) == [b"line-%d" % i for i in range(5)]
        for _ in range(4):
            canonical.advance()
        assert canonical.position == 4 and canonical.last == b"line-3"
        assert await canonical.ahead(100) == [b"line-%d" % i for i in range(4, 12)]
        assert await canonical.peek() == b"line-4"
    finally:
        canonical.close()


async def test_a_bucket_error_reaches_the_replay() -> None:
    canonical = _Canonical(_Bundles(4, fail_after=2), 12)  # type: ignore[arg-type]
    try:
        assert await canonical.ahead(6) == [b"line-%d" % i for i in range(6)]
        with pytest.raises(TransientError, match="connection refused"):
            await asyncio.wait_for(canonical.ahead(7), timeout=5)
    finally:
        canonical.close()


async def test_an_empty_ledger_reads_nothing() -> None:
    canonical = _Canonical(_Bundles(0), 0)  # type: ignore[arg-type]
    assert await canonical.ahead(10) == [] and await canonical.peek() is None
    canonical.close()
