"""OpenLineage RunEvents: shape, UTC timestamps, naive datetimes refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.evidence.lineage import PRODUCER, SCHEMA_URL, dataset, run_event

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RUN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"


def test_run_event_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_event(
            "START",
            run_id=RUN_ID,
            job_namespace="kfm",
            job_name="bundle",
            event_time=datetime(2024, 5, 1, 12, 0),  # noqa: DTZ001 - naive on purpose
        )


@pytest.mark.parametrize("event_type", ["START", "COMPLETE", "FAIL"])
def test_run_event_shape(event_type: str) -> None:
    src = dataset("lakefs://repo-one", "main", {"version": {"datasetVersion": "abc"}})
    dst = dataset("s3://kfm-registry", "bundles/x.tar.zst")
    ev = run_event(
        event_type,  # type: ignore[arg-type]
        run_id=RUN_ID,
        job_namespace="kfm",
        job_name="bundle",
        event_time=T0,
        inputs=(src,),
        outputs=[dst],
        run_facets={"energy": {"kwh": 0.1}},
    )
    assert ev == {
        "eventType": event_type,
        "eventTime": "2024-05-01T12:00:00Z",
        "run": {"runId": RUN_ID, "facets": {"energy": {"kwh": 0.1}}},
        "job": {"namespace": "kfm", "name": "bundle", "facets": {}},
        "inputs": [src],
        "outputs": [dst],
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }


def test_run_event_defaults() -> None:
    ev = run_event("COMPLETE", run_id=RUN_ID, job_namespace="kfm", job_name="bundle",
                   event_time=T0.replace(microsecond=123456))
    assert ev["eventTime"] == "2024-05-01T12:00:00.123456Z"
    assert ev["inputs"] == []
    assert ev["outputs"] == []
    assert ev["run"]["facets"] == {}


def test_dataset() -> None:
    assert dataset("ns", "name") == {"namespace": "ns", "name": "name", "facets": {}}
    assert dataset("ns", "name", {"a": {}})["facets"] == {"a": {}}
