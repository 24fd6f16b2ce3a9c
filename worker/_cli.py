"""The ``kfm`` command: one entry point, nested verbs, ``KFM_*`` defaults.

Every error a user can cause is caught once here and printed as one line on
stderr, with the exit code :mod:`worker.cli_output` defines (``-v`` shows
the traceback). Modules beyond argparse are imported by the verbs that use
them, so that ``kfm VERB --help`` starts fast (bench/bench_startup.py).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from worker._cli_common import (
    add_global_options,
    check_commit_arg,
    leaf_parsers,
    resolve_commit,
    spread_global_options,
)
from worker._cli_coverage import add_coverage_commands, forget_failure, register_watched_branch
from worker.cli_output import Exit, Output, report_error

if TYPE_CHECKING:
    from argparse import _SubParsersAction
    from datetime import datetime

    from worker._internal.kafka import PartitionTail
    from worker._internal.lakefs import CommitInfo, LakeFS
    from worker._internal.s3 import Bucket
    from worker.config import Settings
    from worker.io.ledger_reader import LedgerReader
    from worker.io.runtime import Runtime
    from worker.io.verifying import CheckedBundle
    from worker.keys import TrustedKeys
    from worker.progress import Meters
    from worker.rollback.request import RollbackRequest

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, "Settings"], int]
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, int]) -> int:
    import asyncio

    return asyncio.run(coro)


# --- hooks --------------------------------------------------------------------
def _hooks_serve(args: argparse.Namespace, settings: Settings) -> int:
    from hooks.server import run
    from worker.tracing import init_tracing

    init_tracing("kfm-hooks", settings.otel_exporter)
    run(settings)
    return 0


def _hooks_install(args: argparse.Namespace, settings: Settings) -> int:
    from hooks.install import install_action
    from worker._internal.lakefs import LakeFS
    from worker.errors import NotFoundError, UsageError

    url = args.url or f"http://{settings.hooks_host}:{settings.hooks_port}/lakefs/webhook"

    async def go() -> int:
        lakefs = LakeFS(settings)
        try:
            try:
                commit = await install_action(lakefs, args.repo, args.branch, url)
            except NotFoundError:
                where = f"lakefs://{args.repo}/{args.branch}"
                raise UsageError(f"{where}: no such repository or branch in lakeFS") from None
            created = (await lakefs.get_commit(args.repo, commit)).creation_date
        finally:
            lakefs.close()
        from worker.errors import Error

        out = {"repository": args.repo, "branch": args.branch, "commit": commit, "url": url, "watched": True}
        text = (f"installed the action on lakefs://{args.repo}/{args.branch} in commit {commit}; "
                f"lakeFS calls {url}")
        try:  # the reconciler watches the branch from this commit on (docs/coverage.md)
            await register_watched_branch(settings, args.repo, args.branch, commit, created)
        except Error as e:
            Output.of(args).result({**out, "watched": False}, text)
            print(f"kfm: error: action installed but not registered for the reconciler: {e.diagnostics()}; "
                  "run the same command again once the registry bucket answers", file=sys.stderr)
            return Exit.UNAVAILABLE
        Output.of(args).result(out, text + "; the reconciler watches the branch from it")
        return 0

    return _run(go())


def _topics_ensure(args: argparse.Namespace, settings: Settings) -> int:
    from worker.topics import ensure_all_topics, topic_specs

    _run_none(ensure_all_topics(settings))
    specs = topic_specs(settings)
    Output.of(args).table({"topics": [{"name": s.name, "partitions": s.partitions} for s in specs]},
                          ("TOPIC", "PARTITIONS"), [(s.name, s.partitions) for s in specs])
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    """A probe: every dependency answers and every key loads; exit 0 or 1."""
    from worker._internal.kafka import partition_count
    from worker._internal.lakefs import LakeFS
    from worker._internal.s3 import open_bucket
    from worker.constants import TOPIC_INDEX_CANDIDATES
    from worker.errors import ConfigError, Error
    from worker.keys import TrustedKeys, load_private_key

    async def go() -> list[tuple[str, bool, str]]:
        checks: list[tuple[str, bool, str]] = []

        async def check(name: str, probe: Coroutine[Any, Any, str]) -> None:
            try:
                checks.append((name, True, await probe))
            except (Error, OSError, ValueError) as e:
                checks.append((name, False, e.diagnostics() if isinstance(e, Error) else str(e)))

        async def kafka() -> str:
            topic = settings.topic(TOPIC_INDEX_CANDIDATES)
            n = await partition_count(settings.kafka, topic, settings.kafka_timeout_s)
            if n != 1:
                raise ValueError(f"writer topic {topic} has {n} partitions (want exactly 1)")
            return f"{settings.kafka_bootstrap}, writer topic has 1 partition"

        async def lakefs() -> str:
            client = LakeFS(settings)
            try:
                await client.ping()
            finally:
                client.close()
            return settings.lakefs_endpoint

        async def bucket() -> str:
            async with open_bucket(settings) as b:
                await b.list_keys("index/")
            return f"s3://{settings.s3_bucket}"

        async def keys() -> str:
            if not settings.signing_key:
                raise ConfigError("KFM_SIGNING_KEY is not set: give the path of the worker's private key "
                                  "(`kfm keys init` makes one)")
            if not settings.trusted_keys_dir:
                raise ConfigError("KFM_TRUSTED_KEYS_DIR is not set: give the directory of trusted public keys")
            load_private_key(Path(settings.signing_key))
            trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
            return f"signing key loads; {len(trusted)} trusted key(s)"

        await check("kafka", kafka())
        await check("lakefs", lakefs())
        await check("s3", bucket())
        await check("keys", keys())
        return checks

    results = _run_any(go())
    ok = all(good for _, good, _ in results)
    Output.of(args).result(
        {"ok": ok, "checks": [{"name": n, "ok": good, "detail": d} for n, good, d in results]},
        [f"{'ok  ' if good else 'FAIL'} {n}: {d}" for n, good, d in results])
    return Exit.OK if ok else Exit.CHECK_FAILED


def _run_none(coro: Coroutine[Any, Any, None]) -> None:
    _run_any(coro)


def _run_any(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coro)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker import app as worker_app

    # --quiet: Faust's banner and spinner are not log lines; every line the worker writes is JSON (worker/logs.py).
    sys.argv = ["kfm", "--quiet", "worker", "--loglevel", settings.log_level.lower(), "--without-web"]
    worker_app.main()
    return 0


def _keys_init(args: argparse.Namespace, settings: Settings) -> int:
    from worker.errors import UsageError
    from worker.keys import generate_keypair

    Path(args.dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        pair = generate_keypair(Path(args.dir), args.name)
    except FileExistsError as e:
        raise UsageError(f"{e}; give another --name or --dir (a key is never overwritten)") from None
    Output.of(args).result(
        {"private_key": str(pair.private_key_path), "public_key": str(pair.public_key_path), "key_id": pair.key_id},
        [f"private key  {pair.private_key_path}", f"public key   {pair.public_key_path}",
         f"key id       {pair.key_id}"])
    return 0


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a bundle request for the commit REF resolves to."""
    from datetime import UTC, datetime

    from opentelemetry import trace

    from worker._internal.kafka import Producer
    from worker._internal.lakefs import LakeFS
    from worker.constants import TOPIC_EVENTS
    from worker.events import CommitEvent, event_key
    from worker.tracing import headers_with_trace, init_tracing

    # The event carries this command's traceparent, so the bundle's span tree continues the
    # requester's trace, as it continues a webhook's.
    init_tracing("kfm-cli", settings.otel_exporter)
    tracer = trace.get_tracer("kfm.cli")

    async def go() -> int:
        with tracer.start_as_current_span("kfm.checkpoint") as span:
            span.set_attribute("lakefs.repository", args.repo)
            return await publish()

    async def publish() -> int:
        lakefs = LakeFS(settings)
        try:
            info = await _get_commit(lakefs, args.repo, args.ref)
        finally:
            lakefs.close()
        branch = args.branch or (args.ref if not _looks_like_commit(args.ref) else "main")
        await forget_failure(settings, args.repo, info.id)  # asked for again: no longer reported failed
        event = CommitEvent(
            source="checkpoint",
            repository_id=args.repo,
            branch_id=branch,
            commit_id=info.id,
            event_time=datetime.now(UTC),
            commit_message=info.message,
            committer=info.committer,
            commit_metadata=info.metadata,
            action_name="kfm checkpoint",
        )
        trace.get_current_span().set_attribute("lakefs.commit", info.id)
        async with Producer(settings.kafka, timeout_s=settings.kafka_timeout_s) as producer:
            await producer.send(
                settings.topic(TOPIC_EVENTS),
                event.to_bytes(),
                key=event_key(event.repository_id, event.commit_id),
                headers=headers_with_trace(),
            )
        Output.of(args).result(
            {"repository": args.repo, "ref": args.ref, "commit": info.id, "published": True},
            f"requested a bundle of commit {info.id} (lakefs://{args.repo}/{args.ref}); "
            "the worker builds it and the ledger records it")
        return 0

    return _run(go())


