"""worker.bundle.manifest: strict parsing, canonical bytes, path rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.unit.bundle.helpers import COMMIT, make_manifest, member
from worker.bundle import LEGACY_ZSTD_LEVEL, MANIFEST_FORMAT, MANIFEST_FORMAT_V1, BundleManifest, check_member_path
from worker.errors import VerificationError


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty path"),
        ("/etc/passwd", "absolute path"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("a\\b", "backslash"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a/" + "x" * 256, "component longer"),
        ("/".join(["abcdefghi"] * 103), "longer than 1024"),
        ("bad\udcff", "UTF-8"),
    ],
)
def test_check_member_path_rejects(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_member_path(path)


@pytest.mark.parametrize("path", ["a", "configs/pipeline.yaml", "stac/é/ü.json", "a..b/c.."])
def test_check_member_path_accepts(path: str) -> None:
    assert check_member_path(path) == path


def test_round_trip_is_canonical() -> None:
    m = make_manifest({"b.txt": b"b", "a.txt": b"a"})
    assert [x.path for x in m.members] == ["a.txt", "b.txt"]  # build() sorts
    data = m.to_bytes()
    assert BundleManifest.from_bytes(data) == m
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert m.commit_mtime == int(datetime(2025, 11, 30, 12, tzinfo=UTC).timestamp())
    assert m.total_size == 2


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(make_manifest({"a.txt": b"a"}).to_bytes())
    doc.update(changes)
    return doc


def _canon(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


M0 = _doc()["members"][0]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff", "not valid JSON"),
        (b"[]", "<root>"),
        (_canon(_doc(extra=1)), "extra"),
        (_canon(_doc(format="kfm-rollback-bundle/v3")), "format"),
        (_canon(_doc(format="kfm-rollback-bundle/v2")), "requires zstd_level"),
        (_canon(_doc(zstd_level=3)), "zstd_level is not part of format kfm-rollback-bundle/v1"),
        (_canon(_doc(zstd_level=None)), "canonical"),
        (_canon(_doc(format="kfm-rollback-bundle/v2", zstd_level=0)), "zstd_level"),
        (_canon(_doc(format="kfm-rollback-bundle/v2", zstd_level=23)), "zstd_level"),
        (_canon(_doc(format="kfm-rollback-bundle/v2", zstd_level="3")), "zstd_level"),
        (_canon(_doc(format="kfm-rollback-bundle/v2", zstd_level=3.0)), "zstd_level"),
        (_canon(_doc(lakefs_commit="abc")), "lakefs_commit"),
        (_canon(_doc(lakefs_repo="KFM")), "lakefs_repo"),
        (_canon(_doc(lakefs_branch="../x")), "lakefs_branch"),
        (_canon(_doc(commit_created_at="2025-11-30T12:00:00+01:00")), "commit_created_at"),
        (_canon(_doc(commit_created_at="2025-11-30T12:00:00.000000Z")), "canonical"),
        (_canon(_doc(members=[{**M0, "size": "1"}])), "members.0.size"),
        (_canon(_doc(members=[{**M0, "size": True}])), "members.0.size"),
        (_canon(_doc(members=[{**M0, "size": -1}])), "members.0.size"),
        (_canon(_doc(members=[{**M0, "sha256": "A" * 64}])), "members.0.sha256"),
        (_canon(_doc(members=[{**M0, "kind": "binary"}])), "members.0.kind"),
        (_canon(_doc(members=[{**M0, "path": "../a"}])), "members.0.path"),
        (_canon(_doc(members=[{**M0, "path": "manifest.json"}])), "reserved"),
        (_canon(_doc(members=[{**M0, "mode": 420}])), "members.0.mode"),
        (_canon(_doc(members=[M0, M0])), "duplicate member path"),
        (_canon(_doc(members=[{**M0, "path": "b"}, M0])), "not sorted"),
        (_canon(_doc(members=[{**M0, "path": "a"}, {**M0, "path": "a/b"}])), "also a directory"),
        (_canon(_doc())[:-1] + b',"lakefs_repo":"kfm-main"}', "duplicate key"),
        (_canon(_doc()).replace(b'"size":1', b'"size":NaN'), "NaN"),
        (b" " + _canon(_doc()), "canonical"),
        (_canon(_doc()).replace(b'"size":1', b'"size":1.0'), "members.0.size"),
    ],
)
def test_from_bytes_rejects(data: bytes, needle: str) -> None:
    with pytest.raises(VerificationError, match=r"^manifest\.json: ") as exc:
        BundleManifest.from_bytes(data)
    assert needle in str(exc.value)


def test_constructor_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not a lakeFS commit id"):
        make_manifest({"a": b""}, commit="xyz")
    with pytest.raises(ValueError, match="UTC"):
        BundleManifest.build(
            lakefs_repo="kfm-main",
            lakefs_branch="prod",
            lakefs_commit=COMMIT,
            commit_created_at=datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            members=[member("a", b"")],
        )


def test_v1_manifest_has_no_level_and_means_10() -> None:
    """Bundles made before the level was recorded: format v1, no zstd_level key, level 10."""
    m = make_manifest({"a.txt": b"a"})
    assert m.format == MANIFEST_FORMAT_V1
    assert m.zstd_level is None
    assert m.compression_level == LEGACY_ZSTD_LEVEL == 10
    assert b"zstd_level" not in m.to_bytes()
    assert BundleManifest.from_bytes(m.to_bytes()).compression_level == 10


@pytest.mark.parametrize("level", [1, 3, 10, 19])
def test_v2_manifest_records_the_level(level: int) -> None:
    m = BundleManifest.build(
        lakefs_repo="kfm-main",
        lakefs_branch="prod",
        lakefs_commit=COMMIT,
        commit_created_at=datetime(2025, 11, 30, 12, tzinfo=UTC),
        members=[member("a.txt", b"a")],
        zstd_level=level,
    )
    assert m.format == MANIFEST_FORMAT == "kfm-rollback-bundle/v2"
    data = m.to_bytes()
    assert json.loads(data)["zstd_level"] == level
    back = BundleManifest.from_bytes(data)
    assert back == m
    assert back.compression_level == level
    # The same content as v1 apart from the two fields: nothing else changed.
    v1 = json.loads(make_manifest({"a.txt": b"a"}).to_bytes())
    assert {k: v for k, v in json.loads(data).items() if k not in ("format", "zstd_level")} == {
        k: v for k, v in v1.items() if k != "format"
    }
