"""Every name shared between processes: topics, headers, storage keys.

One place, so that hooks, agents, CLI and tests cannot drift apart
(the arq ``constants.py`` habit).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ARTIFACTS_PREFIX",
    "ATTESTATIONS_PREFIX",
    "CHECKPOINTS_PREFIX",
    "DSSE_PAYLOAD_TYPE",
    "EVIDENCE_PREFIX",
    "HEADER_DEAD_LETTER_AGENT",
    "HEADER_DEAD_LETTER_MESSAGE",
    "HEADER_DEAD_LETTER_OFFSET",
    "HEADER_DEAD_LETTER_PARTITION",
    "HEADER_DEAD_LETTER_REASON",
    "HEADER_DEAD_LETTER_SHA256",
    "HEADER_DEAD_LETTER_SIZE",
    "HEADER_DEAD_LETTER_TOPIC",
    "HEADER_REQUEST_ID",
    "HEADER_TRACEPARENT",
    "HOOK_TOKEN_HEADER",
    "INDEX_JSONL_KEY",
    "INDEX_PARQUET_KEY",
    "INDEX_PARQUET_PREFIX",
    "LEDGER_CHECKPOINT_KEY",
    "LEDGER_COMMITS_PREFIX",
    "LEDGER_HEAD_KEY",
    "META_PREFIX",
    "ROLLBACKS_PREFIX",
    "TOPIC_DEAD_LETTER",
    "TOPIC_EVENTS",
    "TOPIC_GOVERNANCE",
    "TOPIC_INDEX_CANDIDATES",
    "TOPIC_LINEAGE",
    "TOPIC_ROLLBACK_REQUESTS",
    "TOPIC_ROLLBACK_RESULTS",
]

# Kafka topics (defaults; each can be prefixed with KFM_TOPIC_PREFIX).
TOPIC_EVENTS: Final = "kfm.lakefs.events"
# The writer topic: exactly one partition, so one agent appends in total order.
TOPIC_INDEX_CANDIDATES: Final = "kfm.ledger.candidates"
TOPIC_GOVERNANCE: Final = "kfm.governance"
TOPIC_ROLLBACK_REQUESTS: Final = "kfm.rollback.requests"
TOPIC_ROLLBACK_RESULTS: Final = "kfm.rollback.results"
# OpenLineage transport: RunEvents as JSON (the OpenLineage Kafka transport's shape).
TOPIC_LINEAGE: Final = "kfm.openlineage"
# Every message an agent refused, and commits the bundler gave up on (docs/dead-letters.md).
TOPIC_DEAD_LETTER: Final = "kfm.dead-letters"
EVIDENCE_PREFIX: Final = "evidence/"

# HTTP / Kafka headers.
HOOK_TOKEN_HEADER: Final = "X-KFM-Hook-Token"  # noqa: S105 - a header name, not a secret
HEADER_TRACEPARENT: Final = "traceparent"
HEADER_REQUEST_ID: Final = "kfm-request-id"
# A dead letter's headers: why it was refused, and where the message came from.
HEADER_DEAD_LETTER_REASON: Final = "kfm-dl-reason"
HEADER_DEAD_LETTER_MESSAGE: Final = "kfm-dl-message"
HEADER_DEAD_LETTER_AGENT: Final = "kfm-dl-agent"
HEADER_DEAD_LETTER_TOPIC: Final = "kfm-dl-topic"
HEADER_DEAD_LETTER_PARTITION: Final = "kfm-dl-partition"
HEADER_DEAD_LETTER_OFFSET: Final = "kfm-dl-offset"
HEADER_DEAD_LETTER_SIZE: Final = "kfm-dl-size"
HEADER_DEAD_LETTER_SHA256: Final = "kfm-dl-sha256"

# Registry bucket layout (docs/spec.md, "Bucket layout").
ARTIFACTS_PREFIX: Final = "artifacts/"
ATTESTATIONS_PREFIX: Final = "attestations/"
CHECKPOINTS_PREFIX: Final = "checkpoints/"
META_PREFIX: Final = "meta/"
# One folder per rollback request: claim, result, story, lineage, published STAC (docs/rollback.md).
ROLLBACKS_PREFIX: Final = "rollbacks/"
# The ledger (docs/ledger.md): tiles and entry bundles under ledger/ (worker.ledger.tiles),
# the writer's commit point, the public checkpoint, one immutable row object per commit.
LEDGER_HEAD_KEY: Final = "ledger/head"
LEDGER_CHECKPOINT_KEY: Final = "ledger/checkpoint"
LEDGER_COMMITS_PREFIX: Final = "ledger/commits/"
# Derived views: the single JSONL file (`kfm ledger export`; the layout before tiles),
# and the Parquet mirror as a dataset of one file per entry bundle.
INDEX_JSONL_KEY: Final = "index/rollback-index.jsonl"
INDEX_PARQUET_KEY: Final = "index/rollback-index.parquet"
INDEX_PARQUET_PREFIX: Final = "index/rollback-index.parquet/"

DSSE_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
