"""Stage one lakeFS commit's bundle members on local disk.

Steps 1-4 of the bundling process (docs/spec.md): freeze the commit (protecting tag), snapshot
STAC, export configs, add model binaries. Every object is streamed to a file
under ``staging/`` while its SHA-256 is computed, so memory does not grow
with bundle size; the packaging step then reads the files once more.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from opentelemetry import trace

from worker._internal.lakefs import CommitInfo, ObjectInfo
from worker.bundle.manifest import BundleMember, MemberKind
from worker.errors import IntegrityError
from worker.events import CommitEvent
from worker.ids import split_s3_uri
from worker.io.runtime import Runtime
from worker.progress import Progress
from worker.snapshot.models import parse_model_manifest
from worker.snapshot.select import SnapshotRules, bundle_path, is_config, is_stac, s3_bundle_path
from worker.snapshot.stac import rewrite_stac

__all__ = ["Staged", "protect_tag", "stage_commit"]

log = structlog.get_logger("kfm.bundler")
tracer = trace.get_tracer("kfm.bundler")

_STAC_MAX_BYTES = 16 * 1024 * 1024


def protect_tag(commit_id: str) -> str:
    """lakeFS GC never removes objects reachable from a tag."""
    return f"kfm-rollback-{commit_id[:20]}"


@dataclass
class Staged:
    commit: CommitInfo
    members: list[BundleMember] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    data_snapshot: list[dict[str, str]] = field(default_factory=list)
    configs: list[dict[str, str]] = field(default_factory=list)
    models: list[dict[str, str]] = field(default_factory=list)

    def add(self, member_path: str, kind: MemberKind, local: Path, size: int, sha256: str) -> None:
        self.members.append(BundleMember(path=member_path, size=size, sha256=sha256, kind=kind))
        self.files[member_path] = local


def _write(dest: Path, data: bytes) -> tuple[int, str]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


async def stage_commit(rt: Runtime, event: CommitEvent, staging: Path, progress: Progress | None = None) -> Staged:
    """Collect the commit's members under ``staging``; ``progress`` is told the bytes downloaded.

    Raises:
        IntegrityError: the commit, an object or the model manifest is missing
            or invalid (not retried).
        TransientError: lakeFS or S3 did not answer (retried by the caller).
    """
    repo, commit_id = event.repository_id, event.commit_id
    rules = rt.settings.snapshot_rules

    async def _list() -> list[ObjectInfo]:
        with tracer.start_as_current_span("bundle.list"):
            return await rt.lakefs.list_objects(repo, commit_id)

    with tracer.start_as_current_span("bundle.freeze"):
        # The commit and its listing at once: both only read, and the listing is used only
        # once the commit is the one named; the protecting tag still comes before any
        # object is downloaded. Errors in this order: the commit's, then the listing's.
        found, listed = await asyncio.gather(rt.lakefs.get_commit(repo, commit_id), _list(), return_exceptions=True)
        if isinstance(found, BaseException):
            raise found
        if found.id != commit_id:
            raise IntegrityError(f"lakeFS resolved {commit_id} to {found.id}")
        if isinstance(listed, BaseException):
            raise listed
        await rt.lakefs.ensure_tag(repo, protect_tag(commit_id), commit_id)
    commit, listing = found, listed
    staged = Staged(commit=commit)
    objects = {o.path: (o.size, o.checksum) for o in listing}

    share = None if progress is None else _Share(progress)
    step = _Step(rt, event, staged, staging, listing, objects, rules, share)
    if share is not None:
        share.expect(sum(o.size for o in listing if is_config(o.path, rules)))
    await _stage_stac(step)
    await _stage_configs(step)
    await _stage_models(step)

    log.info("bundle.staged", members=len(staged.members), bytes=sum(m.size for m in staged.members))
    return staged


class _Share:
    """One progress for all of a commit's downloads: each ``expect`` adds to the total (every
    download says its own size, and lakeFS's sizes are added from the listing), so the bar
    counts the step, not the object in flight."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._total = 0

    def expect(self, total: int) -> None:
        self._total += total
        self._progress.expect(self._total)

    def advance(self, n: int) -> None:
        self._progress.advance(n)


@dataclass(frozen=True)
class _Step:
    """What every staging step reads: the commit, its object listing, and where members go."""

    rt: Runtime
    event: CommitEvent
    staged: Staged
    staging: Path
    listing: list[ObjectInfo]
    objects: dict[str, tuple[int, str]]
    rules: SnapshotRules
    progress: _Share | None = None

    @property
    def base(self) -> str:
        """The commit as a lakeFS URI, the prefix of every source it pins."""
        return f"lakefs://{self.event.repository_id}/{self.event.commit_id}"


