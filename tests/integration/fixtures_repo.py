"""A lakeFS repository with the shape the registry bundles: STAC, configs, models."""

from __future__ import annotations

import json
import os

from worker._internal.lakefs import LakeFS

CATALOG = {
    "type": "Catalog", "stac_version": "1.0.0", "id": "kfm", "description": "test",
    "links": [{"rel": "child", "href": "./landcover/collection.json"}, {"rel": "root", "href": "./catalog.json"}],
}
COLLECTION = {
    "type": "Collection", "stac_version": "1.0.0", "id": "landcover", "description": "d",
    "license": "CC-BY-4.0", "extent": {},
    "links": [{"rel": "item", "href": "./items/tile-1.json"}, {"rel": "parent", "href": "../catalog.json"}],
}
ITEM = {
    "type": "Feature", "stac_version": "1.0.0", "id": "tile-1", "geometry": None,
    "properties": {"datetime": "2025-01-01T00:00:00Z"},
    "links": [{"rel": "collection", "href": "../collection.json"}],
    "assets": {"data": {"href": "../../../data/landcover/tile-1.tif", "type": "image/tiff"},
               "thumb": {"href": "https://example.org/thumb.png"}},
}


async def populate(lakefs: LakeFS, repo: str, branch: str = "main", *, threshold: str = "0.5",
                   model_bytes: bytes | None = None, message: str = "data, configs and model") -> str:
    await lakefs.upload(repo, branch, "stac/catalog.json", json.dumps(CATALOG).encode())
    await lakefs.upload(repo, branch, "stac/landcover/collection.json", json.dumps(COLLECTION).encode())
    await lakefs.upload(repo, branch, "stac/landcover/items/tile-1.json", json.dumps(ITEM).encode())
    await lakefs.upload(repo, branch, "data/landcover/tile-1.tif", os.urandom(50_000))
    await lakefs.upload(repo, branch, "configs/pipeline.yaml", f"threshold: {threshold}\n".encode())
    await lakefs.upload(repo, branch, "configs/nested/features.json", b'{"bands": [1, 2, 3]}')
    await lakefs.upload(repo, branch, "models/focus/3.1.0.bin", model_bytes or os.urandom(200_000))
    manifest = {"models": [{"name": "focus-transformer", "version": "3.1.0", "path": "models/focus/3.1.0.bin"}]}
    await lakefs.upload(repo, branch, "models/manifest.json", json.dumps(manifest).encode())
    return await lakefs.commit(repo, branch, message)
