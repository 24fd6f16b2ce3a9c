"""parse_model_manifest: repository content parsed strictly, duplicates refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import IntegrityError
from worker.snapshot.models import ModelEntry, ModelManifest, parse_model_manifest


def entry(**changes: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"name": "flood-net", "version": "1.2.0", "path": "models/flood-net/1.2.0/model.onnx"}
    e.update(changes)
    return e


def manifest(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"models": list(entries)}).encode()


def test_valid_manifest() -> None:
    m = parse_model_manifest(
        manifest(entry(), entry(name="seg_model", version="v2", path="s3://models-bucket/seg/v2/weights.bin"))
    )
    assert isinstance(m, ModelManifest)
    assert m.models == (
        ModelEntry(name="flood-net", version="1.2.0", path="models/flood-net/1.2.0/model.onnx"),
        ModelEntry(name="seg_model", version="v2", path="s3://models-bucket/seg/v2/weights.bin"),
    )


def test_empty_model_list_is_valid() -> None:
    assert parse_model_manifest(b'{"models": []}').models == ()


def test_same_name_other_version_is_not_a_duplicate() -> None:
    m = parse_model_manifest(manifest(entry(version="1"), entry(version="2")))
    assert [x.version for x in m.models] == ["1", "2"]


def test_duplicate_name_and_version_refused() -> None:
    with pytest.raises(IntegrityError, match="model manifest: duplicate name/version"):
        parse_model_manifest(manifest(entry(), entry(path="models/other.onnx")))


@pytest.mark.parametrize("path", ["model.onnx", "models/v1..2/m.bin", "s3://bucket/key", "a" * 1024])
def test_allowed_paths(path: str) -> None:
    assert parse_model_manifest(manifest(entry(path=path))).models[0].path == path


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        pytest.param(b"{", "model manifest: : Invalid JSON", id="bad JSON"),
        pytest.param(b"[]", "model manifest: : Input should be an object", id="array"),
        pytest.param(b"{}", "model manifest: models: Field required", id="missing models"),
        pytest.param(b'{"models": {}}', "model manifest: models: Input should be a valid array", id="models object"),
        pytest.param(
            json.dumps({"models": [], "extra": 1}).encode(),
            "model manifest: extra: Extra inputs are not permitted",
            id="unknown top-level field",
        ),
        pytest.param(
            manifest(entry(sha256="x")), "model manifest: models.0.sha256: Extra inputs", id="unknown entry field"
        ),
        pytest.param(manifest(entry(version=1)), "model manifest: models.0.version: Input should be a valid string",
                     id="numeric version (strict)"),
        pytest.param(manifest({"name": "a", "path": "p"}), "model manifest: models.0.version: Field required",
                     id="missing version"),
        pytest.param(manifest(entry(), entry(name="")), "model manifest: models.1.name: Value error", id="empty name"),
        pytest.param(manifest(entry(name=".hidden")), "models.0.name: Value error", id="name starts with dot"),
        pytest.param(manifest(entry(name="a/b")), "models.0.name: Value error", id="slash in name"),
        pytest.param(manifest(entry(name="a" * 129)), "models.0.name: Value error", id="name too long"),
        pytest.param(manifest(entry(version="1 0")), "models.0.version: Value error", id="space in version"),
        pytest.param(manifest(entry(path="")), "models.0.path: String should have at least 1 character",
                     id="empty path"),
        pytest.param(manifest(entry(path="a" * 1025)), "models.0.path: String should have at most 1024",
                     id="path too long"),
        pytest.param(manifest(entry(path="/etc/passwd")), "models.0.path: Value error", id="absolute path"),
        pytest.param(manifest(entry(path="../other-repo/m.bin")), "models.0.path: Value error", id="leading .."),
        pytest.param(manifest(entry(path="models/../../m.bin")), "models.0.path: Value error", id="inner .."),
        pytest.param(manifest(entry(path="models/..")), "models.0.path: Value error", id="trailing .."),
    ],
)
def test_malformed_manifest_raises_integrity_error_naming_the_field(raw: bytes, named: str) -> None:
    with pytest.raises(IntegrityError) as exc:
        parse_model_manifest(raw)
    assert named in str(exc.value), str(exc.value)
    assert str(exc.value).startswith("model manifest: ")


def test_at_most_1000_models() -> None:
    ok = manifest(*(entry(version=str(i)) for i in range(1000)))
    assert len(parse_model_manifest(ok).models) == 1000
    with pytest.raises(IntegrityError, match="model manifest: models: Tuple should have at most 1000 items"):
        parse_model_manifest(manifest(*(entry(version=str(i)) for i in range(1001))))
