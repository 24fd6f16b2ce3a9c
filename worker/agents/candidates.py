"""The index candidate: a stored bundle, described for the ledger writer.

Its shape is ``worker.ledger.row.IndexCandidate`` (body = the spec's row
fields); the writer validates it again at its own boundary.
"""

from __future__ import annotations

from worker.agents.bundling import PublishedBundle
from worker.canonical import canonical_bytes

__all__ = ["candidate_body", "candidate_of"]


def candidate_body(p: PublishedBundle, producer: str) -> dict[str, object]:
    e = p.event
    return {
        "lakefs_repo": e.repository_id,
        "lakefs_branch": e.branch_id,
        "lakefs_commit": e.commit_id,
        "created_at": p.created_at,
        "producer": producer,
        "openlineage_run_id": p.run_id,
        "otel_trace_id": p.trace_id,
        "artifact_uri": p.artifact_uri,
        "data_snapshot": p.data_snapshot,
        "models": p.models,
        "configs": p.configs,
        "checksums": {"artifact_sha256": p.bundle_sha256},
        "signatures": {"in_toto": p.attestation_uri, "key_id": p.key_id},
        "energy_carbon": p.energy,
    }


def candidate_of(p: PublishedBundle, producer: str = "kfm-worker") -> bytes:
    return canonical_bytes(
        {
            "body": candidate_body(p, producer),
            "bundle_sha256": p.bundle_sha256,
            "attestation_uri": p.attestation_uri,
            "request_id": p.event.request_id,
        }
    )
