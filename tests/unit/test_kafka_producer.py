"""Producer: a send waiting behind one that fails gets a fresh producer, not the abandoned one.

Found by the Kafka fault test (tests/faults/test_kafka_broker.py): two bundles publishing at once
while the broker died; the first send timed out and abandoned the producer with its transaction
open, the second (which had fetched that producer before taking the send lock) began another
transaction on it and aiokafka raised ``AssertionError: Invalid state transition IN_TRANSACTION
-> IN_TRANSACTION``, which no caller treats as transient.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from worker._internal import kafka
from worker.errors import TransientError


class _FakeProducer:
    made: ClassVar[list[_FakeProducer]] = []

    def __init__(self, **_: Any) -> None:
        self.in_transaction = False
        _FakeProducer.made.append(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def begin_transaction(self) -> None:
        assert not self.in_transaction, "Invalid state transition IN_TRANSACTION -> IN_TRANSACTION"
        self.in_transaction = True

    async def send_and_wait(self, topic: str, **_: Any) -> SimpleNamespace:
        if topic == "stalls":
            await asyncio.sleep(10)
        return SimpleNamespace(partition=0, offset=7)

    async def commit_transaction(self) -> None:
        self.in_transaction = False


async def test_a_send_queued_behind_a_failed_one_uses_a_new_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.made.clear()
    p = kafka.Producer("127.0.0.1:1", timeout_s=0.2)
    first = asyncio.create_task(p.send("stalls", b"a"))
    await asyncio.sleep(0.05)  # the first holds the send lock, its transaction open
    second = asyncio.create_task(p.send("fine", b"b"))
    with pytest.raises(TransientError):
        await first
    assert await second == (0, 7)
    assert len(_FakeProducer.made) == 2  # the abandoned producer was not reused
    await asyncio.sleep(0)