async def _get_commit(lakefs: LakeFS, repo: str, ref: str) -> CommitInfo:
    """The commit ``ref`` names; a repository or ref lakeFS does not have is the command line's mistake."""
    from worker.errors import NotFoundError, UsageError

    try:
        return await lakefs.get_commit(repo, ref)
    except NotFoundError:
        raise UsageError(f"lakefs://{repo}/{ref}: no such repository or ref in lakeFS") from None


def _looks_like_commit(ref: str) -> bool:
    return len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref)


def _bundle_build(args: argparse.Namespace, settings: Settings) -> int:
    """Build a commit's bundle into a local file, without uploading (reproducibility checks)."""
    import shutil
    import tempfile
    from datetime import UTC, datetime

    from worker.events import CommitEvent
    from worker.io.bundling import build_bundle
    from worker.io.runtime import Runtime

    async def go() -> int:
        async with await Runtime.open(settings) as rt:
            info = await _get_commit(rt.lakefs, args.repo, args.ref)
            event = CommitEvent(
                source="checkpoint",
                repository_id=args.repo,
                branch_id=args.branch,
                commit_id=info.id,
                event_time=datetime.now(UTC),
            )
            work = Path(tempfile.mkdtemp(prefix="kfm-build-", dir=rt.work_dir))
            try:
                built = await build_bundle(rt, event, work, _meters(args))
                shutil.move(built.path, args.out)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        Output.of(args).result(
            {"commit": info.id, "out": args.out, "sha256": built.sha256, "size": built.size,
             "members": len(built.manifest.members)},
            f"built {args.out}: commit {info.id}, {len(built.manifest.members)} members, {built.size} bytes, "
            f"sha256 {built.sha256}")
        return 0

    return _run(go())


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    """Verify a bundle as the rollback agent does (see :mod:`worker.io.verifying`)."""
    checked = _check_bundle(args, settings, None)
    out = Output.of(args)
    if isinstance(checked, str):
        out.result({"ok": False, "bundle": args.bundle, "error": checked}, f"FAIL: {checked}")
        return Exit.CHECK_FAILED
    v = checked.bundle
    out.result(_bundle_doc(args, checked), f"OK: bundle {args.bundle} sha256 {v.sha256} commit "
               f"{v.manifest.lakefs_commit} members {len(v.manifest.members)} signed by key {v.key_id}; "
               f"{_registry_note(checked)}")
    return 0


def _bundle_doc(args: argparse.Namespace, checked: CheckedBundle) -> dict[str, Any]:
    """``kfm verify --json`` and ``kfm restore --json`` (docs/cli.md#verify)."""
    v, p = checked.bundle, checked.proof
    return {"ok": True, "bundle": args.bundle, "sha256": v.sha256, "commit": v.manifest.lakefs_commit,
            "members": len(v.manifest.members), "key_id": v.key_id,
            "ledger": None if p is None else {"seq": p.row.seq, "tree_size": p.tree_size, "root": p.root}}


