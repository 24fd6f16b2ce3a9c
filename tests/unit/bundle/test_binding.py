"""worker.bundle.binding: which commit a bundle must be for, and whether its row records it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.unit.bundle.helpers import COMMIT, OTHER_COMMIT, build_bundle_bytes, golden_key, sign_for
from tests.unit.ledger.factories import make_body
from worker.bundle import verify_bundle
from worker.bundle.binding import bound_commit, check_recorded, commit_named_by
from worker.bundle.verify import VerifiedBundle
from worker.canonical import sha256_hex
from worker.errors import IntegrityError, VerificationError
from worker.keys import TrustedKeys
from worker.ledger.chain import next_row
from worker.ledger.row import LedgerRow
from worker.limits import DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("location", "commit"),
    [
        (f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst", COMMIT),
        (f"/tmp/downloads/{COMMIT}.tar.zst", COMMIT),
        (f"{COMMIT}.tar.zst", COMMIT),
        ("s3://kfm-registry/artifacts/latest.tar.zst", None),  # not a commit id
        (f"s3://kfm-registry/backup/{COMMIT}.tar.zst", None),  # not where the registry puts bundles
        (f"s3://kfm-registry/artifacts/x/{COMMIT}.tar.zst", None),
        (f"s3://kfm-registry/artifacts/{COMMIT.upper()}.tar.zst", None),
        (f"/tmp/{COMMIT}.tar", None),
        ("/tmp/bundle.tar.zst", None),
    ],
)
def test_the_commit_a_location_names(location: str, commit: str | None) -> None:
    assert commit_named_by(location) == commit


def test_bound_commit() -> None:
    uri = f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst"
    assert bound_commit(None, uri) == COMMIT
    assert bound_commit(COMMIT, uri) == COMMIT
    assert bound_commit(OTHER_COMMIT, "/tmp/bundle.tar.zst") == OTHER_COMMIT
    assert bound_commit(None, "/tmp/bundle.tar.zst") is None
    with pytest.raises(IntegrityError) as swapped:
        bound_commit(OTHER_COMMIT, uri)
    assert str(swapped.value) == f"{uri} is the bundle of commit {COMMIT}, not {OTHER_COMMIT}"
    with pytest.raises(IntegrityError, match="--commit 'abc': not a lakeFS commit id"):
        bound_commit("abc", uri)
    with pytest.raises(IntegrityError, match="not an s3:// URI"):
        bound_commit(None, "s3://bucket-without-key")


@pytest.fixture
def verified(tmp_path: Path) -> VerifiedBundle:
    bundle = build_bundle_bytes(tmp_path, {"a.txt": b"a"})
    trusted = TrustedKeys([golden_key().public_key()])
    return verify_bundle(io.BytesIO(bundle), sign_for(bundle), trusted, DEFAULT_LIMITS)


def _row(verified: VerifiedBundle, **changes: Any) -> LedgerRow:
    body: dict[str, Any] = {
        "lakefs_repo": verified.manifest.lakefs_repo, "lakefs_commit": verified.manifest.lakefs_commit,
        "checksums": {"artifact_sha256": verified.sha256},
    }
    return next_row(None, make_body(1, **{**body, **changes}))


def test_the_row_recording_the_bundle_is_accepted(verified: VerifiedBundle) -> None:
    row = _row(verified)
    assert check_recorded(verified, row) is row


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lakefs_commit": OTHER_COMMIT}, f"ledger: row 0 is of commit {OTHER_COMMIT}, not {COMMIT}"),
        ({"lakefs_repo": "kfm-other"},
         f"ledger: commit {COMMIT[:12]} is recorded for repository kfm-other, the bundle for kfm-main"),
        ({"checksums": {"artifact_sha256": sha256_hex(b"another bundle")}}, "is not the one recorded for commit"),
    ],
)
def test_a_row_that_records_something_else_is_refused(
    verified: VerifiedBundle, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(VerificationError) as exc:
        check_recorded(verified, _row(verified, **changes))
    assert message in str(exc.value)


def test_no_row_is_refused(verified: VerifiedBundle) -> None:
    with pytest.raises(IntegrityError) as exc:
        check_recorded(verified, None)
    assert str(exc.value) == f"no ledger row for commit {COMMIT}: the registry never recorded it"
