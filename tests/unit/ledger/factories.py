"""Deterministic rows, candidates and keys for the ledger tests.

Everything derives from an integer, and the clock is pinned (``T0``), so the
same test builds the same bytes every run.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker.ledger.chain import next_row
from worker.ledger.row import IndexCandidate, LedgerRow, RowBody, row_to_line
from worker.utc import format_utc

__all__ = [
    "T0",
    "body_dict",
    "commit_id",
    "digest",
    "fixed_key",
    "make_body",
    "make_candidate",
    "make_chain",
    "to_jsonl",
]

T0 = datetime(2025, 11, 30, 12, 0, 0, tzinfo=UTC)


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def commit_id(i: int) -> str:
    return digest(f"commit-{i}")


def fixed_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def body_dict(i: int) -> dict[str, Any]:
    """A body as JSON would carry it; rows vary so that every shape gets exercised."""
    commit = commit_id(i)
    uri = f"s3://kfm-registry/artifacts/{commit}.tar.zst"
    return {
        "lakefs_repo": "kfm-main",
        "lakefs_branch": "prod" if i % 3 else "feature/river-gauges",
        "lakefs_commit": commit,
        # Mixed precision: whole seconds and microseconds both round-trip.
        "created_at": format_utc(T0 + timedelta(minutes=i, microseconds=(i % 2) * 250_000)),
        "producer": "airflow:dag=kfm-promote",
        "openlineage_run_id": f"{i:08x}-0000-4000-8000-{i:012x}",
        "otel_trace_id": f"{i:032x}" if i % 4 else "",
        "artifact_uri": uri,
        "data_snapshot": [
            {
                "stac": f"s3://kfm-stac/collections/c{j}/collection.json",
                "lakefs_ref": f"lakefs://kfm-main/{commit}/stac/c{j}/",
            }
            for j in range(i % 3)
        ],
        "models": [
            {
                "name": "focus-transformer",
                "version": f"3.{i}.0",
                "uri": f"s3://models/focus-transformer/3.{i}.0.bin",
                "sha256": digest(f"model-{i}"),
            }
        ]
        if i % 2
        else [],
        "configs": [
            {"path": "configs/pipeline.yaml", "sha256": digest(f"config-{i}")},
            {"path": "configs/ünïcode name.yaml", "sha256": digest(f"config2-{i}")},
        ],
        "checksums": {"artifact_sha256": digest(f"bundle-{i}")},
        "signatures": {
            "in_toto": f"s3://kfm-registry/attestations/{commit}.intoto.jsonl",
            "key_id": "kfm-bundler-2025",
        },
        "energy_carbon": {
            # 1.0 encodes as "1", 1e-07 in exponent form: both must round-trip.
            "kwh": [1.72, 1.0, 1e-07, 0.0][i % 4] + (i if i % 4 == 0 else 0),
            "co2e_kg": round(0.81 * (i + 1), 6),
            "method": "kwh=(cpu_s*15.0W+wall_s*0.0W)/3.6e6; co2e_kg=kwh*0.4",
        },
    }


def make_body(i: int, **overrides: Any) -> RowBody:
    # Through JSON, as the bundler's message arrives: strict validation, no coercion.
    return RowBody.model_validate_json(json.dumps({**body_dict(i), **overrides}))


def make_candidate(i: int, *, body: RowBody | None = None, request_id: str = "") -> IndexCandidate:
    body = body or make_body(i)
    return IndexCandidate(
        body=body,
        bundle_sha256=body.checksums.artifact_sha256,
        attestation_uri=body.signatures.in_toto,
        request_id=request_id or f"req-{i}",
    )


def make_chain(n: int) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    for i in range(n):
        rows.append(next_row(rows[-1] if rows else None, make_body(i)))
    return rows


def to_jsonl(rows: list[LedgerRow]) -> bytes:
    return b"".join(row_to_line(r) for r in rows)