def _registry_note(checked: CheckedBundle) -> str:
    if checked.proof is None:
        return "ledger not checked (--offline)"
    p = checked.proof
    return (f"ledger row {p.row.seq} records it, included in the signed checkpoint of size {p.tree_size} "
            f"(root {p.root})")


def _check_bundle(args: argparse.Namespace, settings: Settings, to: Path | None) -> CheckedBundle | str:
    """Fetch, verify (and with ``to``, extract) the bundle ``args`` name; else why it was refused.

    Why one function for verify and restore: both must refuse exactly what
    the rollback agent refuses, with the configured limits. A bundle that
    fails a check is the answer "no" (exit 1); a file that cannot be read,
    or a registry that does not answer, raises (exit 2 or 4).
    """
    import tempfile

    from worker.bundle.binding import bound_commit
    from worker.errors import IntegrityError, UsageError
    from worker.ids import split_s3_uri
    from worker.io.verifying import check_bundle

    for uri in (args.bundle, args.attestation):
        if uri and uri.startswith("s3://"):
            _split(split_s3_uri, uri)  # before anything is fetched: a malformed URI is the command line's
    trusted = _trusted_keys(args, settings)
    limits = settings.limits
    if args.commit is not None and len(check_commit_arg(args.commit, "--commit")) < 64 and args.offline:
        raise UsageError("--commit: give the full commit id with --offline (a prefix is resolved against the ledger)")

    meters = _meters(args)
    step = "verify" if to is None else "verify+extract"

    async def go(tmp: Path) -> CheckedBundle:
        if args.offline:
            commit = bound_commit(args.commit, args.bundle)
            bundle, envelope = await _fetch_bundle(settings, args.bundle, args.attestation, tmp, meters)
            with meters.bar(step) as progress:
                return await check_bundle(bundle, envelope, trusted, limits, commit=commit, ledger=None,
                                          extract_to=to, progress=progress)
        # Imported here: the S3 client costs ~0.3 s of start-up that an offline check does not need.
        from worker._internal.s3 import open_bucket
        from worker.io.ledger_reader import LedgerReader

        async with open_bucket(settings) as registry:
            full = None if args.commit is None else await resolve_commit(registry, args.commit)
            commit = bound_commit(full, args.bundle)
            bundle, envelope = await _fetch_bundle(settings, args.bundle, args.attestation, tmp, meters)
            ledger = LedgerReader(registry, trusted, settings.checkpoint_name, settings.checkpoint_key_names)
            with meters.bar(step) as progress:
                return await check_bundle(bundle, envelope, trusted, limits, commit=commit, ledger=ledger,
                                          extract_to=to, progress=progress)

    with tempfile.TemporaryDirectory(prefix="kfm-verify-") as tmp:
        try:
            return _run_any(go(Path(tmp)))
        except UsageError:
            raise
        except IntegrityError as e:
            return e.diagnostics()


async def _fetch_bundle(
    settings: Settings, bundle: str, attestation: str | None, tmp: Path, meters: Meters
) -> tuple[Path, bytes]:
    """A local path, or an s3:// URI (downloaded, streamed, with a progress bar); each read within the
    configured limits."""
    import asyncio

    limits = settings.limits
    if not bundle.startswith("s3://"):
        path, att = await asyncio.to_thread(_local_inputs, bundle, attestation)
        return path, await asyncio.to_thread(_read_at_most, att, limits.max_envelope_bytes)
    from worker._internal.s3 import open_bucket
    from worker.constants import ATTESTATIONS_PREFIX
    from worker.ids import split_s3_uri

    bucket_name, key = _split(split_s3_uri, bundle)
    commit = key.rsplit("/", 1)[-1].removesuffix(".tar.zst")
    async with open_bucket(settings, bucket_name) as b:
        local = tmp / "bundle.tar.zst"
        with meters.bar("download") as progress:
            await b.download(key, local, limits.max_bundle_bytes, progress=progress)
        if attestation and attestation.startswith("s3://"):
            _, att_key = _split(split_s3_uri, attestation)
            envelope, _ = await b.get(att_key, limits.max_envelope_bytes)
        elif attestation:
            envelope = await asyncio.to_thread(_read_at_most, Path(attestation), limits.max_envelope_bytes)
        else:
            envelope, _ = await b.get(f"{ATTESTATIONS_PREFIX}{commit}.intoto.json", limits.max_envelope_bytes)
    return local, envelope


def _meters(args: argparse.Namespace) -> Meters:
    """Progress bars on stderr for long work, when a person is watching (worker/progress.py)."""
    from worker.progress import Meters

    return Meters.for_args(args)


def _local_inputs(bundle: str, attestation: str | None) -> tuple[Path, Path]:
    """A local bundle and its attestation, each checked to be there: a missing file is named as what it is."""
    path = Path(bundle)
    if not path.is_file():  # said before the attestation beside it is looked for
        raise FileNotFoundError(errno.ENOENT, "not a file" if path.exists() else "no such bundle file", bundle)
    if attestation:
        return path, Path(attestation)
    att = path.with_name(path.name.replace(".tar.zst", ".intoto.json"))
    if not att.is_file():
        raise FileNotFoundError(
            errno.ENOENT, f"no attestation beside the bundle (looked for {att.name}); give --attestation", str(att))
    return path, att


def _split(split: Callable[[str], tuple[str, str]], uri: str) -> tuple[str, str]:
    """An ``s3://BUCKET/KEY`` named on the command line; a malformed one is a usage error."""
    from worker.errors import UsageError

    try:
        return split(uri)
    except ValueError as e:
        raise UsageError(f"{uri!r}: {e}; expected s3://BUCKET/KEY") from None


def _read_at_most(path: Path, max_bytes: int) -> bytes:
    """A local file's bytes; one byte over ``max_bytes`` is read, so the verifier refuses it by size."""
    with path.open("rb") as f:
        return f.read(max_bytes + 1)


