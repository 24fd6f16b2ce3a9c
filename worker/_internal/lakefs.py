"""lakeFS access through lakefs-sdk, off the event loop.

lakefs-sdk is a blocking client; every call runs in a thread
(``asyncio.to_thread``) so agents never block the loop. Object reads stream
to a file in chunks (``_preload_content=False``) so memory does not grow with
object size. SDK exceptions become :class:`TransientError` (server/transport),
:class:`NotFoundError` (404) or :class:`IntegrityError` (another 4xx: not
allowed). The SDK's API objects and models stay inside :class:`LakeFS`; its
methods return our own frozen records.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import lakefs_sdk
from lakefs_sdk.exceptions import ApiException
from urllib3.exceptions import HTTPError

from worker.config import Settings
from worker.errors import IntegrityError, NotFoundError, TransientError

if TYPE_CHECKING:
    from worker.progress import Progress

__all__ = ["ActionRunInfo", "CommitInfo", "HookRunInfo", "LakeFS", "ObjectInfo"]

T = TypeVar("T")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CommitInfo:
    id: str
    parents: tuple[str, ...]
    meta_range_id: str
    message: str
    committer: str
    creation_date: datetime
    metadata: dict[str, str]


@dataclass(frozen=True)
class ActionRunInfo:
    run_id: str
    branch: str
    commit_id: str
    event_type: str
    status: str
    start_time: datetime


@dataclass(frozen=True)
class HookRunInfo:
    action: str
    hook_id: str
    status: str


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int
    checksum: str  # lakeFS's own checksum (the block store ETag), not SHA-256


def _commit_info(c: Any) -> CommitInfo:
    return CommitInfo(
        id=c.id,
        parents=tuple(c.parents),
        meta_range_id=c.meta_range_id or "",
        message=c.message,
        committer=c.committer,
        creation_date=datetime.fromtimestamp(c.creation_date, tz=UTC),
        metadata=dict(c.metadata or {}),
    )


class LakeFS:
    def __init__(self, settings: Settings):
        """Raises: ConfigError: the endpoint or a credential is unset (lakeFS has no default chain)."""
        settings.require("lakefs_endpoint", "lakefs_access_key_id", "lakefs_secret_access_key")
        cfg = lakefs_sdk.Configuration(
            host=settings.lakefs_endpoint.rstrip("/") + "/api/v1",
            username=settings.lakefs_access_key_id,
            password=settings.lakefs_secret_access_key,
        )
        self._client = lakefs_sdk.ApiClient(cfg)
        self._host = cfg.host
        self._auth = cfg.get_basic_auth_token()
        self._commits = lakefs_sdk.CommitsApi(self._client)
        self._objects = lakefs_sdk.ObjectsApi(self._client)
        self._tags = lakefs_sdk.TagsApi(self._client)
        self._branches = lakefs_sdk.BranchesApi(self._client)
        self._refs = lakefs_sdk.RefsApi(self._client)
        self._repos = lakefs_sdk.RepositoriesApi(self._client)
        self._experimental = lakefs_sdk.ExperimentalApi(self._client)
        self._actions = lakefs_sdk.ActionsApi(self._client)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call in a worker thread, translating its errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as e:
            status = e.status or 0
            if status == 404:
                raise NotFoundError(f"lakeFS: not found ({fn.__name__})") from e
            if 400 <= status < 500:
                raise IntegrityError(f"lakeFS refused {fn.__name__}: {status} {e.reason}") from e
            raise TransientError(f"lakeFS {fn.__name__}: {status} {e.reason}") from e
        except (HTTPError, OSError) as e:
            raise TransientError(f"lakeFS {fn.__name__}: {type(e).__name__}") from e

    async def ping(self) -> None:
        """Readiness: the server answers an authenticated request.

        Raises:
            TransientError: it does not answer.
            IntegrityError: it refuses the credentials.
        """
        await self._call(self._repos.list_repositories, amount=1)

    async def get_commit(self, repo: str, ref: str) -> CommitInfo:
        return _commit_info(await self._call(self._commits.get_commit, repo, ref))

    async def log_page(
        self, repo: str, ref: str, *, after: str = "", amount: int = 100
    ) -> tuple[list[CommitInfo], str]:
        """One page of the first-parent log of ``ref``, newest first; and the ``after`` of the next ("" at the end)."""
        page = await self._call(
            self._refs.log_commits, repo, ref, after=after or None, amount=amount, first_parent=True
        )
        more = str(page.pagination.next_offset or "") if page.pagination.has_more else ""
        return [_commit_info(c) for c in page.results], more

    async def default_branch(self, repo: str) -> str:
        r = await self._call(self._repos.get_repository, repo)
        return str(r.default_branch)

    async def action_runs(
        self, repo: str, *, branch: str = "", after: str = "", amount: int = 100
    ) -> tuple[list[ActionRunInfo], str]:
        """One page of the repository's action runs, newest first; and the ``after`` of the next."""
        page = await self._call(
            self._actions.list_repository_runs, repo, after=after or None, amount=amount, branch=branch or None
        )
        runs = [
            ActionRunInfo(
                run_id=r.run_id, branch=r.branch, commit_id=r.commit_id, event_type=r.event_type,
                status=r.status, start_time=r.start_time.astimezone(UTC),
            )
            for r in page.results
        ]
        return runs, str(page.pagination.next_offset or "") if page.pagination.has_more else ""

    async def run_hooks(self, repo: str, run_id: str) -> list[HookRunInfo]:
        page = await self._call(self._actions.list_run_hooks, repo, run_id, amount=1000)
        return [HookRunInfo(action=h.action, hook_id=h.hook_id, status=h.status) for h in page.results]

    async def ensure_tag(self, repo: str, tag: str, commit_id: str) -> None:
        """Create a tag on the commit; an existing tag on the same commit is fine.

        Raises:
            IntegrityError: the tag exists and points elsewhere.
        """
        try:
            await self._call(self._tags.create_tag, repo, lakefs_sdk.TagCreation(id=tag, ref=commit_id))
        except IntegrityError:
            existing = await self._call(self._tags.get_tag, repo, tag)
            if existing.commit_id != commit_id:
                raise IntegrityError(f"tag {tag} points to {existing.commit_id}, not {commit_id}") from None

    async def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        after = ""
        while True:
            page = await self._call(
                self._objects.list_objects, repo, ref, prefix=prefix or None, after=after or None, amount=1000
            )
            for o in page.results:
                if o.path_type == "object":
                    out.append(ObjectInfo(path=o.path, size=int(o.size_bytes or 0), checksum=o.checksum))
            if not page.pagination.has_more:
                return out
            after = page.pagination.next_offset

    async def download(
        self, repo: str, ref: str, path: str, dest: Path, max_bytes: int, *, progress: Progress | None = None
    ) -> tuple[int, str]:
        """Stream an object to ``dest``; return (size, sha256 hex).

        Raises:
            IntegrityError: larger than ``max_bytes`` (the partial file is removed).
        """
        return await self._call(self._stream, repo, ref, path, max_bytes, dest=dest, progress=progress)

    async def hash_object(self, repo: str, ref: str, path: str, max_bytes: int) -> tuple[int, str]:
        """Stream an object through SHA-256 without keeping it; return (size, sha256 hex).

        A rollback's check re-hashes what it restored and needs nothing else: writing a 1 GiB
        model to disk only to delete it cost it a second's I/O.

        Raises:
            IntegrityError: larger than ``max_bytes``.
        """
        return await self._call(self._stream, repo, ref, path, max_bytes)

    def _stream(
        self, repo: str, ref: str, path: str, max_bytes: int, *, dest: Path | None = None,
        progress: Progress | None = None,
    ) -> tuple[int, str]:
        """Blocking: the object's bytes through SHA-256, and into ``dest`` if one is given."""
        # The generated SDK reads whole bodies into memory even with
        # _preload_content=False, so stream through its urllib3 pool.
        url = f"{self._host}/repositories/{quote(repo, safe='')}/refs/{quote(ref, safe='')}/objects"
        raw = self._client.rest_client.pool_manager.request(
            "GET",
            url,
            fields={"path": path},
            headers={"Authorization": self._auth},
            preload_content=False,
        )
        try:
            if raw.status == 404:
                raise NotFoundError(f"lakeFS object {repo}/{ref}/{path} not found")
            if raw.status >= 400:
                err = IntegrityError if raw.status < 500 else TransientError
                raise err(f"lakeFS get_object {path}: {raw.status}")
            h, n = hashlib.sha256(), 0
            try:
                with dest.open("wb") if dest is not None else contextlib.nullcontext() as f:
                    for chunk in raw.stream(_CHUNK):
                        n += len(chunk)
                        if n > max_bytes:
                            raise IntegrityError(f"lakeFS object {path} exceeds {max_bytes} bytes")
                        h.update(chunk)
                        if f is not None:
                            f.write(chunk)
                        if progress is not None:
                            progress.advance(len(chunk))
            except BaseException:
                if dest is not None:
                    dest.unlink(missing_ok=True)
                raise
        finally:
            raw.release_conn()
        return n, h.hexdigest()

    async def read(self, repo: str, ref: str, path: str, max_bytes: int) -> bytes:
        data = await self._call(self._objects.get_object, repo, ref, path)
        if len(data) > max_bytes:
            raise IntegrityError(f"lakeFS object {path} exceeds {max_bytes} bytes")
        return bytes(data)

    async def upload(self, repo: str, branch: str, path: str, content: bytes | Path) -> None:
        """Upload bytes or stream a file (raw body; the SDK would read it all into memory)."""

        def _run() -> None:
            url = f"{self._host}/repositories/{quote(repo, safe='')}/branches/{quote(branch, safe='')}/objects"
            headers = {"Authorization": self._auth, "Content-Type": "application/octet-stream"}
            if isinstance(content, Path):
                with content.open("rb") as f:
                    headers["Content-Length"] = str(content.stat().st_size)
                    r = self._client.rest_client.pool_manager.request(
                        "POST", url + "?" + urlencode({"path": path}), body=f, headers=headers
                    )
            else:
                r = self._client.rest_client.pool_manager.request(
                    "POST", url + "?" + urlencode({"path": path}), body=content, headers=headers
                )
            if r.status == 404:
                raise NotFoundError(f"lakeFS upload {repo}/{branch}/{path}: not found")
            if r.status >= 400:
                err = IntegrityError if r.status < 500 else TransientError
                raise err(f"lakeFS upload {path}: {r.status} {r.data[:200]!r}")

        await self._call(_run)

    async def delete(self, repo: str, branch: str, path: str) -> None:
        await self._call(self._objects.delete_object, repo, branch, path)

    async def commit(self, repo: str, branch: str, message: str, metadata: dict[str, str] | None = None) -> str:
        c = await self._call(
            self._commits.commit, repo, branch, lakefs_sdk.CommitCreation(message=message, metadata=metadata or {})
        )
        return str(c.id)

    async def branch_head(self, repo: str, branch: str) -> str:
        ref = await self._call(self._branches.get_branch, repo, branch)
        return str(ref.commit_id)

    async def create_branch(self, repo: str, name: str, source: str) -> None:
        await self._call(self._branches.create_branch, repo, lakefs_sdk.BranchCreation(name=name, source=source))

    async def merge(self, repo: str, source: str, dest: str, message: str = "") -> str:
        r = await self._call(self._refs.merge_into_branch, repo, source, dest, merge=lakefs_sdk.Merge(message=message))
        return str(r.reference)

    async def create_repository(self, repo: str, namespace: str, default_branch: str = "main") -> None:
        await self._call(
            self._repos.create_repository,
            lakefs_sdk.RepositoryCreation(name=repo, storage_namespace=namespace, default_branch=default_branch),
        )

    async def diff(self, repo: str, left: str, right: str) -> list[tuple[str, str]]:
        """(type, path) of every object that differs between two refs (two-dot:
        the trees themselves, not since their merge base)."""
        out: list[tuple[str, str]] = []
        after = ""
        while True:
            page = await self._call(
                self._refs.diff_refs, repo, left, right, after=after or None, amount=1000, type="two_dot"
            )
            out.extend((d.type, d.path) for d in page.results if d.path_type == "object")
            if not page.pagination.has_more:
                return out
            after = page.pagination.next_offset

    async def uncommitted(self, repo: str, branch: str) -> bool:
        """Whether the branch has staged (uncommitted) changes."""
        page = await self._call(self._branches.diff_branch, repo, branch, amount=1)
        return bool(page.results)

    async def copy_from(self, repo: str, branch: str, path: str, src_ref: str) -> None:
        """Server-side copy of ``path`` at ``src_ref`` onto ``branch`` (no data moves through us)."""
        await self._call(
            self._objects.copy_object, repo, branch, path,
            lakefs_sdk.ObjectCopyCreation(src_path=path, src_ref=src_ref),
        )

    async def delete_paths(self, repo: str, branch: str, paths: list[str]) -> None:
        for i in range(0, len(paths), 1000):
            await self._call(
                self._objects.delete_objects, repo, branch, lakefs_sdk.PathList(paths=paths[i : i + 1000])
            )

    async def hard_reset(self, repo: str, branch: str, ref: str) -> None:
        await self._call(self._experimental.hard_reset_branch, repo, branch, ref, force=False)

    async def branch_head_or_none(self, repo: str, branch: str) -> str | None:
        try:
            return await self.branch_head(repo, branch)
        except NotFoundError:
            return None

    async def stat(self, repo: str, ref: str, path: str) -> ObjectInfo | None:
        try:
            o = await self._call(self._objects.stat_object, repo, ref, path)
        except NotFoundError:
            return None
        return ObjectInfo(path=o.path, size=int(o.size_bytes or 0), checksum=o.checksum)

    def close(self) -> None:
        self._client.close()
