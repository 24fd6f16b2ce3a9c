"""rewrite_stac: hrefs pinned to one lakeFS commit, assets checksummed, output deterministic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import IntegrityError
from worker.snapshot.stac import STAC_TYPES, StacRewrite, rewrite_stac

REPO = "repo-one"
COMMIT = "0123456789abcdef" * 4
PIN = f"lakefs://{REPO}/{COMMIT}/"
ITEM = "stac/items/item-1.json"
OBJECTS: dict[str, tuple[int, str]] = {
    "stac/items/tile.tif": (1234, "etag-tile"),
    "stac/items/thumb.png": (56, "etag-thumb"),
    "stac/shared/legend.png": (7, "etag-legend"),
    "data/raw.csv": (99, "etag-raw"),
}


def rewrite(doc: Any, path: str = ITEM, objects: dict[str, tuple[int, str]] | None = None) -> StacRewrite | None:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return rewrite_stac(path, raw, repo=REPO, commit=COMMIT, objects=OBJECTS if objects is None else objects)


def must(doc: Any, path: str = ITEM) -> tuple[StacRewrite, dict[str, Any]]:
    out = rewrite(doc, path)
    assert out is not None
    return out, json.loads(out.body)


def feature(**assets: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "item-1",
        "links": [],
        "assets": {k: {"href": v, "type": "image/tiff"} for k, v in assets.items()},
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"",
        b"[]",
        b'"Feature"',
        b"42",
        b"null",
        b'{"id": "x"}',
        b'{"type": "FeatureCollection", "features": []}',
        b'{"type": "feature"}',
    ],
)
def test_non_stac_json_returns_none(raw: bytes) -> None:
    assert rewrite(raw) is None


@pytest.mark.parametrize("stac_type", sorted(STAC_TYPES))
def test_stac_types_are_recognised(stac_type: str) -> None:
    out, _ = must({"type": stac_type, "links": []})
    assert out.stac_type == stac_type
    assert out.asset_refs == ()


@pytest.mark.parametrize(
    ("href", "target"),
    [
        ("tile.tif", "stac/items/tile.tif"),
        ("./tile.tif", "stac/items/tile.tif"),
        ("../shared/legend.png", "stac/shared/legend.png"),
        ("../../data/raw.csv", "data/raw.csv"),
        ("./sub/../tile.tif", "stac/items/tile.tif"),
    ],
)
def test_relative_asset_href_pinned_with_checksum_and_size(href: str, target: str) -> None:
    out, doc = must(feature(data=href))
    asset = doc["assets"]["data"]
    assert asset["href"] == PIN + target
    size, checksum = OBJECTS[target]
    assert asset["file:size"] == size
    assert asset["kfm:lakefs_checksum"] == checksum
    assert asset["type"] == "image/tiff"  # other asset fields kept
    assert out.asset_refs == (PIN + target,)


@pytest.mark.parametrize("ref", ["main", "feature-x", "a" * 64, "v1.0-tag"])
def test_lakefs_href_to_same_repo_is_repinned_to_the_commit(ref: str) -> None:
    out, doc = must(feature(data=f"lakefs://{REPO}/{ref}/stac/items/tile.tif"))
    assert doc["assets"]["data"]["href"] == PIN + "stac/items/tile.tif"
    assert doc["assets"]["data"]["kfm:lakefs_checksum"] == "etag-tile"
    assert out.asset_refs == (PIN + "stac/items/tile.tif",)


@pytest.mark.parametrize(
    "href",
    [
        "https://example.com/tile.tif",
        "http://example.com/a/../tile.tif",
        "s3://other-bucket/tile.tif",
        "gs://bucket/tile.tif",
        "az://container/tile.tif",
        "lakefs://other-repo/main/stac/items/tile.tif",
        f"lakefs://{REPO}/main",
    ],
)
def test_external_asset_hrefs_untouched_and_not_recorded(href: str) -> None:
    out, doc = must(feature(data=href))
    assert doc["assets"]["data"] == {"href": href, "type": "image/tiff"}
    assert out.asset_refs == ()


def test_links_are_pinned_but_not_checksummed() -> None:
    doc_in = {
        "type": "Feature",
        "links": [
            {"rel": "self", "href": "./item-1.json"},
            {"rel": "parent", "href": "../collection.json"},
            {"rel": "root", "href": f"lakefs://{REPO}/main/stac/catalog.json"},
            {"rel": "license", "href": "https://example.com/license"},
            {"rel": "odd"},  # no href: left alone
        ],
        "assets": {},
    }
    out, doc = must(doc_in)
    assert [link.get("href") for link in doc["links"]] == [
        PIN + "stac/items/item-1.json",
        PIN + "stac/collection.json",
        PIN + "stac/catalog.json",
        "https://example.com/license",
        None,
    ]
    # Links do not need to exist at the commit and are not asset refs.
    assert out.asset_refs == ()
    assert all("kfm:lakefs_checksum" not in link for link in doc["links"])


def test_asset_refs_in_sorted_asset_key_order() -> None:
    out, _ = must(feature(zeta="tile.tif", alpha="thumb.png", mid="https://example.com/x"))
    assert out.asset_refs == (PIN + "stac/items/thumb.png", PIN + "stac/items/tile.tif")


def test_missing_asset_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match=r"asset 'data' -> stac/items/gone.tif missing at commit 0123456789ab"):
        rewrite(feature(data="gone.tif"))


def test_missing_lakefs_asset_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="missing at commit"):
        rewrite(feature(data=f"lakefs://{REPO}/main/stac/items/gone.tif"))


@pytest.mark.parametrize(
    "href",
    [
        "../../../etc/passwd",
        "../../..",
        "../../../stac/items/tile.tif",
        "/etc/passwd",
        "//evil.example/tile.tif",
    ],
)
def test_asset_href_escaping_the_repository_is_an_integrity_error(href: str) -> None:
    with pytest.raises(IntegrityError, match="points outside the repository"):
        rewrite(feature(data=href))


def test_link_href_escaping_the_repository_is_an_integrity_error() -> None:
    doc = {"type": "Catalog", "links": [{"rel": "root", "href": "../../../../catalog.json"}]}
    with pytest.raises(IntegrityError, match="points outside the repository"):
        rewrite(doc)


def test_escape_is_relative_to_the_stac_file_location() -> None:
    # From a top-level file even one '..' leaves the repository.
    with pytest.raises(IntegrityError, match="outside"):
        rewrite(feature(data="../tile.tif"), path="catalog.json")
    out, _ = must(feature(data="stac/items/tile.tif"), path="catalog.json")
    assert out.asset_refs == (PIN + "stac/items/tile.tif",)


@pytest.mark.parametrize(
    ("assets", "message"),
    [
        ({"data": {"type": "image/tiff"}}, "asset 'data' has no href"),
        ({"data": {"href": 5}}, "asset 'data' has no href"),
        ({"data": "tile.tif"}, "asset 'data' has no href"),
        (["tile.tif"], "assets must be an object"),
        ("tile.tif", "assets must be an object"),
    ],
)
def test_malformed_assets_are_integrity_errors(assets: Any, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        rewrite({"type": "Feature", "assets": assets})


def test_output_is_deterministic_sorted_compact_json() -> None:
    doc = feature(b="tile.tif", a="thumb.png")
    doc["properties"] = {"z": 1, "datetime": "2024-05-01T00:00:00Z", "a": [3, 2, 1]}
    first = rewrite(doc)
    second = rewrite(doc)
    reordered = rewrite(dict(reversed(list(doc.items()))))
    assert first is not None
    assert second is not None
    assert reordered is not None
    assert first.body == second.body == reordered.body
    assert first == second
    text = first.body.decode()
    assert ", " not in text
    assert ": " not in text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(text)["properties"]["a"] == [3, 2, 1]  # list order is kept


def test_non_ascii_kept_as_utf8() -> None:
    out, doc = must({"type": "Collection", "title": "Zürich Höhe"})
    assert "Zürich Höhe".encode() in out.body
    assert doc["title"] == "Zürich Höhe"


def test_external_only_feature_needs_no_objects() -> None:
    out = rewrite(feature(data="https://example.com/tile.tif"), objects={})
    assert out is not None
    assert out.asset_refs == ()


def test_type_of_the_wrong_json_type_is_not_stac() -> None:
    assert rewrite({"type": ["Feature"]}, "stac/item.json", {}) is None
    assert rewrite({"type": {"a": 1}}, "stac/item.json", {}) is None


def test_links_that_are_not_an_array_are_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="links"):
        rewrite({"type": "Feature", "links": "x"}, "stac/item.json", {})


def test_lakefs_href_climbing_out_of_the_repository_is_an_integrity_error() -> None:
    doc = {"type": "Feature", "links": [{"rel": "x", "href": f"lakefs://{REPO}/main/../../etc/passwd"}]}
    with pytest.raises(IntegrityError, match="outside"):
        rewrite(doc, "stac/item.json", {})


def test_relative_hrefs_are_url_decoded_and_keep_fragments() -> None:
    doc = {"type": "Feature", "links": [{"rel": "self", "href": "./item.json#top"}],
           "assets": {"d": {"href": "./a%20b.tif"}}}
    out = rewrite(doc, "stac/item.json", {"stac/a b.tif": (3, "etag")})
    assert out is not None
    body = json.loads(out.body)
    assert body["assets"]["d"]["href"] == f"{PIN}stac/a%20b.tif"
    assert body["assets"]["d"]["file:size"] == 3
    assert body["links"][0]["href"] == f"{PIN}stac/item.json#top"
