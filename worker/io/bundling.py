"""Bundle one commit: stage, package, attest, upload, hand to the ledger writer.

The bundle bytes depend only on the commit (so a rebuild is byte-identical);
run evidence (OpenLineage, OTel spans, energy/carbon) is stored beside it under
``evidence/<commit>/<run>/`` and bound to it by digest in the signed
attestation. Uploads are conditional: the first complete upload of a commit
wins, and a later run that produced the same digest reuses it (packaging the
commit again at the stored bundle's own zstd level first, when the level has
changed since), so a crash or a redelivery at any point converges to one bundle
and one index candidate.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace
from opentelemetry.context import Context

from worker import metrics
from worker.bundle._reader import DiscardSink, read_bundle
from worker.bundle.attest import build_statement, sign_statement, verify_envelope
from worker.bundle.manifest import BundleManifest
from worker.bundle.tarzst import write_bundle
from worker.canonical import canonical_bytes, sha256_hex
from worker.constants import (
    ARTIFACTS_PREFIX,
    ATTESTATIONS_PREFIX,
    EVIDENCE_PREFIX,
)
from worker.errors import AlreadyExistsError, IntegrityError, VerificationError
from worker.events import CommitEvent
from worker.evidence import EnergyModel, measure, spans_to_otlp_json
from worker.evidence.lineage import bundle_events
from worker.io.ledger_writer import fault_point
from worker.io.lineage import publish_lineage
from worker.io.runtime import Runtime
from worker.io.staging import Staged, stage_commit
from worker.keys import TrustedKeys
from worker.limits import Limits
from worker.progress import Progress, Steps
from worker.rollback.outcome import bundle_span
from worker.tracing import trace_buffer

__all__ = ["BuiltBundle", "PublishedBundle", "build_bundle", "bundle_and_upload", "keys_of", "package"]

log = structlog.get_logger("kfm.bundler")
tracer = trace.get_tracer("kfm.bundler")


@dataclass(frozen=True)
class BuiltBundle:
    manifest: BundleManifest
    path: Path
    sha256: str
    size: int
    staged: Staged


@dataclass(frozen=True)
class PublishedBundle:
    """What the ledger needs; built from the stored, verified objects."""

    event: CommitEvent
    artifact_uri: str
    attestation_uri: str
    bundle_sha256: str
    key_id: str
    run_id: str
    trace_id: str
    energy: dict[str, Any]
    data_snapshot: list[dict[str, str]]
    models: list[dict[str, str]]
    configs: list[dict[str, str]]
    created_at: str
    # The stored run's root span (16 hex, or empty): the ledger row's span is its child.
    bundle_span_id: str = ""


def keys_of(private: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys([private.public_key()])


async def build_bundle(rt: Runtime, event: CommitEvent, work: Path, steps: Steps | None = None) -> BuiltBundle:
    """Stage the commit and write its deterministic ``.tar.zst`` into ``work`` at
    ``KFM_BUNDLE_ZSTD_LEVEL``; ``steps`` (the CLI's progress bars) gets one bar for the
    download and one for the compression."""
    with _step(steps, "download") as progress:
        staged = await stage_commit(rt, event, work / "staging", progress)
    return await package(event, staged, rt.settings.bundle_zstd_level, work / f"{event.commit_id}.tar.zst", steps)


async def package(
    event: CommitEvent, staged: Staged, zstd_level: int | None, out: Path, steps: Steps | None = None
) -> BuiltBundle:
    """Write the bundle of the staged commit to ``out``: manifest format v2 recording
    ``zstd_level``, or with ``None`` format v1 at level 10 (how bundles were made before the
    level was recorded: a rebuild of one of them gives its bytes again)."""
    manifest = BundleManifest.build(
        lakefs_repo=event.repository_id,
        lakefs_branch=event.branch_id,
        lakefs_commit=event.commit_id,
        commit_created_at=staged.commit.creation_date,
        members=staged.members,
        zstd_level=zstd_level,
    )
    with tracer.start_as_current_span("bundle.package") as span:

        def _package(progress: Progress | None) -> tuple[str, int]:
            with out.open("wb") as f:
                d = write_bundle(f, manifest, staged.files, mtime=manifest.commit_mtime, progress=progress)
            return d.sha256, d.size

        with _step(steps, "compress") as progress:
            digest, size = await asyncio.to_thread(_package, progress)
        span.set_attribute("kfm.bundle_sha256", digest)
        span.set_attribute("kfm.bundle_bytes", size)
        span.set_attribute("kfm.zstd_level", manifest.compression_level)
    return BuiltBundle(manifest, out, digest, size, staged)


@dataclass(frozen=True)
class _RunRecord:
    """One run's record of the bundle it stores: lineage, evidence (key -> bytes), signed attestation."""

    lineage: list[dict[str, Any]]
    evidence: dict[str, bytes]
    envelope: bytes


def _run_record(
    rt: Runtime, event: CommitEvent, built: BuiltBundle, run_id: str, *, times: tuple[datetime, datetime],
    run_evidence: Mapping[str, bytes], signing_key: Ed25519PrivateKey,
) -> _RunRecord:
    commit = event.commit_id
    started, finished = times
    lineage = bundle_events(
        repository=event.repository_id, commit=commit,
        artifact_uri=rt.bucket.uri(f"{ARTIFACTS_PREFIX}{commit}.tar.zst"),
        sha256=built.sha256, run_id=run_id, started=started, finished=finished,
    )
    files = {"openlineage.json": canonical_bytes(lineage), **run_evidence}
    ev_prefix = f"{EVIDENCE_PREFIX}{commit}/{run_id}/"
    statement = build_statement(
        bundle_sha256=built.sha256,
        lakefs_repo=event.repository_id,
        lakefs_branch=event.branch_id,
        lakefs_commit=commit,
        builder_id=rt.settings.builder_id,
        invocation_id=run_id,
        started_on=started,
        finished_on=finished,
        byproducts={ev_prefix + name: sha256_hex(data) for name, data in files.items()},
    )
    return _RunRecord(lineage, {ev_prefix + name: data for name, data in files.items()},
                      sign_statement(statement, signing_key))


def _step(steps: Steps | None, label: str) -> AbstractContextManager[Progress | None]:
    return nullcontext() if steps is None else steps.bar(label)


async def bundle_and_upload(
    rt: Runtime, event: CommitEvent, signing_key: Ed25519PrivateKey, parent: Context | None = None
) -> PublishedBundle:
    """Steps 1-9 of the bundling process (docs/spec.md): everything before the ledger append.

    Raises:
        IntegrityError: bad data (missing object, invalid manifest, a stored
            bundle with another digest); never retried.
        TransientError: a dependency did not answer; safe to retry.
    """
    commit = event.commit_id
    run_id = str(uuid.uuid4())
    energy_model = EnergyModel(
        rt.settings.energy_watts_per_cpu, rt.settings.energy_base_watts, rt.settings.energy_grid_kg_per_kwh
    )
    work = Path(tempfile.mkdtemp(prefix=f"bundle-{commit[:12]}-", dir=rt.work_dir))
    structlog.contextvars.bind_contextvars(commit_id=commit, repository_id=event.repository_id, run_id=run_id)
    try:
        started = datetime.now(UTC)
        with tracer.start_as_current_span("bundle", context=parent) as root:
            trace_id_int = root.get_span_context().trace_id
            structlog.contextvars.bind_contextvars(trace_id=format(trace_id_int, "032x"))
            root.set_attribute("lakefs.repository", event.repository_id)
            root.set_attribute("lakefs.commit", commit)
            with measure(energy_model) as energy:
                built = await build_bundle(rt, event, work)
        finished = datetime.now(UTC)
        metrics.BUNDLE_BUILD_SECONDS.observe((finished - started).total_seconds())
        metrics.BUNDLE_BYTES.observe(built.size)
        # The trace is taken once: a second run record (below) carries the same spans.
        run_evidence = {
            "otel-trace.json": canonical_bytes(
                spans_to_otlp_json(trace_buffer().take(trace_id_int), "kfm-worker")
            ),
            "energy.json": canonical_bytes(energy.to_json()),
        }

        def run_record(built: BuiltBundle, run_id: str) -> _RunRecord:
            return _run_record(rt, event, built, run_id, times=(started, finished), run_evidence=run_evidence,
                               signing_key=signing_key)

        record = run_record(built, run_id)

        with tracer.start_as_current_span("bundle.upload", context=parent):
            # What this run stored itself under If-None-Match: the store holds exactly these bytes.
            written = dict(record.evidence)
            stored = built

            async def _artifact() -> None:
                nonlocal stored
                try:
                    await rt.bucket.upload_file(f"{ARTIFACTS_PREFIX}{commit}.tar.zst", built.path)
                except AlreadyExistsError:
                    stored = await _check_existing_bundle(rt, event, built, work)

            # The evidence and the bundle do not depend on each other: they go up together
            # (one round trip on the way to the ledger row, not four); the attestation,
            # which names them all, only once they are all stored.
            await _together(*(rt.bucket.put(key, data, if_none_match=True) for key, data in written.items()),
                            _artifact())
            if stored is not built:
                # The stored bundle is this commit's at another level (made before a level change):
                # it is the bundle, and this run's record must name its bytes. The evidence just
                # written names the rebuild and stays unreferenced, as a redelivered run's does.
                built = stored
                run_id = str(uuid.uuid4())
                structlog.contextvars.bind_contextvars(run_id=run_id)
                record = run_record(built, run_id)
                await _together(*(rt.bucket.put(k, data, if_none_match=True) for k, data in record.evidence.items()))
                written.update(record.evidence)
            # A crash here leaves a bundle without its attestation: the redelivered event finishes it.
            fault_point("bundle.after_artifact")
            att_key = f"{ATTESTATIONS_PREFIX}{commit}.intoto.json"
            try:
                await rt.bucket.put(att_key, record.envelope, if_none_match=True)
                written[att_key] = record.envelope
            except AlreadyExistsError:
                log.info("bundle.attestation_exists", key=att_key)
        await publish_lineage(rt, record.lineage, run_id)
        return await published_from_registry(rt, event, keys_of(signing_key), built, written)
    finally:
        structlog.contextvars.unbind_contextvars("commit_id", "repository_id", "run_id", "trace_id")
        shutil.rmtree(work, ignore_errors=True)


async def _together(*jobs: Awaitable[object]) -> None:
    """Run ``jobs`` concurrently; the first failure cancels the rest and is raised as it is
    (a ``TransientError`` stays one, for the caller's retry)."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _check_existing_bundle(rt: Runtime, event: CommitEvent, built: BuiltBundle, work: Path) -> BuiltBundle:
    """The stored bundle must be the rebuild, byte for byte, or it is an incident.

    A level change (``KFM_BUNDLE_ZSTD_LEVEL``, or format v1 to v2) changes the bytes of a
    rebuild but not the bundle: the stored manifest says how it was made (its level, or
    none: v1 at level 10), so the commit is packaged again that way from the files staged
    for this run and must then give the stored bytes exactly. Returns the bundle that
    matches the stored one (``built`` itself, or that second packaging).
    """
    key = f"{ARTIFACTS_PREFIX}{event.commit_id}.tar.zst"
    existing_path = work / "existing.tar.zst"
    _, existing = await rt.bucket.download(key, existing_path, rt.settings.limits.max_bundle_bytes)
    if existing == built.sha256:
        log.info("bundle.exists_identical", key=key)
        return built
    try:
        stored = await asyncio.to_thread(_stored_manifest, existing_path, rt.settings.limits)
    except VerificationError as e:
        raise IntegrityError(f"stored bundle {key} has sha256 {existing}, the rebuild has {built.sha256},"
                             f" and it does not read as a bundle: {e}") from e
    if (stored.format, stored.zstd_level) != (built.manifest.format, built.manifest.zstd_level):
        again = await package(event, built.staged, stored.zstd_level, work / "again.tar.zst")
        if again.sha256 == existing:
            log.info("bundle.exists_identical", key=key, zstd_level=stored.compression_level,
                     format=stored.format)
            return again
    raise IntegrityError(
        f"stored bundle {key} has sha256 {existing}, the rebuild has {built.sha256}"
        f" (at the stored bundle's level {stored.compression_level}): not reproducible or tampered"
    )


def _stored_manifest(path: Path, limits: Limits) -> BundleManifest:
    """Read (and check) the manifest of a downloaded bundle: one pass, members discarded."""
    with path.open("rb") as f:
        return read_bundle(f, limits, DiscardSink()).manifest


async def published_from_registry(
    rt: Runtime, event: CommitEvent, trusted: TrustedKeys, built: BuiltBundle,
    written: Mapping[str, bytes] | None = None,
) -> PublishedBundle:
    """Take the stored attestation and evidence, verify them, and describe the bundle.

    One code path for first runs and for retries after a crash: whatever is in
    the registry is what the ledger records. ``written`` holds the objects this
    run stored itself with ``If-None-Match``: the condition held, so the store
    has exactly those bytes under those (immutable) keys, and reading them back
    would only add round trips to every commit's way into the ledger; everything
    else (an attestation an earlier run stored, and its evidence) is read. Either
    way the same checks apply. The content summary comes from this run's build,
    which has the stored bundle's digest (checked), so it describes the stored
    bytes.
    """
    commit = event.commit_id
    att_key = f"{ATTESTATIONS_PREFIX}{commit}.intoto.json"
    known = written or {}

    async def stored(key: str, max_bytes: int) -> bytes:
        return known[key] if key in known else (await rt.bucket.get(key, max_bytes))[0]

    envelope = await stored(att_key, 1 << 20)
    verified = verify_envelope(envelope, trusted)
    if verified.lakefs_commit != commit:
        raise IntegrityError(f"attestation {att_key} is for commit {verified.lakefs_commit}")
    run_details = verified.statement["predicate"]["runDetails"]
    run_id = str(run_details["metadata"]["invocationId"])
    evidence: dict[str, bytes] = {}
    byproducts = run_details.get("byproducts", [])
    found = await asyncio.gather(*(stored(bp["name"], 16 << 20) for bp in byproducts))
    for bp, data in zip(byproducts, found, strict=True):
        if sha256_hex(data) != bp["digest"]["sha256"]:
            raise IntegrityError(f"evidence {bp['name']} does not match the attestation")
        evidence[bp["name"].rsplit("/", 1)[-1]] = data
    energy = json.loads(evidence.get("energy.json", b"{}"))
    trace_doc = json.loads(evidence.get("otel-trace.json", b"{}"))
    spans = [s for rs in trace_doc.get("resourceSpans", []) for ss in rs["scopeSpans"] for s in ss["spans"]]
    root = bundle_span(trace_doc)
    if verified.subject_sha256 != built.sha256:
        raise IntegrityError(
            f"attestation {att_key} names sha256 {verified.subject_sha256}, bundle is {built.sha256}"
        )
    return PublishedBundle(
        event=event,
        artifact_uri=rt.bucket.uri(f"{ARTIFACTS_PREFIX}{commit}.tar.zst"),
        attestation_uri=rt.bucket.uri(att_key),
        bundle_sha256=verified.subject_sha256,
        key_id=verified.key_id,
        run_id=run_id,
        trace_id=spans[0]["traceId"] if spans else "",
        energy={
            "kwh": energy.get("kwh", 0.0),
            "co2e_kg": energy.get("co2e_kg", 0.0),
            "method": energy.get("method", ""),
        },
        created_at=str(run_details["metadata"]["finishedOn"]),
        data_snapshot=built.staged.data_snapshot,
        models=built.staged.models,
        configs=built.staged.configs,
        bundle_span_id=format(root[1], "016x") if root else "",
    )
