"""worker.ids: S3 URIs split one way for every caller."""

from __future__ import annotations

import pytest

from worker.ids import s3_key_in, split_s3_uri


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("s3://kfm-registry/bundles/a.tar.zst", ("kfm-registry", "bundles/a.tar.zst")),
        ("s3://b/k/with/slashes", ("b", "k/with/slashes")),
        ("s3://b/", ("b", "")),
    ],
)
def test_split_s3_uri(uri: str, parts: tuple[str, str]) -> None:
    assert split_s3_uri(uri) == parts


@pytest.mark.parametrize("uri", ["s3://bucket-only", "https://b/k", "b/k", "S3://b/k", ""])
def test_split_s3_uri_refuses_what_is_not_one(uri: str) -> None:
    with pytest.raises(ValueError, match="not an s3:// URI"):
        split_s3_uri(uri)


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("s3://kfm-registry/bundles/a.tar.zst", "bundles/a.tar.zst"),
        ("s3://kfm-registry-2/bundles/a.tar.zst", None),  # a bucket whose name starts the same
        ("s3://other/bundles/a.tar.zst", None),
        ("https://kfm-registry/bundles/a.tar.zst", None),
    ],
)
def test_s3_key_in_the_registry_bucket_only(uri: str, key: str | None) -> None:
    assert s3_key_in(uri, "kfm-registry") == key
