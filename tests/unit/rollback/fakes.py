"""An in-memory lakeFS, registry bucket, producer and ledger for the rollback handler.

Each fake implements only the narrow interface the handler declares
(``worker/io/rolling_back.py``: ``LakeFSPort``, ``BucketPort``; ``worker/io/verifying.py``: ``LedgerPort``;
and ``Sender`` from ``worker/io/governance.py``), with the semantics it relies on:
conditional puts that refuse a second writer, branches with a committed tree
and a staging area, two-dot diffs between committed trees. What a test needs
to see afterwards is kept in plain attributes (trees, objects, sent messages).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker._internal.lakefs import ObjectInfo
from worker.config import Settings
from worker.errors import AlreadyExistsError, NotFoundError, VerificationError
from worker.io.lineage import LineageEmitter
from worker.ledger.row import LedgerRow

Tree = dict[str, bytes]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Commit:
    tree: Tree
    parents: tuple[str, ...]
    message: str
    metadata: dict[str, str]


class FakeLakeFS:
    """One repository: commits are immutable trees, a branch is a head plus a staging area.

    Reads on a branch see staged changes (as lakeFS's object API does); diffs
    compare committed trees (as a two-dot diff of refs does).
    """

    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.commits: dict[str, Commit] = {}
        self.heads: dict[str, str] = {}
        self.staging: dict[str, Tree] = {}
        self.tags: dict[str, str] = {}
        self.mutations: list[str] = []

    # Building history (test set-up, not part of the handler's interface).

    def make_commit(self, branch: str, tree: Tree, message: str) -> str:
        parents = (self.heads[branch],) if branch in self.heads else ()
        cid = sha256(json.dumps([parents, sorted((p, sha256(d)) for p, d in tree.items()), message]).encode())
        self.commits[cid] = Commit(dict(tree), parents, message, {})
        self.heads[branch] = cid
        self.staging[branch] = dict(tree)
        return cid

    def tree(self, ref: str) -> Tree:
        """The tree a ref shows to reads: a branch's includes its staged changes."""
        if ref in self.staging:
            return self.staging[ref]
        return self.commits[self._commit_of(ref)].tree

    def _commit_of(self, ref: str) -> str:
        self._repo_ok(self.repo)
        for table in (self.heads, self.tags):
            if ref in table:
                return table[ref]
        if ref in self.commits:
            return ref
        raise NotFoundError(f"lakefs: ref {ref} not found")

    def _repo_ok(self, repo: str) -> None:
        if repo != self.repo:
            raise NotFoundError(f"lakefs: repository {repo} not found")

    def _branch(self, repo: str, branch: str) -> Tree:
        self._repo_ok(repo)
        if branch not in self.staging:
            raise NotFoundError(f"lakefs: branch {branch} not found")
        return self.staging[branch]

    # LakeFSPort.

    async def branch_head(self, repo: str, branch: str) -> str:
        self._branch(repo, branch)
        return self.heads[branch]

    async def branch_head_or_none(self, repo: str, branch: str) -> str | None:
        self._repo_ok(repo)
        return self.heads.get(branch)

    async def diff(self, repo: str, left: str, right: str) -> list[tuple[str, str]]:
        self._repo_ok(repo)
        a, b = self.commits[self._commit_of(left)].tree, self.commits[self._commit_of(right)].tree
        out = [("removed", p) for p in a.keys() - b.keys()]
        out += [("added", p) for p in b.keys() - a.keys()]
        out += [("changed", p) for p in a.keys() & b.keys() if a[p] != b[p]]
        return sorted(out, key=lambda c: c[1])

    async def uncommitted(self, repo: str, branch: str) -> bool:
        return self._branch(repo, branch) != self.commits[self.heads[branch]].tree

    async def create_branch(self, repo: str, name: str, source: str) -> None:
        cid = self._commit_of(source)
        if name in self.heads:
            raise AlreadyExistsError(f"lakefs: branch {name} exists")
        self.mutations.append(f"create_branch {name}")
        self.heads[name] = cid
        self.staging[name] = dict(self.commits[cid].tree)

    async def ensure_tag(self, repo: str, tag: str, commit_id: str) -> None:
        cid = self._commit_of(commit_id)
        if self.tags.setdefault(tag, cid) != cid:
            raise VerificationError(f"lakefs: tag {tag} points elsewhere")
        self.mutations.append(f"tag {tag}")

    async def hard_reset(self, repo: str, branch: str, ref: str) -> None:
        self._branch(repo, branch)
        cid = self._commit_of(ref)
        self.mutations.append(f"hard_reset {branch}")
        self.heads[branch] = cid
        self.staging[branch] = dict(self.commits[cid].tree)

    async def copy_from(self, repo: str, branch: str, path: str, src_ref: str) -> None:
        staged = self._branch(repo, branch)
        self.mutations.append(f"copy {path}")
        staged[path] = self.commits[self._commit_of(src_ref)].tree[path]

    async def delete_paths(self, repo: str, branch: str, paths: list[str]) -> None:
        staged = self._branch(repo, branch)
        self.mutations.append(f"delete {' '.join(paths)}")
        for p in paths:
            staged.pop(p, None)

    async def commit(self, repo: str, branch: str, message: str, metadata: dict[str, str] | None = None) -> str:
        staged = self._branch(repo, branch)
        self.mutations.append(f"commit {branch}")
        cid = self.make_commit(branch, staged, message)
        self.commits[cid].metadata = dict(metadata or {})
        return cid

    async def stat(self, repo: str, ref: str, path: str) -> ObjectInfo | None:
        self._repo_ok(repo)
        data = self.tree(ref).get(path)
        # lakeFS's checksum is the block store's ETag; a content hash behaves the same here.
        return None if data is None else ObjectInfo(path=path, size=len(data), checksum=sha256(data))

    async def list_objects(self, repo: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        self._repo_ok(repo)
        return [ObjectInfo(path=p, size=len(d), checksum=sha256(d))
                for p, d in sorted(self.tree(ref).items()) if p.startswith(prefix)]

    async def hash_object(self, repo: str, ref: str, path: str, max_bytes: int) -> tuple[int, str]:
        self._repo_ok(repo)
        data = self.tree(ref)[path]
        return len(data), sha256(data)


@dataclass
class FakeBucket:
    """The registry bucket: a dict of objects with S3's conditional-put semantics."""

    name: str
    objects: dict[str, bytes] = field(default_factory=dict)

    async def get(self, key: str, max_bytes: int) -> tuple[bytes, str]:
        if key not in self.objects:
            raise NotFoundError(f"s3: {key}: not found")
        return self.objects[key], sha256(self.objects[key])

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        if if_none_match and key in self.objects:
            raise AlreadyExistsError(f"s3: {key} already exists")
        self.objects[key] = data
        return sha256(data)

    async def head(self, key: str) -> object | None:
        return len(self.objects[key]) if key in self.objects else None

    async def download(self, key: str, dest: Path, max_bytes: int) -> tuple[int, str]:
        data, digest = await self.get(key, max_bytes)
        await asyncio.to_thread(dest.write_bytes, data)
        return len(data), digest

    async def upload_file(self, key: str, path: Path, *, overwrite: bool = False) -> str:
        return await self.put(key, await asyncio.to_thread(path.read_bytes), if_none_match=not overwrite)


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None) -> tuple[int, int]:
        self.sent.append((topic, value, key))
        return 0, len(self.sent) - 1

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(v) for t, v, _ in self.sent if t == topic]


@dataclass
class FakeLedger:
    """Rows by commit; ``unprovable`` commits fail their inclusion proof."""

    rows: dict[str, LedgerRow] = field(default_factory=dict)
    unprovable: set[str] = field(default_factory=set)

    async def row_for(self, commit: str) -> LedgerRow | None:
        return self.rows.get(commit)

    async def prove(self, commit: str) -> dict[str, Any]:
        if commit in self.unprovable:
            raise VerificationError(f"inclusion proof of {commit[:12]} does not match the checkpoint")
        row = self.rows[commit]
        return {"lakefs_commit": commit, "seq": row.seq, "row_hash": row.hash, "tree_size": len(self.rows),
                "root": "ab" * 32}


@dataclass
class FakeRuntime:
    settings: Settings
    lakefs: FakeLakeFS
    producer: FakeProducer
    bucket: FakeBucket
    work_dir: Path
    lineage: LineageEmitter | None = None
