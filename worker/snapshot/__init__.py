"""What a commit contributes to its bundle: STAC, configs, models (pure logic)."""

from worker.snapshot.models import ModelEntry, ModelManifest, parse_model_manifest
from worker.snapshot.select import (
    SnapshotRules,
    bundle_path,
    is_config,
    is_stac,
    lakefs_path_of,
    s3_bundle_path,
    s3_source_of,
)
from worker.snapshot.stac import StacRewrite, rewrite_stac

__all__ = [
    "ModelEntry",
    "ModelManifest",
    "SnapshotRules",
    "StacRewrite",
    "bundle_path",
    "is_config",
    "is_stac",
    "lakefs_path_of",
    "parse_model_manifest",
    "rewrite_stac",
    "s3_bundle_path",
    "s3_source_of",
]
