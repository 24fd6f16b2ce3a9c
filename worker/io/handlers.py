"""What each agent does with one message, without Faust in the way.

The retry policy lives here: a :class:`TransientError` is retried with
exponential backoff up to ``KFM_BUNDLE_RETRIES`` times; an
:class:`IntegrityError` (or exhausted retries) goes to the dead-letter topic
and a governance event, and the stream moves on. An event that cannot be read
(too large, not JSON, not a commit event) is dead-lettered before any work. Nothing is published to the
writer topic unless the bundle, its evidence and its attestation are stored.

Coverage bookkeeping (docs/coverage.md): the bundler marks a commit *seen*
when it starts on its event, and *failed* when it gives up on it, so the
reconciler neither asks for it again in a loop nor loses sight of it. A
reconciler request for a commit that has a row by the time it is consumed is
dropped before the rebuild (the ledger would only answer a duplicate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker import metrics
from worker.constants import TOPIC_INDEX_CANDIDATES
from worker.errors import ConfigError, Error, TransientError
from worker.events import CommitEvent, decode_event, event_key
from worker.io import markers
from worker.io.bundling import bundle_and_upload
from worker.io.candidates import candidate_of
from worker.io.dead_letters import Reason, Refusal, Source, dead_letter, decode_or_refuse
from worker.io.governance import emit
from worker.io.ledger_reader import LedgerReader
from worker.io.runtime import Runtime
from worker.keys import load_private_key
from worker.retry import retry_transient
from worker.tracing import context_from_headers, headers_with_trace, remote_context

__all__ = ["handle_commit_event", "signing_key"]

log = structlog.get_logger("kfm.bundler")


@cache
def _load_key(path: str) -> Ed25519PrivateKey:
    return load_private_key(Path(path))


def signing_key(rt: Runtime) -> Ed25519PrivateKey:
    if not rt.settings.signing_key:
        raise ConfigError("KFM_SIGNING_KEY must name the bundle signing key (kfm keys init creates one)")
    return _load_key(rt.settings.signing_key)


async def handle_commit_event(rt: Runtime, value: bytes | None, source: Source) -> bool:
    """Bundle the commit; return True if an index candidate was published."""
    event = decode_or_refuse(value, rt.settings.limits.max_message_bytes, decode_event)
    if isinstance(event, Refusal):
        await dead_letter(rt, source, value, event)
        return False
    assert value is not None  # decoded
    if not rt.settings.branch_watched(event.branch_id):
        log.info("bundle.skipped_unwatched_branch", branch_id=event.branch_id, source=event.source)
        return False
    structlog.contextvars.bind_contextvars(source=event.source)
    try:
        return await _bundle_event(rt, event, value, source)
    finally:
        structlog.contextvars.unbind_contextvars("source")


async def _bundle_event(rt: Runtime, event: CommitEvent, value: bytes, source: Source) -> bool:
    if event.source == "reconcile" and await _recorded(rt, event):
        # The webhook's event (same key, same partition, ahead of this one) won the race:
        # the writer would answer a duplicate anyway, so skip the rebuild.
        log.info("bundle.skipped_recorded", commit_id=event.commit_id)
        return False
    key = signing_key(rt)
    # The seen marker is written while the commit is staged, not before it (one round trip
    # less on the way to the row), and is done before the outcome, candidate or failure.
    seen = asyncio.ensure_future(
        _best_effort("bundle.seen_marker_failed", event, markers.mark_seen(rt.bucket, event))
    )
    parent = context_from_headers(list(source.headers))
    try:
        published = await retry_transient(
            lambda: bundle_and_upload(rt, event, key, parent), log, "bundle.retry",
            retries=rt.settings.bundle_retries, commit_id=event.commit_id,
        )
    except TransientError as e:
        await seen
        await _give_up(rt, event, value, source, Refusal(Reason.RETRIES_EXHAUSTED, f"retries exhausted: {e}"))
        return False
    except Error as e:
        await seen
        log.error("bundle.rejected", error=e.diagnostics(), commit_id=event.commit_id)
        await _give_up(rt, event, value, source, Refusal(Reason.FAILED, e.diagnostics()))
        return False
    except BaseException:
        seen.cancel()
        raise
    await seen
    candidate = candidate_of(published, rt.settings.producer_name).to_bytes()
    # Bookkeeping that must survive cancellation: the bundle is stored, so its
    # candidate must reach the writer even if the worker is being stopped.
    try:
        await asyncio.shield(
            rt.producer.send(
                rt.settings.topic(TOPIC_INDEX_CANDIDATES),
                candidate,
                key=event_key(event.repository_id, event.commit_id),
                # The writer's span for this row continues the bundle run's trace.
                headers=headers_with_trace(context=remote_context(published.trace_id, published.bundle_span_id)),
            )
        )
    except TransientError as e:
        # The bundle is stored but the broker is gone: a retryable failure, so the
        # reconciler asks again on its next passes (the rebuild finds the same bytes).
        await _give_up(rt, event, value, source,
                       Refusal(Reason.RETRIES_EXHAUSTED, f"candidate not published: {e}"))
        return False
    log.info("bundle.candidate_published", commit_id=event.commit_id, sha256=published.bundle_sha256)
    metrics.BUNDLES_BUILT.inc()
    return True


async def _give_up(rt: Runtime, event: CommitEvent, value: bytes, source: Source, refusal: Refusal) -> None:
    """Record a commit's bundle as failed: the marker in the bucket first, because it is
    what the reconciler and `kfm coverage` read; then the dead letter and the governance
    event, which need Kafka (often the very thing that is down when retries run out)."""
    reason, retryable = refusal.message, refusal.reason is Reason.RETRIES_EXHAUSTED
    metrics.BUNDLES_FAILED.labels(refusal.reason.value).inc()
    await _best_effort("bundle.failed_marker_failed", event,
                       markers.mark_failed(rt.bucket, event, reason, retryable=retryable))
    await dead_letter(rt, source, value, refusal)
    await _best_effort("bundle.failed_event_failed", event,
                       emit(rt, "bundle.failed", event, reason=reason, retryable=retryable))


async def _recorded(rt: Runtime, event: CommitEvent) -> bool:
    """Whether the commit has a ledger row; False when the ledger cannot be read (then bundle anyway)."""
    try:
        return await LedgerReader(rt.bucket).row_for(event.commit_id) is not None
    except Error as e:
        log.warning("bundle.row_lookup_failed", commit_id=event.commit_id, error=e.diagnostics())
        return False


async def _best_effort(what: str, event: CommitEvent, work: Coroutine[Any, Any, object]) -> None:
    """Bookkeeping that must not stop the stream: a lost marker costs one extra request
    later, a lost dead letter or event leaves the failure in the logs and the marker."""
    try:
        await work
    except Error as e:
        log.warning(what, commit_id=event.commit_id, error=e.diagnostics())