def _trusted_keys(args: argparse.Namespace, settings: Settings) -> TrustedKeys:
    from worker.errors import ConfigError, UsageError
    from worker.keys import TrustedKeys

    paths = [Path(p) for p in (args.key or [])]
    if paths:
        try:
            return TrustedKeys.from_paths(paths)
        except ConfigError as e:  # a file named on the command line: the command line's mistake
            raise UsageError(f"--key: {e}") from None
    if settings.trusted_keys_dir:
        return TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    raise ConfigError("no trusted keys: pass --key PUB or set KFM_TRUSTED_KEYS_DIR")


def _with_runtime(fn: Callable[[Runtime], Coroutine[Any, Any, int]], settings: Settings) -> int:
    from worker.io.runtime import Runtime

    async def go() -> int:
        async with await Runtime.open(settings) as rt:
            return await fn(rt)

    return _run(go())


def _with_bucket(fn: Callable[[Bucket], Coroutine[Any, Any, int]], settings: Settings) -> int:
    """Run ``fn`` with the registry bucket alone.

    Why not a runtime: the ledger's reads need only the bucket, and the lakeFS
    SDK and the Kafka client a full runtime opens cost most of a second of
    start-up that they never use.
    """
    from worker._internal.s3 import open_bucket

    async def go() -> int:
        async with open_bucket(settings) as bucket:
            return await fn(bucket)

    return _run(go())


def _reader(bucket: Bucket, args: argparse.Namespace, settings: Settings, *, keys: bool = True) -> LedgerReader:
    from worker.io.ledger_reader import LedgerReader

    trusted = _trusted_keys(args, settings) if keys else None
    return LedgerReader(bucket, trusted, settings.checkpoint_name, settings.checkpoint_key_names)


def _ledger_list(args: argparse.Namespace, settings: Settings) -> int:
    """The newest rows, read from the ledger's right edge backwards (docs/ledger.md#listing).

    Only the bucket is opened: the lakeFS SDK and the Kafka client of a full
    runtime cost seconds of start-up that a listing never uses.
    """
    from worker._internal.s3 import open_bucket
    from worker.io.ledger_reader import LedgerReader
    from worker.ledger.listing import RowFilter

    flt = RowFilter(repo=args.repo, branch=args.branch, since=args.since)

    async def go() -> int:
        async with open_bucket(settings) as bucket:  # first: a missing bucket setting is named first
            trusted = _trusted_keys(args, settings)
            reader = LedgerReader(bucket, trusted, settings.checkpoint_name, settings.checkpoint_key_names)
            page, cp = await reader.page(args.limit, flt, args.before)
        doc = {"tree_size": cp.size, "root": cp.root.hex(), "next_before": page.next_before,
               "bundles_read": page.bundles_read, "rows": [r.model_dump(mode="json") for r in page.rows]}
        table = [(r.seq, r.lakefs_commit, r.lakefs_repo, r.lakefs_branch, r.created_at) for r in page.rows]
        footer = (f"{cp.size} rows, root {cp.root.hex()} ({len(page.rows)} shown, "
                  f"{page.bundles_read} entry bundles read)"
                  + (f"; older: --before {page.next_before}" if page.next_before is not None else ""))
        Output.of(args).table(doc, ("SEQ", "COMMIT", "REPOSITORY", "BRANCH", "CREATED"), table, footer)
        return 0

    return _run(go())


def _ledger_show(args: argparse.Namespace, settings: Settings) -> int:
    from worker.errors import IntegrityError

    check_commit_arg(args.commit, "COMMIT")  # before connecting: a malformed id needs no registry

    async def go(bucket: Bucket) -> int:
        commit = await resolve_commit(bucket, args.commit, "COMMIT")
        row = await _reader(bucket, args, settings, keys=False).row_for(commit)
        if row is None:
            raise IntegrityError(f"no ledger row for commit {commit} (`kfm ledger list` shows the rows)")
        doc = row.model_dump(mode="json")
        pairs = _flatten(doc)
        width = max(len(k) for k, _ in pairs)
        Output.of(args).result(doc, [f"{k:<{width}}  {v}" for k, v in pairs])
        return 0

    return _with_bucket(go, settings)


