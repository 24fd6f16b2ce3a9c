"""Dead letters: every message an agent refuses, kept with why and where it came from.

Why one topic for all agents: an operator watches one place, and a dead letter
says its source topic, partition and offset in its headers. Why the original
bytes as the record's value (metadata in headers, as Kafka Connect does): a
dead letter can be read with any Kafka tool and, once the cause is fixed,
published again as it is. The format is in docs/dead-letters.md.

A refused message never stops an agent: it is dead-lettered, reported, and
the stream moves on. Only the message's own fault is dead-lettered (it cannot
be read, or what it refers to does not verify); a valid message whose work
fails on the world's state is answered the usual way (a rejected rollback
result, a governance event) instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

import structlog
from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from worker.config import Settings
from worker.constants import (
    HEADER_DEAD_LETTER_AGENT,
    HEADER_DEAD_LETTER_MESSAGE,
    HEADER_DEAD_LETTER_OFFSET,
    HEADER_DEAD_LETTER_PARTITION,
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_SHA256,
    HEADER_DEAD_LETTER_SIZE,
    HEADER_DEAD_LETTER_TOPIC,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    TOPIC_DEAD_LETTER,
)
from worker.errors import Error, IntegrityError, TransientError, VerificationError
from worker.retry import retry_transient

__all__ = ["Reason", "Refusal", "Source", "classify", "dead_letter", "decode_or_refuse", "one_line", "record",
           "refusal_of", "screen"]

T = TypeVar("T")

log = structlog.get_logger("kfm.dead_letters")

# Longest one-line message kept in a header: enough for any of our errors.
_MAX_MESSAGE_CHARS = 500
# Headers of the source record worth keeping: ours, and never a secret.
_KEPT_HEADERS = frozenset({HEADER_TRACEPARENT, HEADER_REQUEST_ID})
# How often a dead letter is retried before it is given up (logged) and the stream moves on.
_PUBLISH_RETRIES = 2
# Pydantic error types that mean "not this kind of message" rather than "a bad value in it".
_SHAPE_ERRORS = frozenset({"missing", "extra_forbidden", "model_type", "model_attributes_type", "dict_type"})


class Reason(StrEnum):
    """Why a message was refused; the value is the ``kfm-dl-reason`` header."""

    OVERSIZED = "oversized"  # longer than KFM_LIMIT_MESSAGE_MAX_BYTES; not parsed at all
    MALFORMED = "malformed"  # no value (a tombstone), not UTF-8, or not JSON
    WRONG_TYPE = "wrong_type"  # JSON, but not this topic's message: other fields, or a field of the wrong type
    INVALID = "invalid"  # this topic's message, with a value its rules refuse (a bad commit id, ...)
    BAD_SIGNATURE = "bad_signature"  # the attestation it refers to has a signature by a trusted key that fails
    UNKNOWN_KEY = "unknown_key"  # the attestation it refers to is signed by no trusted key
    UNVERIFIED = "unverified"  # what it refers to does not match (another digest, commit, key or bundle)
    REJECTED = "rejected"  # any other refusal of the message itself
    FAILED = "failed"  # the bundler gave up on the commit for good (an integrity error)
    RETRIES_EXHAUSTED = "retries_exhausted"  # the bundler's retries of a transient failure ran out


@dataclass(frozen=True)
class Source:
    """Where a message came from: what a dead letter needs to point back at it."""

    agent: str
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    message: str


class _Sender(Protocol):
    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[int, int]: ...


class _Runtime(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def producer(self) -> _Sender: ...


def screen(value: bytes | None, max_bytes: int) -> Refusal | None:
    """The checks made before any parsing: a value is there and within the size limit."""
    if value is None:
        return Refusal(Reason.MALFORMED, "no value (a tombstone)")
    if len(value) > max_bytes:
        return Refusal(Reason.OVERSIZED, f"{len(value)} bytes, larger than the limit of {max_bytes}")
    return None


def decode_or_refuse(value: bytes | None, max_bytes: int, decode: Callable[[bytes], T]) -> T | Refusal:
    """``decode(value)`` after :func:`screen`, or why the message is refused.

    ``decode`` raises :class:`IntegrityError` (chained to the pydantic error, if any) on bad input.
    """
    refused = screen(value, max_bytes)
    if refused is not None:
        return refused
    assert value is not None  # screen refuses a missing value
    try:
        return decode(value)
    except IntegrityError as e:
        return refusal_of(e)


def classify(e: IntegrityError) -> Reason:
    """The reason code of a refusal, from the error that refused the message.

    Why from the error: the decoders and verifiers already say what is wrong;
    a second set of checks here could disagree with them.
    """
    cause = e.__cause__
    if isinstance(cause, ValidationError):
        return _validation_reason(cause)
    if isinstance(e, VerificationError):
        if _caused_by(e, InvalidSignature) or "signature by key" in str(e):
            return Reason.BAD_SIGNATURE
        if "no signature by a trusted key" in str(e):
            return Reason.UNKNOWN_KEY
        return Reason.UNVERIFIED
    return Reason.REJECTED


def _validation_reason(e: ValidationError) -> Reason:
    types = {err["type"] for err in e.errors(include_url=False, include_input=False)}
    if "json_invalid" in types or "json_type" in types:
        return Reason.MALFORMED
    if types & _SHAPE_ERRORS or any(t.endswith("_type") for t in types):
        return Reason.WRONG_TYPE
    return Reason.INVALID


def _caused_by(e: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = e
    for _ in range(8):  # a cause chain is short; a cycle must not loop
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def one_line(text: str) -> str:
    """A message fit for one header: no control characters, bounded."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 3] + "..."


