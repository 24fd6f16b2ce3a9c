"""The index candidate: a stored bundle, described for the ledger writer.

Built with the ledger's own :class:`IndexCandidate` model, so the bundler
cannot publish what the writer would refuse.
"""

from __future__ import annotations

from worker.io.bundling import PublishedBundle
from worker.ledger.row import IndexCandidate

__all__ = ["candidate_of"]


def candidate_of(p: PublishedBundle, producer: str) -> IndexCandidate:
    e = p.event
    body = {
        "lakefs_repo": e.repository_id,
        "lakefs_branch": e.branch_id,
        "lakefs_commit": e.commit_id,
        "created_at": p.created_at,
        "producer": producer,
        "openlineage_run_id": p.run_id,
        "otel_trace_id": p.trace_id,
        "artifact_uri": p.artifact_uri,
        # The frozen STAC document inside the bundle, and the lakeFS ref it was read at.
        "data_snapshot": [
            {"stac": f"{p.artifact_uri}#{d['stac']}", "lakefs_ref": d["lakefs_ref"]} for d in p.data_snapshot
        ],
        "models": p.models,
        "configs": p.configs,
        "checksums": {"artifact_sha256": p.bundle_sha256},
        "signatures": {"in_toto": p.attestation_uri, "key_id": p.key_id},
        "energy_carbon": p.energy,
    }
    return IndexCandidate.model_validate(
        {
            "body": body,
            "bundle_sha256": p.bundle_sha256,
            "attestation_uri": p.attestation_uri,
            "request_id": e.request_id,
        },
        strict=False,
    )
