"""The rollback handler: verify, plan, claim, restore, check, record — once per request id.

The I/O around :mod:`worker.rollback.plan` (what to do) and
:mod:`worker.rollback.outcome` (what to report), in the numbered steps of
docs/rollback.md, which the code refers to:

1. Verify before touching anything: a ledger row exists for the commit; the
   bundle is the recorded one and its SHA-256 matches the row; then the
   verification ``kfm verify`` makes (:mod:`worker.io.verifying`): the
   DSSE signature is by a trusted key and the attestation subject is this
   bundle; manifest and attestation name the commit; every member matches the
   manifest within the configured limits; the row's inclusion proof checks
   against the latest signed checkpoint. Any failure rejects the request;
   nothing is restored.
2. Plan: the lakeFS ref movement and the files that differ from the commit.
   A dry run stops here.
3. Claim: ``rollbacks/<request>/claim.json`` records the branch head before
   the restore, so a restart after a crash resumes with the same plan.
4. Restore, each step checking the end state first, so a redelivered or
   resumed request converges instead of acting twice.
5. Check: the restored tree equals the commit's tree, and every config, model
   and STAC file re-hashes to the bundle manifest.
6. Record: result (stored once, under ``If-None-Match``), governance event,
   OpenLineage run, OTel span linked to the bundle's trace, and a story record.

It needs only the narrow runtime below (:class:`RollbackRuntime`), so the unit
tests drive it with an in-memory lakeFS, bucket, producer and ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from worker import metrics
from worker._internal.lakefs import ObjectInfo
from worker.canonical import canonical_bytes
from worker.constants import EVIDENCE_PREFIX, TOPIC_ROLLBACK_RESULTS
from worker.errors import AlreadyExistsError, IntegrityError, NotFoundError, VerificationError
from worker.io.dead_letters import Reason, Refusal, decode_or_refuse, refusal_of
from worker.io.governance import emit_raw
from worker.io.ledger_reader import LedgerReader
from worker.io.ledger_writer import fault_point
from worker.io.lineage import LineagePublisher, publish_lineage
from worker.io.runtime import Runtime
from worker.io.verifying import LedgerPort, check_bundle
from worker.keys import TrustedKeys
from worker.ledger.row import LedgerRow
from worker.rollback.outcome import (
    Completed,
    DryRun,
    Failed,
    Outcome,
    Rejected,
    Story,
    answer,
    bundle_span,
    final_answer,
    governance_event,
    lineage_events,
)
from worker.rollback.plan import (
    Claim,
    LakeFSTarget,
    Plan,
    S3Target,
    Target,
    check_bundle_digest,
    locate_bundle,
    make_plan,
    member_targets,
    must_be_clean,
    pre_rollback_tag,
    restored_ref,
    revert_commit,
    revert_steps,
    rollback_key,
    stac_key,
)
from worker.rollback.request import RollbackRequest, RollbackResult, decode_request, request_id_of

__all__ = ["Refused", "RollbackRuntime", "handle_rollback_request", "roll_back"]

log = structlog.get_logger("kfm.rollback")
tracer = trace.get_tracer("kfm.rollback")

_MAX_STORED_JSON = 1 << 20
# Objects published and checked at once by a restore (STAC documents, re-hashed members).
_IN_FLIGHT = 16

Refused = Callable[[Refusal], Awaitable[None]]
"""Told when the request message itself is refused (the worker dead-letters it)."""
_MAX_TRACE_BYTES = 16 << 20


class LakeFSPort(Protocol):
    """The lakeFS calls a rollback makes (:class:`worker._internal.lakefs.LakeFS`)."""

    async def branch_head(self, repo: str, branch: str) -> str: ...
    async def branch_head_or_none(self, repo: str, branch: str) -> str | None: ...
    async def diff(self, repo: str, left: str, right: str) -> list[tuple[str, str]]: ...
    async def uncommitted(self, repo: str, branch: str) -> bool: ...
    async def create_branch(self, repo: str, name: str, source: str) -> None: ...
    async def ensure_tag(self, repo: str, tag: str, commit_id: str) -> None: ...
    async def hard_reset(self, repo: str, branch: str, ref: str) -> None: ...
    async def copy_from(self, repo: str, branch: str, path: str, src_ref: str) -> None: ...
    async def delete_paths(self, repo: str, branch: str, paths: list[str]) -> None: ...
    async def commit(self, repo: str, branch: str, message: str, metadata: dict[str, str] | None = None) -> str: ...
    async def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]: ...
    async def hash_object(self, repo: str, ref: str, path: str, max_bytes: int) -> tuple[int, str]: ...


class BucketPort(Protocol):
    """The registry bucket calls a rollback makes (:class:`worker._internal.s3.Bucket`)."""

    @property
    def name(self) -> str: ...
    async def get(self, key: str, max_bytes: int) -> tuple[bytes, str]: ...
    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str: ...
    async def head(self, key: str) -> object | None: ...
    async def download(self, key: str, dest: Path, max_bytes: int) -> tuple[int, str]: ...
    async def upload_file(self, key: str, path: Path, *, overwrite: bool = False) -> str: ...


class RollbackRuntime(LineagePublisher, Protocol):
    """The part of :class:`~worker.io.runtime.Runtime` a rollback uses."""

    @property
    def lakefs(self) -> LakeFSPort: ...
    @property
    def bucket(self) -> BucketPort: ...
    @property
    def work_dir(self) -> Path: ...


@dataclass(frozen=True)
class _Verified:
    """Step 1's product: the accepted row and the bundle's members, extracted and checked."""

    row: LedgerRow
    files: Mapping[str, Path]
    digests: Mapping[str, str]
    links: list[Link]


async def handle_rollback_request(
    rt: Runtime, value: bytes | None, trusted: TrustedKeys, refused: Refused | None = None
) -> RollbackResult:
    """Handle one request message; return the final result (also published)."""
    ledger = LedgerReader(rt.bucket, trusted, rt.settings.checkpoint_name, rt.settings.checkpoint_key_names)
    return await roll_back(rt, ledger, trusted, value, refused=refused)


async def roll_back(
    rt: RollbackRuntime, ledger: LedgerPort, trusted: TrustedKeys, value: bytes | None, *,
    refused: Refused | None = None,
) -> RollbackResult:
    """:func:`handle_rollback_request` on any runtime and ledger with the narrow interfaces above.

    A message that is not a request (or names a bundle that does not verify) is
    answered ``rejected`` under the request id it carries, as far as it can be
    read, and reported to ``refused``.
    """
    req = decode_or_refuse(value, rt.settings.limits.max_message_bytes, decode_request)
    if isinstance(req, Refusal):
        # The id is read back only from JSON that parsed (so never from an oversized value).
        readable = req.reason in (Reason.WRONG_TYPE, Reason.INVALID)
        rid = request_id_of(value) if readable and value is not None else "unknown"
        result = RollbackResult(request_id=rid, status="rejected", final=True, reason=req.message)
        await _publish(rt, result)
        metrics.ROLLBACKS.labels("rejected").inc()
        if refused is not None:
            await refused(req)
        return result
    structlog.contextvars.bind_contextvars(request_id=req.request_id, commit_id=req.commit)
    try:
        return await _handle(rt, ledger, trusted, req, refused)
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "commit_id", "trace_id")


async def _handle(
    rt: RollbackRuntime, ledger: LedgerPort, trusted: TrustedKeys, req: RollbackRequest, refused: Refused | None,
) -> RollbackResult:
    stored = await _stored_result(rt, req)
    if stored is not None:  # idempotency: a request id that has a result is answered with it
        log.info("rollback.already_done", status=stored.status)
        await _publish(rt, stored)
        return stored
    await _publish(rt, answer(req, "accepted"))
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"rollback-{req.request_id[:12]}-", dir=rt.work_dir))
    try:
        outcome = await _run(rt, ledger, trusted, req, work, refused=refused)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log_outcome(outcome)
    result = final_answer(req, outcome)
    await _finish(rt, req, result)
    event = governance_event(req, outcome)
    if event is not None:
        await emit_raw(rt, event.kind, req.lakefs_repo, req.commit, **event.fields)
    kind = _OUTCOME_LABELS[type(outcome)]
    metrics.ROLLBACKS.labels(kind).inc()
    metrics.ROLLBACK_SECONDS.labels(kind).observe(time.monotonic() - started)
    return result


_OUTCOME_LABELS: dict[type, str] = {Completed: "completed", Rejected: "rejected", Failed: "failed", DryRun: "dry_run"}


async def _run(rt: RollbackRuntime, ledger: LedgerPort, trusted: TrustedKeys, req: RollbackRequest,
               work: Path, *, refused: Refused | None) -> Outcome:
    try:
        verified = await _verify(rt, ledger, trusted, req, work)  # 1
    except IntegrityError as e:
        # A bundle or reference that does not verify is the request's fault (dead-lettered);
        # a commit without a row yet is an answer, not a bad message.
        if isinstance(e, VerificationError) and refused is not None:
            await refused(refusal_of(e))
        return Rejected(str(e))
    await _publish(rt, answer(req, "verified", detail={
        "seq": verified.row.seq, "artifact_sha256": verified.row.checksums.artifact_sha256,
    }))
    with tracer.start_as_current_span("rollback", links=verified.links) as span:
        span.set_attribute("kfm.request_id", req.request_id)
        span.set_attribute("lakefs.commit", req.commit)
        trace_id = format(span.get_span_context().trace_id, "032x")
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        started = datetime.now(UTC)
        try:
            plan = await _plan(rt, req)  # 2
        except IntegrityError as e:  # e.g. the target branch does not exist: nothing was changed
            return Rejected(str(e))
        if req.dry_run:
            try:
                targets = member_targets(verified.digests, rt.bucket.name, rt.settings.snapshot_rules)
            except IntegrityError as e:  # a real run would fail on it before writing any model
                return Rejected(str(e))
            return DryRun(plan.with_models(targets, rt.bucket.name), trace_id)
        try:
            done = await _restore(rt, req, plan, verified, trace_id)  # 3, 4, 5
            await _record(rt, req, verified.row, done, started)  # 6
        except IntegrityError as e:
            return Failed(str(e))
        return done


def _log_outcome(outcome: Outcome) -> None:
    match outcome:
        case Rejected(reason):
            log.warning("rollback.rejected", reason=reason)
        case Failed(reason):
            log.error("rollback.failed", reason=reason)
        case Completed():
            log.info("rollback.completed", restored_ref=outcome.restored_ref, head_after=outcome.head_after)
        case DryRun():
            pass


async def _publish(rt: RollbackRuntime, result: RollbackResult) -> None:
    await rt.producer.send(
        rt.settings.topic(TOPIC_ROLLBACK_RESULTS), result.to_bytes(), key=result.request_id.encode()
    )


async def _stored_result(rt: RollbackRuntime, req: RollbackRequest) -> RollbackResult | None:
    try:
        stored, _ = await rt.bucket.get(rollback_key(req.request_id, "result.json"), _MAX_STORED_JSON)
    except NotFoundError:
        return None
    return RollbackResult.model_validate_json(stored)


async def _finish(rt: RollbackRuntime, req: RollbackRequest, result: RollbackResult) -> None:
    """Store the final result once and publish it; a concurrent duplicate keeps (and publishes) the first."""
    key = rollback_key(req.request_id, "result.json")
    try:
        await rt.bucket.put(key, result.to_bytes(), if_none_match=True)
    except AlreadyExistsError:
        stored, _ = await rt.bucket.get(key, _MAX_STORED_JSON)
        result = RollbackResult.model_validate_json(stored)
    await _publish(rt, result)


async def _verify(rt: RollbackRuntime, ledger: LedgerPort, trusted: TrustedKeys, req: RollbackRequest,
                  work: Path) -> _Verified:
    """Step 1. Raises: IntegrityError (the reason the request is rejected)."""
    recorded = locate_bundle(req, await ledger.row_for(req.commit), rt.bucket.name)
    row = recorded.row
    limits = rt.settings.limits
    bundle = work / "bundle.tar.zst"
    _, digest = await rt.bucket.download(recorded.bundle_key, bundle, limits.max_bundle_bytes)
    check_bundle_digest(digest, row)  # the cheap refusal first: no parsing of a bundle not recorded
    envelope, _ = await rt.bucket.get(recorded.envelope_key, limits.max_envelope_bytes)
    # The same verification as kfm verify and kfm restore: limits, binding to
    # the commit, the row's digest and its inclusion proof; extracted in the
    # same pass, the files published only once all of it passed.
    checked = await check_bundle(
        bundle, envelope, trusted, limits, commit=req.commit, ledger=ledger, extract_to=work / "x"
    )
    extracted = checked.extracted
    assert extracted is not None  # extract_to was given
    return _Verified(
        row=row,
        files=extracted.files,
        digests={m.path: m.sha256 for m in extracted.manifest.members},
        links=await _bundle_trace_link(rt, row),
    )


async def _bundle_trace_link(rt: RollbackRuntime, row: LedgerRow) -> list[Link]:
    """Link the rollback's span to the bundle run's root span (from its stored trace)."""
    key = f"{EVIDENCE_PREFIX}{row.lakefs_commit}/{row.openlineage_run_id}/otel-trace.json"
    try:
        doc = json.loads((await rt.bucket.get(key, _MAX_TRACE_BYTES))[0])
    except (NotFoundError, ValueError):
        return []
    span = bundle_span(doc)
    if span is None:
        return []
    ctx = SpanContext(span[0], span[1], is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return [Link(ctx, {"kfm.link": "bundle"})]


async def _plan(rt: RollbackRuntime, req: RollbackRequest) -> Plan:
    """Step 2. Raises: IntegrityError (no target branch, or someone's uncommitted work on it)."""
    repo, branch = req.lakefs_repo, req.target_branch
    head = await rt.lakefs.branch_head_or_none(repo, branch)
    plan = make_plan(req, head, await rt.lakefs.diff(repo, head, req.commit) if head else [])
    resuming = await rt.bucket.head(rollback_key(req.request_id, "claim.json")) is not None
    if must_be_clean(req, resuming) and await rt.lakefs.uncommitted(repo, branch):
        raise IntegrityError(f"target branch {branch} has uncommitted changes; commit or reset them first")
    return plan


async def _restore(rt: RollbackRuntime, req: RollbackRequest, plan: Plan, verified: _Verified,
                   trace_id: str) -> Completed:
    """Steps 3 to 5. Raises: IntegrityError (the rollback failed; the claim lets a retry resume)."""
    claim = await _claim(rt, req, plan)  # 3
    await _publish(rt, answer(req, "restoring"))
    ref = await _move_ref(rt, req, claim)  # 4
    targets = member_targets(verified.digests, rt.bucket.name, rt.settings.snapshot_rules)
    await _write_models(rt, targets, verified.files)
    await _publish_stac(rt, req, targets, verified.files)
    await _publish(rt, answer(req, "checking"))
    # After the publishing, not beside it: run at once, the check's 1 GiB stream from lakeFS and
    # the 1,000 PUTs slowed each other (and the servers) more than the overlap saved.
    await _check(rt, req, ref, targets)  # 5
    return Completed(
        restored_ref=ref,
        head_before=claim.head_before,
        head_after=await rt.lakefs.branch_head(req.lakefs_repo, ref),
        changes=plan.changes,
        members_rehashed=len(verified.files),
        trace_id=trace_id,
        bundle_trace_id=verified.row.otel_trace_id,
    )


async def _claim(rt: RollbackRuntime, req: RollbackRequest, plan: Plan) -> Claim:
    claim = Claim(req.request_id, plan.head_before, req.strategy)
    key = rollback_key(req.request_id, "claim.json")
    try:
        await rt.bucket.put(key, claim.to_bytes(), if_none_match=True)
    except AlreadyExistsError:
        claim = Claim.from_bytes((await rt.bucket.get(key, _MAX_STORED_JSON))[0])
        log.warning("rollback.resuming", head_before=claim.head_before)
    return claim


async def _move_ref(rt: RollbackRuntime, req: RollbackRequest, claim: Claim) -> str:
    """Move the lakeFS ref the strategy names; return the ref that now holds the commit's tree."""
    repo, commit, branch = req.lakefs_repo, req.commit, req.target_branch
    target = restored_ref(req)
    with tracer.start_as_current_span("rollback.restore.lakefs"):
        if req.strategy == "branch":
            if await rt.lakefs.branch_head_or_none(repo, target) is None:
                await rt.lakefs.create_branch(repo, target, commit)
        elif req.strategy == "reset":
            await rt.lakefs.ensure_tag(repo, pre_rollback_tag(req.request_id), claim.head_before)
            if await rt.lakefs.branch_head(repo, branch) != commit:
                await rt.lakefs.hard_reset(repo, branch, commit)
        else:
            await _revert(rt, req)
    return target


async def _revert(rt: RollbackRuntime, req: RollbackRequest) -> None:
    """Strategy "revert": one new commit on the branch whose tree equals the commit's."""
    repo, commit, branch = req.lakefs_repo, req.commit, req.target_branch
    steps = revert_steps(await rt.lakefs.diff(repo, branch, commit))
    if steps is None:
        return
    for i, path in enumerate(steps.copy):
        await rt.lakefs.copy_from(repo, branch, path, commit)
        if i == 0:
            fault_point("rollback.mid_restore")
    if steps.delete:
        await rt.lakefs.delete_paths(repo, branch, list(steps.delete))
    message, metadata = revert_commit(req)
    await rt.lakefs.commit(repo, branch, message, metadata)


async def _in_order(jobs: list[Awaitable[None]]) -> None:
    """Run ``jobs`` with at most :data:`_IN_FLIGHT` at once; then raise the first failure in
    the order given (not in the order they happened), so the error reported is the same
    whatever the timing. A restore of 1,000 STAC documents one request at a time spent
    30 s here in round trips."""
    sem = asyncio.Semaphore(_IN_FLIGHT)

    async def one(job: Awaitable[None]) -> None:
        async with sem:
            await job

    for outcome in await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _write_models(rt: RollbackRuntime, targets: tuple[Target, ...], files: Mapping[str, Path]) -> None:
    """Models kept in object storage go back where production reads them, before the check
    re-hashes them (one at a time: each is large, and multipart already keeps the connection busy)."""
    with tracer.start_as_current_span("rollback.restore.models"):
        for t in targets:
            if isinstance(t, S3Target):
                await rt.bucket.upload_file(t.key, files[t.member], overwrite=True)


async def _publish_stac(
    rt: RollbackRuntime, req: RollbackRequest, targets: tuple[Target, ...], files: Mapping[str, Path]
) -> None:
    """The frozen STAC hierarchy, pinned to the commit, is published with the rollback."""
    with tracer.start_as_current_span("rollback.restore.stac"):

        async def publish(t: LakeFSTarget) -> None:
            body = await asyncio.to_thread(files[t.member].read_bytes)
            await rt.bucket.put(stac_key(req.request_id, t.path), body)

        await _in_order([publish(t) for t in targets if isinstance(t, LakeFSTarget) and t.stac])


async def _check(rt: RollbackRuntime, req: RollbackRequest, ref: str, targets: tuple[Target, ...]) -> None:
    """Step 5: re-hash what was restored; any mismatch fails the rollback loudly."""
    repo = req.lakefs_repo
    remaining = await rt.lakefs.diff(repo, ref, req.commit)
    if remaining:
        raise IntegrityError(f"restored {ref} still differs from {req.commit[:12]} at {len(remaining)} paths")
    max_bytes = rt.settings.limits.max_member_bytes
    tmp = rt.work_dir / f"check-{uuid.uuid4().hex}"
    # Both trees listed once (the bundler lists the commit's whole tree too), not one stat per
    # member and ref: 1,000 STAC documents were 2,000 lakeFS calls.
    restored: dict[str, ObjectInfo] = {}
    committed: dict[str, ObjectInfo] = {}
    if any(isinstance(t, LakeFSTarget) for t in targets):
        listed = await asyncio.gather(rt.lakefs.list_objects(repo, ref), rt.lakefs.list_objects(repo, req.commit))
        restored, committed = ({o.path: o for o in tree} for tree in listed)

    async def check(n: int, t: Target) -> None:
        if isinstance(t, S3Target):
            dest = tmp / str(n)
            try:
                _, got = await rt.bucket.download(t.key, dest, max_bytes)
            finally:
                await asyncio.to_thread(dest.unlink, missing_ok=True)
            if got != t.sha256:
                raise IntegrityError(f"restored s3 object {t.key}: sha256 mismatch")
            return
        info = restored.get(t.path)
        if info is None:
            raise IntegrityError(f"restored {ref} lacks {t.path}")
        if t.stac:
            # STAC in the bundle is the pinned rewrite; the lake holds the original.
            at_commit = committed.get(t.path)
            if at_commit is None or at_commit.checksum != info.checksum:
                raise IntegrityError(f"restored STAC {t.path} differs from the commit")
        else:
            # Hashed as it streams: nothing of the restored tree is written locally.
            _, got = await rt.lakefs.hash_object(repo, ref, t.path, max_bytes)
            if got != t.sha256:
                raise IntegrityError(f"restored {t.path}: sha256 {got} != manifest {t.sha256}")

    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    try:
        await _in_order([check(n, t) for n, t in enumerate(targets)])
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)


async def _record(rt: RollbackRuntime, req: RollbackRequest, row: LedgerRow, done: Completed,
                  started: datetime) -> None:
    """Step 6 (the result itself is stored by the caller): lineage run and story record, each stored once."""
    run_id = str(uuid.uuid4())
    events = lineage_events(req, row, restored=done.restored_ref, run_id=run_id,
                            started=started, finished=datetime.now(UTC))
    await publish_lineage(rt, events, run_id)
    bodies = {
        "story.json": Story.of(req, row, done, run_id).to_bytes(),
        "openlineage.json": canonical_bytes(events),
    }
    for name, body in bodies.items():
        with contextlib.suppress(AlreadyExistsError):
            await rt.bucket.put(rollback_key(req.request_id, name), body, if_none_match=True)
