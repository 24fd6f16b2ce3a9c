"""OpenLineage RunEvents: valid against the OpenLineage 2-0-2 schema, S3 naming, UTC timestamps."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.lineage_schema import errors
from tests.unit.rollback.factories import COMMIT, request, row
from worker.evidence.lineage import (
    DIGEST_FACET,
    DIGEST_FACET_SCHEMA_URL,
    PRODUCER,
    SCHEMA_URL,
    bundle_dataset,
    bundle_events,
    dataset,
    run_event,
)
from worker.rollback.outcome import lineage_events

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2024, 5, 1, 12, 0, 2, 250000, tzinfo=UTC)
RUN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
ROLLBACK_RUN = "11111111-2222-4333-8444-555555555555"
SHA = "5" * 64
BUNDLE_URI = f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst"


def _bundle_run() -> list[dict[str, Any]]:
    return bundle_events(repository="kfm-main", commit=COMMIT, artifact_uri=BUNDLE_URI, sha256=SHA,
                         run_id=RUN_ID, started=T0, finished=T1)


def _rollback_run() -> list[dict[str, Any]]:
    r = row(artifact_uri=BUNDLE_URI, checksums={"artifact_sha256": SHA})
    return lineage_events(request(), r, restored="prod", run_id=ROLLBACK_RUN, started=T0, finished=T1)


def test_bundling_and_rollback_events_validate_against_the_openlineage_schema() -> None:
    events = _bundle_run() + _rollback_run()
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "COMPLETE"]
    for ev in events:
        assert errors(ev) == [], ev


def test_the_bundle_a_bundling_run_wrote_is_the_dataset_a_rollback_run_read() -> None:
    [produced] = _bundle_run()[1]["outputs"]
    for ev in _rollback_run():
        [consumed] = ev["inputs"]
        assert (consumed["namespace"], consumed["name"]) == (produced["namespace"], produced["name"])
        assert consumed["facets"] == produced["facets"]
    # OpenLineage's S3 naming: namespace s3://<bucket>, name the object key.
    assert (produced["namespace"], produced["name"]) == ("s3://kfm-registry", f"artifacts/{COMMIT}.tar.zst")


def test_the_digest_facet_carries_the_base_facet_fields() -> None:
    [out] = _bundle_run()[1]["outputs"]
    assert out["facets"] == {
        DIGEST_FACET: {"_producer": PRODUCER, "_schemaURL": DIGEST_FACET_SCHEMA_URL, "sha256": SHA},
    }


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("run", "runId"), "run-1", "is not a 'uuid'"),
        (("producer",), "not a uri", "is not a 'uri'"),
        (("eventTime",), "yesterday", "is not a 'date-time'"),
        (("eventType",), "DONE", "is not one of"),
    ],
)
def test_the_validator_refuses_what_the_schema_refuses(path: tuple[str, ...], value: str, why: str) -> None:
    # The checks above would pass vacuously if formats were not checked.
    ev = copy.deepcopy(_bundle_run()[1])
    target = ev
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(why in e for e in errors(ev)), errors(ev)


@pytest.mark.parametrize("drop", ["_producer", "_schemaURL", "sha256"])
def test_the_validator_refuses_a_facet_without_its_required_fields(drop: str) -> None:
    ev = copy.deepcopy(_bundle_run()[1])
    del ev["outputs"][0]["facets"][DIGEST_FACET][drop]
    assert errors(ev)


def test_the_validator_refuses_a_facet_whose_schema_it_does_not_know() -> None:
    ev = copy.deepcopy(_bundle_run()[1])
    ev["outputs"][0]["facets"]["custom"] = {"_producer": PRODUCER, "_schemaURL": "https://example.invalid/x.json"}
    assert any("is not a schema the tests know" in e for e in errors(ev))


def test_run_event_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_event("START", run_id=RUN_ID, job_namespace="kfm", job_name="bundle",
                  event_time=datetime(2024, 5, 1, 12, 0))  # noqa: DTZ001 - naive on purpose


def test_run_event_refuses_a_run_id_that_is_not_a_uuid() -> None:
    with pytest.raises(ValueError):
        run_event("START", run_id="run-1", job_namespace="kfm", job_name="bundle", event_time=T0)


def test_bundle_dataset_refuses_a_uri_that_is_not_s3() -> None:
    with pytest.raises(ValueError, match="not an s3:// URI"):
        bundle_dataset("lakefs://repo/main/x.tar.zst", SHA)


@pytest.mark.parametrize("event_type", ["START", "COMPLETE", "FAIL"])
def test_run_event_shape(event_type: str) -> None:
    ev = run_event(
        event_type,  # type: ignore[arg-type]
        run_id=RUN_ID, job_namespace="kfm", job_name="bundle", event_time=T0,
        inputs=(dataset("lakefs://repo-one", "main"),), outputs=[bundle_dataset(BUNDLE_URI, SHA)],
    )
    assert ev == {
        "eventType": event_type,
        "eventTime": "2024-05-01T12:00:00Z",
        "run": {"runId": RUN_ID, "facets": {}},
        "job": {"namespace": "kfm", "name": "bundle", "facets": {}},
        "inputs": [{"namespace": "lakefs://repo-one", "name": "main", "facets": {}, "inputFacets": {}}],
        "outputs": [{
            "namespace": "s3://kfm-registry", "name": f"artifacts/{COMMIT}.tar.zst", "outputFacets": {},
            "facets": {DIGEST_FACET: {"_producer": PRODUCER, "_schemaURL": DIGEST_FACET_SCHEMA_URL, "sha256": SHA}},
        }],
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }
    assert errors(ev) == []


def test_run_event_defaults() -> None:
    ev = run_event("COMPLETE", run_id=RUN_ID, job_namespace="kfm", job_name="bundle",
                   event_time=T0.replace(microsecond=123456))
    assert ev["eventTime"] == "2024-05-01T12:00:00.123456Z"
    assert ev["inputs"] == []
    assert ev["outputs"] == []
    assert ev["run"]["facets"] == {}
