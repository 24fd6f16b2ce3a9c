"""The topic set and its partition rules, in one place.

The writer topic has exactly one partition: that is what orders the ledger.
Everything else is keyed by ``repo/commit`` and may have more.
"""

from __future__ import annotations

from worker._internal.kafka import TopicSpec, ensure_topics
from worker.config import Settings
from worker.constants import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVENTS,
    TOPIC_GOVERNANCE,
    TOPIC_INDEX_CANDIDATES,
    TOPIC_LINEAGE,
    TOPIC_ROLLBACK_REQUESTS,
    TOPIC_ROLLBACK_RESULTS,
)

__all__ = ["DEAD_LETTER_HEADROOM", "EVENTS_PARTITIONS", "app_id", "ensure_all_topics", "topic_specs"]

EVENTS_PARTITIONS = 4
DEAD_LETTER_HEADROOM = 64 * 1024
"""Bytes a dead-letter record may have beyond the message it keeps (its headers, the batch framing)."""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topic
    return [
        TopicSpec(t(TOPIC_EVENTS), EVENTS_PARTITIONS),
        TopicSpec(t(TOPIC_INDEX_CANDIDATES), 1, exact=True),
        TopicSpec(t(TOPIC_GOVERNANCE), 1),
        TopicSpec(t(TOPIC_ROLLBACK_REQUESTS), EVENTS_PARTITIONS),
        TopicSpec(t(TOPIC_ROLLBACK_RESULTS), 1),
        TopicSpec(t(TOPIC_LINEAGE), 1),
        # A dead letter keeps a message of the largest accepted size, plus its headers.
        TopicSpec(t(TOPIC_DEAD_LETTER), 1,
                  configs={"max.message.bytes": str(settings.limits.max_message_bytes + DEAD_LETTER_HEADROOM)}),
        # Faust's leader-election topic for the app id (worker/app.py); the app
        # does not declare topics itself, so that partition counts stay ours.
        TopicSpec(f"{app_id(settings)}-__assignor-__leader", 1),
    ]


def app_id(settings: Settings) -> str:
    """The Faust app id and consumer group: registries sharing a cluster differ by prefix."""
    return f"{settings.topic_prefix}kfm-rollback-registry"


async def ensure_all_topics(settings: Settings) -> None:
    await ensure_topics(settings.kafka, topic_specs(settings), settings.kafka_timeout_s)
