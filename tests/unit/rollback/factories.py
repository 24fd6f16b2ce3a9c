"""Requests and ledger rows for the rollback tests, from fixed values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.unit.ledger.factories import make_body
from worker.ledger.chain import next_row
from worker.ledger.row import LedgerRow
from worker.rollback.request import RollbackRequest

COMMIT = "a1b2c3d4e5f6" + "0" * 52
HEAD = "ffeeddccbbaa" + "1" * 52
DIGEST = "d" * 64


def request(**changes: Any) -> RollbackRequest:
    fields: dict[str, Any] = {
        "request_id": "req-2026-000042", "lakefs_repo": "kfm-main", "commit": COMMIT, "target_branch": "prod",
        "requested_by": "alice", "reason": "bad tiles", "requested_at": datetime(2026, 11, 26, 10, tzinfo=UTC),
    }
    return RollbackRequest(**{**fields, **changes})


def row(**changes: Any) -> LedgerRow:
    body: dict[str, Any] = {
        "lakefs_repo": "kfm-main", "lakefs_commit": COMMIT,
        "artifact_uri": f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst",
        "checksums": {"artifact_sha256": DIGEST},
        "signatures": {"in_toto": f"s3://kfm-registry/attestations/{COMMIT}.intoto.jsonl", "key_id": "k"},
    }
    return next_row(None, make_body(1, **{**body, **changes}))
