"""Governance events: what happened to bundles, ledger and rollbacks, for downstream consumers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.agents.runtime import Runtime
from worker.canonical import canonical_bytes
from worker.constants import TOPIC_GOVERNANCE
from worker.events import CommitEvent, event_key
from worker.utc import format_utc

__all__ = ["emit", "emit_raw"]


async def emit(rt: Runtime, kind: str, event: CommitEvent, **fields: Any) -> None:
    """A governance event about a commit event; ``source`` says what asked for it (webhook, checkpoint, reconcile)."""
    await emit_raw(rt, kind, event.repository_id, event.commit_id, source=event.source, **fields)


async def emit_raw(rt: Runtime, kind: str, repo: str, commit: str, **fields: Any) -> None:
    body = {
        "type": kind,
        "time": format_utc(datetime.now(UTC)),
        "lakefs_repo": repo,
        "lakefs_commit": commit,
        **fields,
    }
    await rt.producer.send(rt.settings.topic(TOPIC_GOVERNANCE), canonical_bytes(body), key=event_key(repo, commit))
