"""The one retry loop: transient failures are retried with capped exponential backoff.

Why one loop: the retry policy is the error families of :mod:`worker.errors`
(transient and conflict errors retried, integrity errors never), and three
hand-written copies had already drifted in what they logged and where they
gave up. Cancellation is never retried: it propagates at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from worker.errors import TransientError

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "retry_transient"]

T = TypeVar("T")

FIRST_DELAY_S = 0.5
"""Pause before the first retry; each further pause doubles."""
MAX_DELAY_S = 30.0
"""Longest pause between two tries: a dependency back after an outage is noticed within this."""

async def retry_transient(
    attempt: Callable[[], Awaitable[T]],
    log: Any,
    event: str,
    *,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    retries: int | None = None,
    before_retry: Callable[[], Awaitable[None]] | None = None,
    **context: Any,
) -> T:
    """Await ``attempt()`` until it returns, retrying the ``retry_on`` errors.

    Args:
        attempt: makes one try (a fresh coroutine per call).
        log: the caller's structlog logger, so the warning keeps its name.
        event: the warning logged before each retry, with the error, the
            retry's number and ``context``.
        retry_on: the error classes worth another try.
        retries: how many retries at most; ``None`` retries for ever (an agent
            that must not skip its message).
        before_retry: run after the pause, before the next try (to reload
            state a conflict showed to be stale).

    Raises:
        The last ``retry_on`` error once ``retries`` are used up; any other
        error at once.
    """
    delay = FIRST_DELAY_S
    done = 0
    while True:
        try:
            return await attempt()
        except retry_on as e:
            if retries is not None and done >= retries:
                raise
            done += 1
            log.warning(event, attempt=done, error=str(e), **context)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            if before_retry is not None:
                await before_retry()
