"""Safe extraction of a bundle for a restore.

Why not ``tarfile.extractall``: even with the ``data`` filter it creates
directories from entries, follows its own link rules and writes straight into
the destination. Here every entry goes through the same checks as
verification (regular files only, safe relative paths, limits, sizes and
digests against the manifest), files are created with ``O_EXCL|O_NOFOLLOW``
in a fresh private temporary directory next to the destination, re-hashed
from disk, and only then renamed into place. On any failure the temporary
directory is removed and the destination is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from worker.bundle._reader import hash_stream, read_bundle
from worker.bundle.manifest import BundleManifest, BundleMember, show_path
from worker.bundle.tarzst import CHUNK_SIZE
from worker.errors import VerificationError
from worker.limits import Limits

__all__ = ["ExtractedBundle", "extract_bundle"]

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
    """Write each member to a new file under ``root`` (our private temp dir)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._file: BinaryIO | None = None
        self._name = ""

    def begin(self, member: BundleMember) -> None:
        self._name = show_path(member.path)
        target = self._root.joinpath(*member.path.split("/"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, _CREATE_FLAGS, 0o644)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
            # e.g. two names that collide on a case-insensitive filesystem.
            raise VerificationError(
                f"member {self._name}: cannot create: clashes with another member"
            ) from e
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None  # begin() always runs first
        self._file.write(data)

    def end(self) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()


def _recheck(root: Path, manifest: BundleManifest) -> None:
    """Re-hash every extracted file from disk against the manifest.

    Why again: the stream was hashed on its way in; this catches anything
    between the stream and the disk (short writes, a bug in the sink).
    """
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    for m in manifest.members:
        path = root.joinpath(*m.path.split("/"))
        digest = hashlib.sha256()
        size = 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=0) as f:
            while n := f.readinto(view):
                digest.update(view[:n])
                size += n
        if size != m.size or digest.hexdigest() != m.sha256:
            raise VerificationError(
                f"member {show_path(m.path)}: extracted file does not match the manifest"
            )


def extract_bundle(
    bundle_path: Path,
    dest_dir: Path,
    limits: Limits,
    *,
    expected_sha256: str | None = None,
) -> ExtractedBundle:
    """Extract ``bundle_path`` into ``dest_dir``, all or nothing.

    Args:
        bundle_path: the ``.tar.zst`` bundle.
        dest_dir: must not exist, or be an empty directory; its parent must
            exist (the temporary directory is created there so the final
            rename stays on one filesystem).
        limits: bounds on everything read (``Settings.limits``; no default,
            so extraction obeys the same numbers as verification).
        expected_sha256: the bundle digest from :func:`verify_bundle`. Pass
            it: the bundle is then authenticated again before it is parsed,
            so a file swapped between verification and restore is refused.

    Returns:
        The manifest and the extracted file of every member.

    Raises:
        VerificationError: naming the member (or bundle) that was refused;
            ``dest_dir`` is left untouched.
        FileExistsError: ``dest_dir`` exists and is not an empty directory.
        OSError: the bundle cannot be read or the files cannot be written.
    """
    if dest_dir.is_symlink() or (
        dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir()))
    ):
        raise FileExistsError(f"{dest_dir}: exists and is not an empty directory")
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".partial", dir=dest_dir.parent)
    )
    try:
        sink = _DirSink(tmp)
        with bundle_path.open("rb") as f:
            if expected_sha256 is not None:
                sha256, _ = hash_stream(f, limits.max_bundle_bytes)
                if sha256 != expected_sha256:
                    raise VerificationError(
                        f"bundle: sha256 {sha256} does not match expected {expected_sha256}"
                    )
                f.seek(0)
            try:
                result = read_bundle(f, limits, sink)
            finally:
                sink.close()
        if expected_sha256 is not None and result.sha256 != expected_sha256:
            raise VerificationError("bundle: changed while being extracted")
        _recheck(tmp, result.manifest)
        # Replaces dest_dir if it is an empty directory; fails if someone
        # filled it meanwhile, and the except below cleans up.
        tmp.replace(dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {m.path: dest_dir.joinpath(*m.path.split("/")) for m in result.manifest.members}
    return ExtractedBundle(manifest=result.manifest, files=MappingProxyType(files))