def _flatten(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A JSON object as ``(dotted.key, value)`` pairs in key order: the text form of one record."""
    if isinstance(doc, dict) and doc:
        return [kv for k in sorted(doc) for kv in _flatten(doc[k], f"{prefix}.{k}" if prefix else k)]
    return [(prefix, json.dumps(doc) if isinstance(doc, dict | list) or doc is None else doc)]


def _ledger_prove(args: argparse.Namespace, settings: Settings) -> int:
    check_commit_arg(args.commit, "COMMIT")

    async def go(bucket: Bucket) -> int:
        commit = await resolve_commit(bucket, args.commit, "COMMIT")
        p = await _reader(bucket, args, settings).prove(commit)
        Output.of(args).result(p, [
            f"OK: row {p['seq']} of commit {commit} is included in the signed checkpoint of size {p['tree_size']}",
            f"root     {p['root']}", f"row hash {p['row_hash']}",
            *(f"proof[{i}] {h}" for i, h in enumerate(p["inclusion_proof"])),
            "checkpoint:", *(f"  {line}".rstrip() for line in p["checkpoint"].splitlines())])
        return 0

    return _with_bucket(go, settings)


def _ledger_verify(args: argparse.Namespace, settings: Settings) -> int:
    from worker.errors import VerificationError
    from worker.io.ledger_audit import verify_registry

    trusted = _trusted_keys(args, settings)
    note = Path(args.from_checkpoint).read_bytes() if args.from_checkpoint else None

    async def go(rt: Runtime) -> int:
        out = Output.of(args)
        try:
            r = await verify_registry(rt, trusted, trusted_note=note, derived=args.derived)
        except VerificationError as e:
            out.result({"ok": False, "error": str(e)}, f"FAIL: {e}")
            return Exit.CHECK_FAILED
        checked = r.rows - r.from_size
        rate = checked / r.seconds if r.seconds else 0
        what = f"rows {r.from_size}..{r.rows}" if r.from_size else f"{r.rows} rows"
        out.result(
            {"ok": True, "rows": r.rows, "from_size": r.from_size, "tiles": r.tiles, "root": r.root,
             "checkpoints": r.checkpoints, "derived": r.derived, "rows_per_s": round(rate)},
            f"OK: {what} canonical, chain valid, one row per commit, {r.tiles} tiles and root {r.root} "
            f"match {r.checkpoints} signed checkpoints"
            + (f"; consistent with the trusted checkpoint of size {r.from_size}" if r.from_size else "")
            + ("; row objects, sidecars and Parquet mirror agree" if r.derived else "")
            + f" ({rate:,.0f} rows/s)")
        return 0

    return _with_runtime(go, settings)


def _ledger_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.constants import LEDGER_HEAD_KEY
    from worker.io.handlers import signing_key
    from worker.io.ledger_reader import checkpoint_origin, checkpoint_signer
    from worker.io.ledger_writer import migrate_legacy

    async def go(rt: Runtime) -> int:
        if await rt.bucket.head(LEDGER_HEAD_KEY) is not None:
            Output.of(args).result({"migrated": 0, "already_tiled": True},
                                   "the ledger is already in the tiled layout; nothing to do")
            return 0
        origin = checkpoint_origin(settings.checkpoint_name, rt.bucket.name)
        signer = checkpoint_signer(settings.checkpoint_key_name, origin)
        n = await migrate_legacy(rt.bucket, origin, signing_key(rt), signer)
        Output.of(args).result({"migrated": n, "already_tiled": False},
                               f"migrated {n} rows to the tiled layout (row bytes and roots unchanged)")
        return 0

    return _with_runtime(go, settings)


def _ledger_vkey(args: argparse.Namespace, settings: Settings) -> int:
    """The checkpoint signer's verifier key, so others check our checkpoints with their own tools."""
    from worker.io.ledger_reader import checkpoint_origin, checkpoint_signer
    from worker.keys import load_private_key
    from worker.ledger.checkpoint import vkey

    settings.require("s3_bucket", "signing_key")  # the origin names the bucket
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    key = load_private_key(Path(settings.signing_key))
    verifier = vkey(checkpoint_signer(settings.checkpoint_key_name, origin), key.public_key())
    Output.of(args).result({"origin": origin, "vkey": verifier}, verifier)
    return 0


def _ledger_export(args: argparse.Namespace, settings: Settings) -> int:
    from worker.io.ledger_reader import export_jsonl

    async def go(bucket: Bucket) -> int:
        reader = _reader(bucket, args, settings)
        n = await export_jsonl(reader, Path(args.out) if args.out else None, _meters(args))
        where = args.out or bucket.uri("index/rollback-index.jsonl")
        Output.of(args).result({"rows": n, "out": where}, f"exported {n} rows to {where}")
        return 0

    return _with_bucket(go, settings)


def _audit_replay(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from worker.io.ledger_audit import replay

    trusted = _trusted_keys(args, settings)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="kfm-replay-"))

    async def go(rt: Runtime) -> int:
        with _meters(args).bar("replay", unit="offsets") as progress:
            r = await replay(rt, trusted, scratch, progress)
        verdict = "MATCH" if r.matches else "MISMATCH"
        Output.of(args).result(
            {"match": r.matches, "candidates": r.candidates, "rows": r.rows, "duplicates": r.duplicates,
             "rejected": r.rejected, "root": r.root, "scratch": str(scratch), "differences": list(r.differences)},
            [f"{verdict}: {r.candidates} candidates replayed into {r.rows} rows "
             f"({r.duplicates} duplicates, {r.rejected} rejected), root {r.root}; scratch {scratch}",
             *(f"  - {d}" for d in r.differences)])
        return Exit.OK if r.matches else Exit.CHECK_FAILED

    return _with_runtime(go, settings)


_REQUEST_OPTIONS = {"commit": "--commit", "target_branch": "--branch", "lakefs_repo": "--repo",
                    "bundle_uri": "--bundle", "request_id": "--request-id", "requested_by": "--requested-by",
                    "reason": "--reason"}


def _rollback_request(**fields: Any) -> RollbackRequest:
    """The request, or a :class:`UsageError` naming the option whose value the request refuses."""
    from pydantic import ValidationError

    from worker.errors import UsageError
    from worker.rollback.request import RollbackRequest

    try:
        return RollbackRequest(**fields)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise UsageError(f"{_REQUEST_OPTIONS.get(field, field)} {fields.get(field)!r}: "
                         f"{first['msg'].removeprefix('Value error, ')}") from None


async def _wait_for_result(args: argparse.Namespace, req: RollbackRequest, results: PartitionTail) -> int:
    """Print the request's progress until its final result (or --timeout); the exit code says which."""
    import asyncio

    from worker.rollback.outcome import describe_dry_run
    from worker.rollback.request import RollbackResult

    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    while loop.time() < deadline:
        for value in await results.poll():
            res = RollbackResult.model_validate_json(value)
            if res.request_id != req.request_id:
                continue
            if not args.quiet:
                print(f"[{res.status}] {res.reason}".rstrip(), file=sys.stderr, flush=True)
            if res.final:
                doc = res.model_dump(mode="json")
                Output.of(args).result(doc, describe_dry_run(res) if res.status == "dry-run" else None)
                return 0 if res.status in ("completed", "dry-run") else 1
    print(f"kfm: error: no final result for request {req.request_id} within --timeout {args.timeout:g} s; "
          "the request may still be running: its result will be on the results topic", file=sys.stderr)
    return Exit.TIMEOUT