def record(
    source: Source, value: bytes | None, refusal: Refusal, max_bytes: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter's value and headers (docs/dead-letters.md).

    The value is the source value as it arrived, cut at ``max_bytes`` (only an
    oversized message is cut; its size and SHA-256 are in the headers).
    """
    data = value or b""
    headers = [(k, v) for k, v in source.headers if k in _KEPT_HEADERS]
    headers += [
        (HEADER_DEAD_LETTER_REASON, refusal.reason.value.encode()),
        (HEADER_DEAD_LETTER_MESSAGE, one_line(refusal.message).encode()),
        (HEADER_DEAD_LETTER_AGENT, source.agent.encode()),
        (HEADER_DEAD_LETTER_TOPIC, source.topic.encode()),
        (HEADER_DEAD_LETTER_PARTITION, str(source.partition).encode()),
        (HEADER_DEAD_LETTER_OFFSET, str(source.offset).encode()),
        (HEADER_DEAD_LETTER_SIZE, str(len(data) if value is not None else -1).encode()),
        (HEADER_DEAD_LETTER_SHA256, hashlib.sha256(data).hexdigest().encode()),
    ]
    return data[:max_bytes], headers


async def dead_letter(rt: _Runtime, source: Source, value: bytes | None, refusal: Refusal) -> None:
    """Publish the dead letter and log the refusal; never raises an :class:`Error`.

    Why it never raises: the agent must move on. A broker that stays down past
    the retries leaves the refusal in the log with its source coordinates (the
    message itself is still in its topic).
    """
    settings = rt.settings
    log.warning("dead_letter", reason=refusal.reason.value, message=one_line(refusal.message), agent=source.agent,
                topic=source.topic, partition=source.partition, offset=source.offset)
    body, headers = record(source, value, refusal, settings.limits.max_message_bytes)
    try:
        await retry_transient(
            lambda: rt.producer.send(settings.topic(TOPIC_DEAD_LETTER), body, key=source.key, headers=headers),
            log, "dead_letter.retrying", retries=_PUBLISH_RETRIES,
        )
    except (TransientError, Error) as e:
        log.error("dead_letter.lost", reason=refusal.reason.value, topic=source.topic, partition=source.partition,
                  offset=source.offset, error=e.diagnostics())


def refusal_of(e: IntegrityError) -> Refusal:
    return Refusal(classify(e), str(e))