async def _stage_stac(step: _Step) -> None:
    """Step 2: the STAC hierarchy, rewritten to pin every link to the commit."""
    rt, staged, staging, rules, objects, base = step.rt, step.staged, step.staging, step.rules, step.objects, step.base
    repo, commit_id, limits = step.event.repository_id, step.event.commit_id, rt.settings.limits
    listing = step.listing
    with tracer.start_as_current_span("bundle.stac") as span:
        stac = [o for o in listing if is_stac(o.path, rules)]
        if len(stac) > limits.max_stac_objects:
            raise IntegrityError(f"{len(stac)} STAC files exceed the limit {limits.max_stac_objects}")
        for o in stac:
            raw = await rt.lakefs.read(repo, commit_id, o.path, _STAC_MAX_BYTES)
            rw = rewrite_stac(o.path, raw, repo=repo, commit=commit_id, objects=objects)
            if rw is None:
                continue
            mp = bundle_path(o.path)
            size, digest = _write(staging / mp, rw.body)
            staged.add(mp, "stac", staging / mp, size, digest)
            if rw.stac_type in ("Catalog", "Collection"):
                staged.data_snapshot.append({"stac": mp, "lakefs_ref": f"{base}/{o.path}"})
        span.set_attribute("kfm.stac_files", len([m for m in staged.members if m.kind == "stac"]))


async def _stage_configs(step: _Step) -> None:
    """Step 3: configuration files, byte for byte."""
    rt, staged, staging, rules, listing = step.rt, step.staged, step.staging, step.rules, step.listing
    repo, commit_id, limits = step.event.repository_id, step.event.commit_id, rt.settings.limits
    with tracer.start_as_current_span("bundle.configs"):
        for o in listing:
            if is_config(o.path, rules):
                mp = bundle_path(o.path)
                size, digest = await _download(rt, repo, commit_id, o, staging / mp, limit=limits.max_member_bytes,
                                               progress=step.progress)
                staged.add(mp, "config", staging / mp, size, digest)
                staged.configs.append({"path": o.path, "sha256": digest})


async def _stage_models(step: _Step) -> None:
    """Step 4: the model manifest and every model binary it names (in the lake or the registry bucket)."""
    rt, staged, staging, rules, objects, base = step.rt, step.staged, step.staging, step.rules, step.objects, step.base
    repo, commit_id, limits = step.event.repository_id, step.event.commit_id, rt.settings.limits
    with tracer.start_as_current_span("bundle.models"):
        if rules.model_manifest in objects:
            raw = await rt.lakefs.read(repo, commit_id, rules.model_manifest, 1 << 20)
            manifest = parse_model_manifest(raw)
            if step.progress is not None:  # the registry bucket's models say their size as they download
                step.progress.expect(sum(objects[m.path][0] for m in manifest.models if m.path in objects))
            mp = bundle_path(rules.model_manifest)
            size, digest = _write(staging / mp, raw)
            staged.add(mp, "meta", staging / mp, size, digest)
            for entry in manifest.models:
                if entry.path.startswith("s3://"):
                    bucket, key = split_s3_uri(entry.path)
                    if bucket != rt.bucket.name:
                        raise IntegrityError(f"model {entry.name}: only s3://{rt.bucket.name}/ URIs are reachable")
                    mp = s3_bundle_path(bucket, key)
                    dest = staging / mp
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    size, digest = await rt.bucket.download(key, dest, limits.max_model_bytes, progress=step.progress)
                    source = entry.path
                else:
                    if entry.path not in objects:
                        raise IntegrityError(f"model {entry.name}: {entry.path} missing at commit {commit_id[:12]}")
                    mp = bundle_path(entry.path)
                    dest = staging / mp
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    size, digest = await rt.lakefs.download(
                        repo, commit_id, entry.path, dest, limits.max_model_bytes, progress=step.progress
                    )
                    source = f"{base}/{entry.path}"
                staged.add(mp, "model", dest, size, digest)
                staged.models.append(
                    {"name": entry.name, "version": entry.version, "uri": source, "sha256": digest}
                )


async def _download(
    rt: Runtime, repo: str, ref: str, o: ObjectInfo, dest: Path, *, limit: int, progress: Progress | None
) -> tuple[int, str]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return await rt.lakefs.download(repo, ref, o.path, dest, limit, progress=progress)