def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    """Publish a rollback request; with --wait, follow it to its result."""
    import getpass
    import uuid
    from datetime import UTC, datetime

    from opentelemetry import trace

    from worker._internal.kafka import Producer, follow_partition
    from worker.constants import HEADER_REQUEST_ID, TOPIC_ROLLBACK_REQUESTS, TOPIC_ROLLBACK_RESULTS
    from worker.errors import IntegrityError
    from worker.io.ledger_reader import LedgerReader
    from worker.io.runtime import Runtime
    from worker.rollback.request import request_key
    from worker.tracing import headers_with_trace, init_tracing

    typed = check_commit_arg(args.commit, "--commit")
    # The request carries this command's traceparent, so the agent's rollback span continues the
    # requester's trace (and a collector, if the OTEL_* variables name one, gets both).
    init_tracing("kfm-cli", settings.otel_exporter)
    tracer = trace.get_tracer("kfm.cli")

    async def go() -> int:
        repo, commit = args.repo, typed
        if not repo or len(commit) < 64:
            async with await Runtime.open(settings) as rt:
                commit = await resolve_commit(rt.bucket, commit)
                row = None if repo else await LedgerReader(rt.bucket).row_for(commit)
            if not repo:
                if row is None:
                    raise IntegrityError(f"no ledger row for commit {commit}; pass --repo to ask anyway")
                repo = row.lakefs_repo
        req = _rollback_request(
            request_id=args.request_id or str(uuid.uuid4()),
            lakefs_repo=repo,
            commit=commit,
            target_branch=args.branch,
            strategy=args.strategy,
            bundle_uri=args.bundle or "",
            dry_run=args.dry_run,
            requested_by=args.requested_by or getpass.getuser(),
            reason=args.reason,
            requested_at=datetime.now(UTC),
        )
        with tracer.start_as_current_span("kfm.rollback") as span:
            span.set_attribute("kfm.request_id", req.request_id)
            span.set_attribute("lakefs.commit", req.commit)
            return await request(req)

    async def request(req: RollbackRequest) -> int:
        # A dry run exists to be read: it waits for its plan unless --no-wait says otherwise.
        wait = args.wait if args.wait is not None else args.dry_run
        if not wait:
            await publish(req)
            Output.of(args).result({"request_id": req.request_id, "published": True},
                                   f"published rollback request {req.request_id}; "
                                   "`kfm rollback ... --wait` follows a request to its result")
            return 0
        # Follow the results before publishing: a result sent after the request is always seen.
        async with follow_partition(settings.kafka, settings.topic(TOPIC_ROLLBACK_RESULTS)) as results:
            await publish(req)
            if not args.quiet:  # the steps are for a person; --quiet leaves only the exit code
                print(f"[published] request {req.request_id}", file=sys.stderr, flush=True)
            return await _wait_for_result(args, req, results)

    async def publish(req: RollbackRequest) -> None:
        async with Producer(settings.kafka, timeout_s=settings.kafka_timeout_s) as producer:
            await producer.send(settings.topic(TOPIC_ROLLBACK_REQUESTS), req.to_bytes(),
                                key=request_key(req.lakefs_repo, req.target_branch),
                                headers=headers_with_trace([(HEADER_REQUEST_ID, req.request_id.encode())]))

    return _run(go())


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    """Verify as `kfm verify` does, then extract into a directory (air-gapped recovery)."""
    checked = _check_bundle(args, settings, Path(args.to))
    out = Output.of(args)
    if isinstance(checked, str):
        out.result({"ok": False, "bundle": args.bundle, "to": args.to, "error": checked}, f"FAIL: {checked}")
        return Exit.CHECK_FAILED
    v = checked.bundle
    out.result({**_bundle_doc(args, checked), "to": args.to},
               f"OK: verified bundle of commit {v.manifest.lakefs_commit} ({v.sha256}); "
               f"{len(v.manifest.members)} members extracted to {args.to}; {_registry_note(checked)}")
    return 0


def _completion(args: argparse.Namespace, settings: Settings) -> int:
    """Completion generated from this very parser, so it lists exactly the verbs and options there are."""
    from worker._cli_completion import completion_script

    sys.stdout.write(completion_script(_build_parser(), args.shell))
    return 0


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kfm",
        description="KFM rollback artifact registry: signed, verifiable rollbacks of lakeFS commits.",
        epilog="Every option defaults to a KFM_* environment variable; see docs/configuration.md.",
    )
    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Added in this order: it is the order `kfm --help` lists the verbs in.
    _add_hooks_commands(sub)
    _add_setup_commands(sub)
    _add_bundle_commands(sub)
    _add_ledger_commands(sub)
    add_coverage_commands(sub)
    _add_rollback_commands(sub)
    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh); see docs/cli.md")
    comp.add_argument("shell", choices=("bash", "zsh"))
    comp.set_defaults(handler=_completion)
    spread_global_options(p)
    return p


_COMMIT_HELP = "full commit id, or a unique prefix of at least 8 hex digits (resolved against the ledger)"


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    """One spelling of the trusted-keys option for every verb that verifies."""
    parser.add_argument(
        "--key", action="append", help="trusted public key (PEM); repeatable (default KFM_TRUSTED_KEYS_DIR)"
    )


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    """The options of every verb that verifies a bundle for use (verify, restore)."""
    parser.add_argument("--attestation", help="DSSE envelope file or s3:// URI (default: the bundle's own)")
    parser.add_argument(
        "--commit", help="the commit the bundle must be for (default: the one its name <commit>.tar.zst names, if "
        "any): full id, or with the ledger a unique prefix of 8+ hex digits")
    parser.add_argument(
        "--offline", action="store_true",
        help="skip the ledger (air-gapped): do not check that the registry recorded this bundle")
    _add_key_option(parser)


def _add_hooks_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    hooks = sub.add_parser("hooks", help="the lakeFS webhook receiver").add_subparsers(
        dest="hooks_command", required=True, metavar="HOOKS_COMMAND"
    )
    serve = hooks.add_parser("serve", help="receive lakeFS webhooks and publish commit events to Kafka")
    serve.add_argument("--host", dest="hooks_host", help="listen address (KFM_HOOKS_HOST)")
    serve.add_argument("--port", dest="hooks_port", type=int, help="listen port (KFM_HOOKS_PORT)")
    serve.set_defaults(handler=_hooks_serve)
    install = hooks.add_parser("install", help="commit the registry's action to a lakeFS branch")
    install.add_argument("--repo", required=True, help="lakeFS repository, or lakefs://REPO/BRANCH for both")
    install.add_argument("--branch", help="branch to watch (required; or give --repo as lakefs://REPO/BRANCH)")
    install.set_defaults(needs_branch=True)
    install.add_argument("--url", help="webhook URL lakeFS should call (default: this host's hooks server)")
    install.set_defaults(handler=_hooks_install)


