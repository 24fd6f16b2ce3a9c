"""OpenLineage RunEvents for a bundling (or rollback) run.

Built with the ``openlineage-python`` client's typed model, so every event has
the shape of the OpenLineage 2-0-2 schema (UUID run ids, ``producer`` and
``schemaURL`` on the event, ``_producer`` and ``_schemaURL`` on every facet),
and returned as plain JSON-ready dicts because all we do with them is
serialise, store and publish them.

Dataset names follow OpenLineage's naming rules: an S3 object is namespace
``s3://<bucket>`` and name ``<key>``. :func:`bundle_dataset` is the one place
a bundle becomes a dataset, so the bundle a bundling run writes and the bundle
a rollback run reads are the same dataset to a lineage backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import attr
from openlineage.client.generated.base import (
    DatasetFacet,
    EventType,
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunFacet,
)
from openlineage.client.naming.dataset import S3
from openlineage.client.serde import Serde

from worker.ids import split_s3_uri
from worker.utc import format_utc

__all__ = [
    "DIGEST_FACET",
    "DIGEST_FACET_SCHEMA_URL",
    "JOB_NAMESPACE",
    "PRODUCER",
    "SCHEMA_URL",
    "Dataset",
    "KfmDigestDatasetFacet",
    "bundle_dataset",
    "bundle_events",
    "dataset",
    "run_event",
]

PRODUCER: Final = "https://kfm.local/rollback-registry"
SCHEMA_URL: Final = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
# The OpenLineage job namespace of every run this registry reports (bundles and rollbacks).
JOB_NAMESPACE: Final = "kfm.rollback-registry"
# Custom facet: key ``{prefix}_{name}`` and class ``{Prefix}{Name}DatasetFacet``, as the
# spec asks of custom facets; its schema is docs/schemas/KfmDigestDatasetFacet.json.
DIGEST_FACET: Final = "kfm_digest"
DIGEST_FACET_SCHEMA_URL: Final = (
    "https://kfm.local/rollback-registry/spec/facets/1-0-0/KfmDigestDatasetFacet.json"
    "#/$defs/KfmDigestDatasetFacet"
)


@attr.define
class KfmDigestDatasetFacet(DatasetFacet):
    """The SHA-256 of an immutable object (a bundle), so a lineage backend can tell
    which bytes a run wrote or read without fetching them."""

    sha256: str

    @staticmethod
    def _get_schema() -> str:
        return DIGEST_FACET_SCHEMA_URL


@attr.define(frozen=True)
class Dataset:
    """A dataset as a run sees it; input or output only once it is put in an event."""

    namespace: str
    name: str
    facets: dict[str, DatasetFacet] = attr.field(factory=dict)


def dataset(namespace: str, name: str, facets: dict[str, DatasetFacet] | None = None) -> Dataset:
    return Dataset(namespace, name, facets or {})


def bundle_dataset(artifact_uri: str, sha256: str) -> Dataset:
    """The bundle at ``s3://<bucket>/<key>`` as OpenLineage names an S3 object.

    Raises:
        ValueError: ``artifact_uri`` is not an ``s3://`` URI with a bucket and a key.
    """
    bucket, key = split_s3_uri(artifact_uri)
    naming = S3(bucket_name=bucket, object_key=key)
    return dataset(
        naming.get_namespace(), naming.get_name(),
        {DIGEST_FACET: KfmDigestDatasetFacet(sha256=sha256, producer=PRODUCER)},
    )


def run_event(
    event_type: Literal["START", "COMPLETE", "FAIL"],
    *,
    run_id: str,
    job_namespace: str,
    job_name: str,
    event_time: datetime,
    inputs: Sequence[Dataset] = (),
    outputs: Sequence[Dataset] = (),
    run_facets: dict[str, RunFacet] | None = None,
) -> dict[str, Any]:
    """One RunEvent as a JSON-ready dict.

    Raises:
        ValueError: ``event_time`` is not timezone-aware UTC, or ``run_id`` is not a UUID.
    """
    event = RunEvent(
        eventType=EventType(event_type),
        eventTime=format_utc(event_time),
        run=Run(runId=run_id, facets=run_facets or {}),
        job=Job(namespace=job_namespace, name=job_name, facets={}),
        inputs=[InputDataset(namespace=d.namespace, name=d.name, facets=dict(d.facets)) for d in inputs],
        outputs=[OutputDataset(namespace=d.namespace, name=d.name, facets=dict(d.facets)) for d in outputs],
        producer=PRODUCER,
    )
    return Serde.to_dict(event)


def bundle_events(
    *, repository: str, commit: str, artifact_uri: str, sha256: str, run_id: str,
    started: datetime, finished: datetime,
) -> list[dict[str, Any]]:
    """A bundling run's START and COMPLETE, from the lakeFS commit to the bundle.

    Raises:
        ValueError: a naive time, a ``run_id`` that is not a UUID, or an
            ``artifact_uri`` that is not ``s3://<bucket>/<key>``.
    """
    inputs = [dataset(f"lakefs://{repository}", commit)]
    job = f"bundle.{repository}"
    return [
        run_event("START", run_id=run_id, event_time=started, inputs=inputs,
                  job_namespace=JOB_NAMESPACE, job_name=job),
        run_event("COMPLETE", run_id=run_id, event_time=finished, inputs=inputs,
                  outputs=[bundle_dataset(artifact_uri, sha256)], job_namespace=JOB_NAMESPACE, job_name=job),
    ]
