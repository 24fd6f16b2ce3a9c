"""Which commit a bundle is used for, and whether the registry recorded it.

A bundle that verifies proves only that a trusted key signed it. Two more
facts make it the right bundle for a use:

* **Binding.** When the caller knows the commit (``--commit``, the
  ``<commit>.tar.zst`` name the registry gives every bundle, or the ledger row
  a rollback asked for), the manifest and the attestation must both name it;
  :func:`~worker.bundle.verify.verify_bundle` checks that given
  :func:`bound_commit`'s answer. Otherwise a signed bundle of commit B stored
  under A's name would verify, and restore, as A's.
* **Registration.** The ledger row of the bundle's commit records this
  bundle's digest (:func:`check_recorded`), and the row is included in the
  latest signed checkpoint (the caller's inclusion proof): the way a
  transparency-log client checks an entry, so a bundle signed but never
  recorded, or recorded differently, is refused.

Pure: callers fetch the bundle and the row.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from worker.bundle.verify import VerifiedBundle
from worker.constants import ARTIFACTS_PREFIX
from worker.errors import IntegrityError, VerificationError
from worker.ids import check_commit, split_s3_uri

if TYPE_CHECKING:  # the row model costs ~15 ms of start-up that an offline verify never uses
    from worker.ledger.row import LedgerRow

__all__ = ["BUNDLE_SUFFIX", "bound_commit", "check_recorded", "commit_named_by"]

#: The registry stores a commit's bundle as ``artifacts/<commit>.tar.zst``.
BUNDLE_SUFFIX = ".tar.zst"


def _commit_of_name(name: str) -> str | None:
    stem = name.removesuffix(BUNDLE_SUFFIX)
    if stem == name:
        return None
    try:
        return check_commit(stem)
    except ValueError:
        return None


def commit_named_by(location: str) -> str | None:
    """The commit a bundle's location names, or None if it names none.

    ``s3://<bucket>/artifacts/<commit>.tar.zst`` (where the registry puts
    it) and a local file ``<commit>.tar.zst`` (the name a download keeps)
    name a commit; any other location does not.

    Raises:
        IntegrityError: ``location`` starts with ``s3://`` but is not an S3 URI.
    """
    if location.startswith("s3://"):
        try:
            _, key = split_s3_uri(location)
        except ValueError as e:
            raise IntegrityError(str(e)) from e
        rest = key.removeprefix(ARTIFACTS_PREFIX)
        return None if rest == key or "/" in rest else _commit_of_name(rest)
    return _commit_of_name(PurePosixPath(location).name)


def bound_commit(given: str | None, location: str) -> str | None:
    """The commit the bundle at ``location`` must be for; None if unknown.

    Args:
        given: the commit the user named (``--commit``), if any.
        location: the bundle's path or ``s3://`` URI.

    Raises:
        IntegrityError: ``given`` is not a commit id, or the location names
            another commit.
    """
    named = commit_named_by(location)
    if given is None:
        return named
    try:
        check_commit(given)
    except ValueError as e:
        raise IntegrityError(f"--commit {given!r}: {e}") from e
    if named is not None and named != given:
        raise IntegrityError(f"{location} is the bundle of commit {named}, not {given}")
    return given


def check_recorded(verified: VerifiedBundle, row: LedgerRow | None) -> LedgerRow:
    """The ledger row of the verified bundle's commit, if it records this bundle.

    Raises:
        IntegrityError: the commit has no row.
        VerificationError: the row is of another commit or repository, or
            records another bundle digest.
    """
    commit = verified.manifest.lakefs_commit
    if row is None:
        raise IntegrityError(f"no ledger row for commit {commit}: the registry never recorded it")
    if row.lakefs_commit != commit:
        raise VerificationError(f"ledger: row {row.seq} is of commit {row.lakefs_commit}, not {commit}")
    if row.lakefs_repo != verified.manifest.lakefs_repo:
        raise VerificationError(
            f"ledger: commit {commit[:12]} is recorded for repository {row.lakefs_repo},"
            f" the bundle for {verified.manifest.lakefs_repo}"
        )
    if row.checksums.artifact_sha256 != verified.sha256:
        raise VerificationError(
            f"ledger: bundle sha256 {verified.sha256} is not the one recorded for commit"
            f" {commit[:12]} ({row.checksums.artifact_sha256})"
        )
    return row