def _add_setup_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="topics_command", required=True, metavar="TOPICS_COMMAND"
    )
    topics.add_parser(
        "ensure", help="create the registry's topics; check the writer topic has one partition"
    ).set_defaults(handler=_topics_ensure)
    sub.add_parser("worker", help="run the Faust agents (bundler, ledger writer, rollback)").set_defaults(
        handler=_worker
    )
    sub.add_parser(
        "health", help="probe Kafka (writer topic has 1 partition), lakeFS, the bucket and the keys; exit 0 or 1"
    ).set_defaults(handler=_health)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="KEYS_COMMAND"
    )
    kinit = keys.add_parser("init", help="create an Ed25519 key pair (private key mode 0600)")
    kinit.add_argument("--dir", required=True, help="directory for NAME.key and NAME.pub")
    kinit.add_argument("--name", default="kfm-signing", help="file name stem (default kfm-signing)")
    kinit.set_defaults(handler=_keys_init)


def _add_bundle_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    cp = sub.add_parser("checkpoint", help="request a bundle for the commit a ref resolves to")
    cp.add_argument("--repo", required=True, help="lakeFS repository, or lakefs://REPO/REF for both")
    cp.add_argument("--ref", help="branch, tag or commit (or give lakefs://REPO/REF as --repo)")
    cp.add_argument("--branch", help="branch to record (default: REF if it is a branch, else main)")
    cp.set_defaults(handler=_checkpoint)

    bundle = sub.add_parser("bundle", help="bundles").add_subparsers(
        dest="bundle_command", required=True, metavar="BUNDLE_COMMAND"
    )
    bb = bundle.add_parser("build", help="build a commit's bundle into a local file (no upload)")
    bb.add_argument("--repo", required=True, help="lakeFS repository, or lakefs://REPO/REF for both")
    bb.add_argument("--ref", help="branch, tag or commit (or give lakefs://REPO/REF as --repo)")
    bb.add_argument("--branch", default="main", help="branch recorded in the manifest")
    bb.add_argument("--out", required=True, help="output .tar.zst path")
    bb.set_defaults(handler=_bundle_build)

    ver = sub.add_parser(
        "verify", help="verify a bundle and that the ledger records it (as a rollback does); exit 1 naming what failed")
    ver.add_argument("--bundle", help="the .tar.zst file, or its s3:// URI in the registry (required)")
    # Deprecated: `kfm verify FILE`, from before every verb named the bundle --bundle; kept for scripts.
    ver.add_argument("bundle_positional", nargs="?", metavar="BUNDLE", help=argparse.SUPPRESS)
    _add_verify_options(ver)
    ver.set_defaults(handler=_verify)


def _page_limit(text: str) -> int:
    from worker.ledger.listing import MAX_LIMIT

    n = _seq(text)
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return n


