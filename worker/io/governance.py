"""Governance events: what happened to bundles, ledger and rollbacks, for downstream consumers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from worker.canonical import canonical_bytes
from worker.config import Settings
from worker.constants import TOPIC_GOVERNANCE
from worker.events import CommitEvent, event_key
from worker.utc import format_utc

__all__ = ["Publisher", "Sender", "emit", "emit_raw"]


class Sender(Protocol):
    """The producer call an event needs (:class:`worker._internal.kafka.Producer`)."""

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None) -> tuple[int, int]: ...


class Publisher(Protocol):
    """The part of a runtime that publishes: topic names and a producer. Narrow, so a
    handler tested with in-memory fakes can report events too."""

    @property
    def settings(self) -> Settings: ...
    @property
    def producer(self) -> Sender: ...


async def emit(rt: Publisher, kind: str, event: CommitEvent, **fields: Any) -> None:
    """A governance event about a commit event; ``source`` says what asked for it (webhook, checkpoint, reconcile)."""
    await emit_raw(rt, kind, event.repository_id, event.commit_id, source=event.source, **fields)


async def emit_raw(rt: Publisher, kind: str, repo: str, commit: str, **fields: Any) -> None:
    body = {
        "type": kind,
        "time": format_utc(datetime.now(UTC)),
        "lakefs_repo": repo,
        "lakefs_commit": commit,
        **fields,
    }
    await rt.producer.send(rt.settings.topic(TOPIC_GOVERNANCE), canonical_bytes(body), key=event_key(repo, commit))
