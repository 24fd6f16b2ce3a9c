"""Which paths are configs, and where members sit inside a bundle."""

from __future__ import annotations

import pytest

from worker.snapshot.select import (
    LAKEFS_ROOT,
    S3_ROOT,
    SnapshotRules,
    bundle_path,
    is_config,
    is_stac,
    lakefs_path_of,
    s3_bundle_path,
    s3_source_of,
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("configs/app.yaml", True),
        ("configs/sub/dir/app.yaml", True),
        ("configs/.env", True),
        ("configs", False),
        ("config/app.yaml", False),
        ("Configs/app.yaml", False),  # case-sensitive on every platform
        ("data/configs/app.yaml", False),
        ("configs.yaml", False),
        ("stac/catalog.json", False),
    ],
)
def test_is_config_with_default_globs(path: str, expected: bool) -> None:
    assert is_config(path, SnapshotRules()) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("settings.toml", True), ("deep/er/settings.toml", True), ("settings.TOML", False), ("configs/a.yaml", False)],
)
def test_is_config_with_custom_globs(path: str, expected: bool) -> None:
    assert is_config(path, SnapshotRules(config_globs=("*.toml",))) is expected


def test_no_globs_means_no_configs() -> None:
    assert not is_config("configs/app.yaml", SnapshotRules(config_globs=()))


@pytest.mark.parametrize("path", ["a.txt", "stac/items/x.json", "configs/sub/app.yaml", "lakefs/nested"])
def test_bundle_path_round_trips(path: str) -> None:
    member = bundle_path(path)
    assert member == LAKEFS_ROOT + path
    assert member.startswith("lakefs/")
    assert lakefs_path_of(member) == path


def test_s3_bundle_path() -> None:
    assert s3_bundle_path("models-bucket", "seg/v2/weights.bin") == "s3/models-bucket/seg/v2/weights.bin"
    assert s3_bundle_path("b", "k").startswith(S3_ROOT)


@pytest.mark.parametrize("member", ["s3/bucket/key", "lakefs", "other/lakefs/x", "LAKEFS/x", ""])
def test_lakefs_path_of_non_lakefs_members_is_none(member: str) -> None:
    assert lakefs_path_of(member) is None


def test_sources_never_collide() -> None:
    # Even a lakeFS object whose path looks like an S3 member stays in the lakefs/ namespace.
    assert bundle_path("s3/bucket/key") != s3_bundle_path("bucket", "key")
    assert lakefs_path_of(s3_bundle_path("lakefs", "x")) is None


@pytest.mark.parametrize(("bucket", "key"), [("models-bucket", "seg/v2/weights.bin"), ("b", "k"), ("b", "a/b/")])
def test_s3_source_of_inverts_s3_bundle_path(bucket: str, key: str) -> None:
    assert s3_source_of(s3_bundle_path(bucket, key)) == (bucket, key)


@pytest.mark.parametrize("member", ["lakefs/s3/bucket/key", "S3/b/k", "s3", "x/s3/b/k", ""])
def test_s3_source_of_other_members_is_none(member: str) -> None:
    assert s3_source_of(member) is None


@pytest.mark.parametrize(
    ("path", "prefixes", "expected"),
    [
        ("stac/catalog.json", ("stac/",), True),
        ("stac/items/x.json", ("stac/",), True),
        ("stac/items/x.tif", ("stac/",), False),
        ("data/stac/x.json", ("stac/",), False),
        ("catalogs/c.json", ("stac/", "catalogs/"), True),
        ("stac/catalog.json", (), False),
        ("", ("",), False),
    ],
)
def test_is_stac_is_json_under_a_stac_prefix(path: str, prefixes: tuple[str, ...], expected: bool) -> None:
    assert is_stac(path, SnapshotRules(stac_prefixes=prefixes)) is expected