def _since(text: str) -> datetime:
    from worker.errors import ConfigError
    from worker.watch import parse_since

    try:
        return parse_since(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--since={text!r}: ")) from None


def _seq(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _add_ledger_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = sub.add_parser("ledger", help="the append-only index").add_subparsers(
        dest="ledger_command", required=True, metavar="LEDGER_COMMAND"
    )
    ls = ledger.add_parser("list", help="the newest rows, one line each (full commit ids)")
    ls.add_argument("--limit", type=_page_limit, default=50, help="how many of the newest rows (default 50)")
    ls.add_argument("--repo", help="only rows of this lakeFS repository (lakefs://REPO also works)")
    ls.add_argument("--branch", help="only rows of this branch")
    ls.add_argument("--since", type=_since,
                    help="only rows whose bundle finished at or after this RFC 3339 date or date-time")
    ls.add_argument("--before", type=_seq, metavar="SEQ",
                    help="only rows older than row SEQ: the next page (the last line prints it)")
    _add_key_option(ls)
    ls.set_defaults(handler=_ledger_list)
    show = ledger.add_parser("show", help="the row of one commit")
    show.add_argument("commit", metavar="COMMIT", help=_COMMIT_HELP)
    show.set_defaults(handler=_ledger_show)
    pr = ledger.add_parser("prove", help="inclusion proof of a commit's row against the latest signed checkpoint")
    pr.add_argument("commit", metavar="COMMIT", help=_COMMIT_HELP)
    _add_key_option(pr)
    pr.set_defaults(handler=_ledger_prove)
    lv = ledger.add_parser(
        "verify", help="stream every row: canonical form, chain, one row per commit, tiles, root, checkpoints; "
        "exit 1 naming the first difference")
    lv.add_argument("--from", dest="from_checkpoint", metavar="NOTE",
                    help="a checkpoint you trust (a file): prove the ledger extends it and check only newer rows")
    lv.add_argument("--derived", action="store_true",
                    help="also check every row object, sidecar and Parquet file (one read per row)")
    _add_key_option(lv)
    lv.set_defaults(handler=_ledger_verify)
    mg = ledger.add_parser("migrate", help="convert a single-file ledger (earlier versions) to the tiled layout")
    mg.set_defaults(handler=_ledger_migrate)
    vk = ledger.add_parser(
        "vkey", help="print the checkpoint signer's verifier key (C2SP signed-note form, as Go's sumdb/note takes it)")
    vk.set_defaults(handler=_ledger_vkey)
    ex = ledger.add_parser("export", help="write the whole ledger as one JSONL file (the index view)")
    ex.add_argument("--out", help="a local file (default: s3://<bucket>/index/rollback-index.jsonl)")
    _add_key_option(ex)
    ex.set_defaults(handler=_ledger_export)

    audit = sub.add_parser("audit", help="audit").add_subparsers(
        dest="audit_command", required=True, metavar="AUDIT_COMMAND"
    )
    rp = audit.add_parser("replay", help="rebuild the ledger from the writer topic and compare with the canonical one")
    rp.add_argument("--scratch", help="where to write the rebuilt ledger (default: a new temp dir)")
    _add_key_option(rp)
    rp.set_defaults(handler=_audit_replay)


def _add_rollback_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    rb = sub.add_parser("rollback", help="request a rollback of a lakeFS branch to a bundled commit")
    rb.add_argument("--commit", required=True, help=f"the commit to roll back to: {_COMMIT_HELP}")
    rb.add_argument("--branch", help="target branch (required; or give --repo as lakefs://REPO/BRANCH)")
    rb.set_defaults(needs_branch=True)
    rb.add_argument("--repo", help="lakeFS repository (default: the ledger row's)")
    rb.add_argument("--bundle", help="bundle URI; must be the one the ledger recorded")
    rb.add_argument("--strategy", choices=["revert", "reset", "branch"], default="revert",
                    help="revert: new commit restoring the tree (default); reset: tag head, hard-reset; "
                         "branch: create rollback-<commit>-<request>")
    rb.add_argument("--dry-run", action="store_true",
                    help="verify and print the plan (the ref movement and each file that would change); "
                         "change nothing. Waits for the plan unless --no-wait")
    rb.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                    help="follow the request to its result (default: only with --dry-run); "
                         "--no-wait publishes and returns")
    rb.add_argument("--timeout", type=float, default=600.0, help="seconds a wait lasts (default 600)")
    rb.add_argument("--reason", default="requested with kfm rollback", help="why (kept in the story record)")
    rb.add_argument("--requested-by", help="who (default: the current user)")
    rb.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    rb.set_defaults(handler=_rollback)

    rs = sub.add_parser("restore", help="verify a bundle as `kfm verify` does, then extract it into a directory")
    rs.add_argument("--bundle", required=True, help="the .tar.zst file, or its s3:// URI in the registry")
    rs.add_argument("--to", required=True, help="empty or missing directory to extract into")
    _add_verify_options(rs)
    rs.set_defaults(handler=_restore)


_OVERRIDES = ("kafka_bootstrap", "lakefs_endpoint", "s3_endpoint", "s3_bucket", "hooks_host", "hooks_port")


def _lakefs_uri(args: argparse.Namespace) -> str | None:
    """Split ``--repo lakefs://REPO/REF`` (lakeFS's own URI form) into the repository and the ref,
    or, for a verb that takes a branch and no ref, into the repository and the branch.

    Returns:
        What is wrong with the arguments, or None.
    """
    repo = getattr(args, "repo", None)
    takes_ref = hasattr(args, "ref")
    second = "ref" if takes_ref else "branch" if hasattr(args, "branch") else None
    if repo and repo.startswith("lakefs://"):
        name, _, path = repo.removeprefix("lakefs://").partition("/")
        if not name or "/" in path or (path and second is None):
            form = f"lakefs://REPO/{second.upper()}" if second else "lakefs://REPO"
            return f"--repo {repo!r}: expected {form}"
        if second and path and getattr(args, second) not in (None, path):
            return f"--repo {repo!r} names {second} {path!r} but --{second} is {getattr(args, second)!r}"
        args.repo = name
        if second and path:
            setattr(args, second, path)
    if takes_ref and repo and not args.ref:
        return "--ref is required (or give --repo as lakefs://REPO/REF)"
    if getattr(args, "needs_branch", False) and not args.branch:
        return "--branch is required (or give --repo as lakefs://REPO/BRANCH)"
    return None


def _log_level(args: argparse.Namespace, settings: Settings) -> str:
    """The services log at ``KFM_LOG_LEVEL``; a one-shot verb logs only if asked (``-v`` or ``KFM_LOG_LEVEL``).

    Why: a verb reports its result on stdout and a failure in its own one
    line on stderr; log lines about the same failure (aiokafka's "Unable
    connect to ...", urllib3's retries, our own ``reconcile.branch_failed``)
    would only repeat it, as JSON, in between.
    """
    import os

    if args.handler in (_worker, _hooks_serve) or args.verbose or os.environ.get("KFM_LOG_LEVEL"):
        return settings.log_level
    return "CRITICAL"


def _silence_handlers() -> None:
    """Clients reset their libraries' logger levels when created (the lakeFS SDK sets urllib3's to
    WARNING); the root handlers' own level holds whatever they set."""
    import logging

    for h in logging.getLogger().handlers:
        h.setLevel(logging.CRITICAL)


def _bundle_argument(args: argparse.Namespace) -> str | None:
    """``kfm verify FILE`` (deprecated) as ``kfm verify --bundle FILE``.

    Returns:
        What is wrong with the arguments, or None.
    """
    if not hasattr(args, "bundle_positional"):
        return None
    given = args.bundle_positional
    if given is not None and args.bundle not in (None, given):
        return f"the bundle is given twice ({given!r} and --bundle {args.bundle!r}); give --bundle only"
    args.bundle = args.bundle or given
    return None if args.bundle else "the following arguments are required: --bundle"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; its exit code is one of :class:`worker.cli_output.Exit` (docs/cli.md#exit-codes)."""
    parser = _build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here, with argparse's one line
    verb = dict(leaf_parsers(parser)).get(args.verb, parser)  # `kfm VERB: error: ...` with the verb's usage
    if problem := _lakefs_uri(args) or _bundle_argument(args):
        verb.error(problem)
    if args.json and args.quiet:
        verb.error("--json and --quiet: choose one")
    try:
        from worker.config import load_settings
        from worker.logs import configure_logging

        settings = load_settings(overrides={k: getattr(args, k, None) for k in _OVERRIDES})
        level = _log_level(args, settings)
        configure_logging(level)
        if level == "CRITICAL":
            _silence_handlers()
        handler: Handler = args.handler
        return handler(args, settings)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # `kfm ledger list | head -1`: the reader left; say nothing more, as `yes | head` does.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.BROKEN_PIPE
    except Exception as e:
        if args.verbose:
            raise
        return report_error(e)


if __name__ == "__main__":
    sys.exit(main())
