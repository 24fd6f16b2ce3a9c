"""Safe extraction of a bundle for a restore: verified and written in one pass, published all at once.

Why not ``tarfile.extractall``: even with the ``data`` filter it creates
directories from entries, follows its own link rules and writes straight into
the destination. Here every entry goes through verification itself
(:func:`~worker.bundle._reader.read_bundle`: regular files only, safe relative
paths, limits, sizes and digests against the manifest) while it streams into
files created with ``O_EXCL|O_NOFOLLOW`` in a fresh private staging directory
next to the destination. Only when the whole bundle has passed (its digest
included, which is known only at its last byte) is the staging directory
renamed into place; on any failure it is removed and the destination is left
as it was.

Why no second read of the extracted files: each member's digest is computed
on the very chunks written to its file, and after the last write the file's
size on disk is checked against the manifest; hashing the files again would
re-read the page cache (not the disk) and double the cost of a restore.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from worker.bundle._hashing import BACKGROUND_HASH_BYTES, BackgroundWriter, write_all
from worker.bundle._reader import MemberSink, read_bundle
from worker.bundle.manifest import BundleManifest, BundleMember, show_path
from worker.errors import VerificationError
from worker.limits import Limits

__all__ = ["ExtractedBundle", "Staging", "extract_bundle", "staged_extraction"]

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ExtractedBundle:
    """The result of a successful extraction.

    Attributes:
        manifest: the bundle's manifest.
        files: member path -> extracted file under the destination directory.
    """

    manifest: BundleManifest
    files: Mapping[str, Path]


class _DirSink:
    """Write each member to a new file under ``root`` (our private staging dir)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._fd = -1
        self._member: BundleMember | None = None
        self._dirs: set[Path] = {root}
        self._writer: BackgroundWriter | None = None

    def begin(self, member: BundleMember) -> None:
        target = self._root.joinpath(*member.path.split("/"))
        try:
            if target.parent not in self._dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(target.parent)
            self._fd = os.open(target, _CREATE_FLAGS, 0o644)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
            # e.g. two names that collide on a case-insensitive filesystem.
            raise VerificationError(
                f"member {show_path(member.path)}: cannot create: clashes with another member"
            ) from e
        self._member = member
        if member.size >= BACKGROUND_HASH_BYTES:
            self._writer = BackgroundWriter(self._fd)

    def write(self, data: bytes | memoryview) -> None:
        if self._writer is not None:
            self._writer.write(data)
            return
        write_all(self._fd, data)

    def end(self) -> None:
        assert self._member is not None  # begin() always runs first
        member, fd = self._member, self._fd
        try:
            if self._writer is not None:
                self._writer.finish()
            size = os.fstat(fd).st_size
        finally:
            self.close()
        if size != member.size:
            raise VerificationError(
                f"member {show_path(member.path)}: extracted file has {size} bytes, the manifest {member.size}"
            )

    def close(self) -> None:
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                with contextlib.suppress(OSError):  # failing already: the first error is the one raised
                    writer.finish()
        finally:
            self._member = None
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)


class Staging:
    """A private directory beside the destination that becomes it only by :meth:`publish`.

    Attributes:
        sink: where a verification streams the members
            (:func:`~worker.bundle.verify.verify_bundle`'s ``sink``).
    """

    def __init__(self, dest_dir: Path) -> None:
        want = "give the path of a new or empty directory"
        if dest_dir.is_symlink():  # not followed: the restore would land wherever the link points
            raise FileExistsError(errno.EEXIST, f"is a symbolic link; {want} (a link is not followed)", str(dest_dir))
        if dest_dir.exists() and not dest_dir.is_dir():
            raise FileExistsError(errno.EEXIST, f"exists and is not a directory; {want}", str(dest_dir))
        if dest_dir.exists() and any(dest_dir.iterdir()):
            raise FileExistsError(errno.ENOTEMPTY, f"is not empty; {want} (a restore never overwrites)",
                                  str(dest_dir))
        if not dest_dir.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "its parent directory does not exist; create it first",
                                    str(dest_dir))
        self._dest = dest_dir
        self._tmp = Path(
            tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".partial", dir=dest_dir.parent)
        )
        self._sink = _DirSink(self._tmp)
        self.sink: MemberSink = self._sink
        self.published = False

    def publish(self, manifest: BundleManifest) -> ExtractedBundle:
        """Rename the staging directory into place: call only once every check passed.

        Raises:
            OSError: the destination was filled meanwhile (the staging
                directory is then removed by :func:`staged_extraction`).
        """
        self._sink.close()
        # Replaces dest_dir if it is an empty directory; fails if someone
        # filled it meanwhile.
        self._tmp.replace(self._dest)
        self.published = True
        files = {m.path: self._dest.joinpath(*m.path.split("/")) for m in manifest.members}
        return ExtractedBundle(manifest=manifest, files=MappingProxyType(files))

    def discard(self) -> None:
        self._sink.close()
        if not self.published:
            shutil.rmtree(self._tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_extraction(dest_dir: Path) -> Iterator[Staging]:
    """A :class:`Staging` for ``dest_dir``, removed on leaving unless it was published.

    Raises:
        FileExistsError: ``dest_dir`` is a symbolic link, or exists and is not an empty directory.
    """
    staging = Staging(dest_dir)
    try:
        yield staging
    finally:
        staging.discard()


def extract_bundle(
    bundle_path: Path,
    dest_dir: Path,
    limits: Limits,
    *,
    expected_sha256: str | None = None,
) -> ExtractedBundle:
    """Extract ``bundle_path`` into ``dest_dir``, all or nothing, in one pass over the file.

    Args:
        bundle_path: the ``.tar.zst`` bundle.
        dest_dir: must not exist, or be an empty directory; its parent must
            exist (the staging directory is created there so the final
            rename stays on one filesystem).
        limits: bounds on everything read (``Settings.limits``; no default,
            so extraction obeys the same numbers as verification).
        expected_sha256: the bundle's digest (the attested subject, or the
            ledger row's). Pass it: nothing is published unless the bytes
            extracted are the bytes it names. To verify the signature as
            well in the same pass, use :func:`~worker.bundle.verify.verify_bundle`
            with a :func:`staged_extraction`'s sink.

    Returns:
        The manifest and the extracted file of every member.

    Raises:
        VerificationError: naming the member (or bundle) that was refused;
            ``dest_dir`` is left untouched.
        FileExistsError: ``dest_dir`` is a symbolic link, or exists and is not an empty directory.
        OSError: the bundle cannot be read or the files cannot be written.
    """

    def check_digest(sha256: str) -> None:
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise VerificationError(f"bundle: sha256 {sha256} does not match expected {expected_sha256}")

    with staged_extraction(dest_dir) as staging, bundle_path.open("rb") as f:
        result = read_bundle(f, limits, staging.sink, check_digest=check_digest)
        return staging.publish(result.manifest)
