"""Freeze a STAC object to one lakeFS commit.

Every relative (or lakeFS-branch) href in ``links`` and ``assets`` is rewritten
to ``lakefs://<repo>/<commit>/<path>``, so the frozen catalog can only ever
point at the bytes of that commit; each asset's lakeFS checksum and size are
recorded beside it. Assets stay in lakeFS (pinned by the commit and the
protecting tag); only the STAC JSON is copied into the bundle.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlparse

from worker.errors import IntegrityError

__all__ = ["STAC_TYPES", "StacRewrite", "rewrite_stac"]

STAC_TYPES = frozenset({"Catalog", "Collection", "Feature"})


@dataclass(frozen=True)
class StacRewrite:
    stac_type: str
    body: bytes  # canonical JSON, sorted keys: deterministic across rebuilds
    asset_refs: tuple[str, ...]  # lakefs:// refs of assets


def _inside(base: str, href: str, path: str) -> str:
    """Normalise a repository path; refuse one that climbs out of the repository."""
    joined = posixpath.normpath(path)
    if joined in (".", "..") or joined.startswith(("../", "/")):
        raise IntegrityError(f"STAC {base}: href {href!r} points outside the repository")
    return joined


def _pin(href: str, base: str, repo: str, commit: str) -> tuple[str, str | None]:
    """Return (new href, lakeFS path or None if external).

    Relative hrefs are URL-decoded (``a%20b.tif`` names the object ``a b.tif``)
    and their ``#fragment`` is kept on the pinned href.
    """
    u = urlparse(href)
    if u.scheme in ("http", "https", "s3", "gs", "az"):
        return href, None
    fragment = f"#{u.fragment}" if u.fragment else ""
    if u.scheme == "lakefs":
        # lakefs://repo/<ref>/path: re-pin any ref of this repository to the commit.
        parts = u.path.lstrip("/").split("/", 1)
        if u.netloc == repo and len(parts) == 2:
            target = _inside(base, href, unquote(parts[1]))
            return f"lakefs://{repo}/{commit}/{quote(target)}{fragment}", target
        return href, None
    if u.scheme:
        return href, None
    if u.query:
        raise IntegrityError(f"STAC {base}: relative href {href!r} has a query; it cannot be pinned")
    target = _inside(base, href, posixpath.join(posixpath.dirname(base), unquote(u.path)))
    return f"lakefs://{repo}/{commit}/{quote(target)}{fragment}", target


def rewrite_stac(
    path: str,
    raw: bytes,
    *,
    repo: str,
    commit: str,
    objects: Mapping[str, tuple[int, str]],
) -> StacRewrite | None:
    """Rewrite one JSON file; ``None`` if it is not a STAC object.

    ``objects`` maps lakeFS paths at the commit to (size, checksum).

    Raises:
        IntegrityError: malformed STAC, or an href leaving the repository.
    """
    try:
        doc: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str) or doc["type"] not in STAC_TYPES:
        return None
    refs: list[str] = []
    links = doc.get("links", []) or []
    if not isinstance(links, list):
        raise IntegrityError(f"STAC {path}: links must be an array")
    for link in links:
        if isinstance(link, dict) and isinstance(link.get("href"), str):
            link["href"], _ = _pin(link["href"], path, repo, commit)
    assets = doc.get("assets", {}) or {}
    if not isinstance(assets, dict):
        raise IntegrityError(f"STAC {path}: assets must be an object")
    for key in sorted(assets):
        asset = assets[key]
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise IntegrityError(f"STAC {path}: asset {key!r} has no href")
        asset["href"], target = _pin(asset["href"], path, repo, commit)
        if target is not None:
            if target not in objects:
                raise IntegrityError(f"STAC {path}: asset {key!r} -> {target} missing at commit {commit[:12]}")
            size, checksum = objects[target]
            asset["kfm:lakefs_checksum"] = checksum
            asset["file:size"] = size
            refs.append(asset["href"])
    body = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return StacRewrite(stac_type=str(doc["type"]), body=body, asset_refs=tuple(refs))
