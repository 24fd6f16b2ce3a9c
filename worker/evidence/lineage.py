"""OpenLineage RunEvents for a bundling (or rollback) run.

Plain dicts following the OpenLineage 2-0-2 spec, because the only thing we
do with them is serialise, store, and publish them to the lineage transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from worker.utc import format_utc

__all__ = ["dataset", "run_event"]

PRODUCER = "https://kfm.local/rollback-registry"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
# The OpenLineage job namespace of every run this registry reports (bundles and rollbacks).
JOB_NAMESPACE = "kfm.rollback-registry"


def dataset(namespace: str, name: str, facets: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "facets": facets or {}}


def run_event(
    event_type: Literal["START", "COMPLETE", "FAIL"],
    *,
    run_id: str,
    job_namespace: str,
    job_name: str,
    event_time: datetime,
    inputs: Sequence[dict[str, Any]] = (),
    outputs: Sequence[dict[str, Any]] = (),
    run_facets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One RunEvent.

    Raises:
        ValueError: ``event_time`` is not timezone-aware UTC.
    """
    return {
        "eventType": event_type,
        "eventTime": format_utc(event_time),
        "run": {"runId": run_id, "facets": run_facets or {}},
        "job": {"namespace": job_namespace, "name": job_name, "facets": {}},
        "inputs": list(inputs),
        "outputs": list(outputs),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }
