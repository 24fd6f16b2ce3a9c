"""Every size limit for untrusted bundle input, in one object.

Why one object: a bundle, its manifest and its envelope all come from outside
(S3, an operator's laptop), and a limit that lives next to the code that reads
is easy to forget in the next reader. tuf keeps all of its limits in one config
object for the same reason (STYLE.md, anti-pattern 5).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from worker.config import Limits

__all__ = ["DEFAULT_LIMITS", "MAX_PAX_HEADER_BYTES", "BundleLimits"]

#: A pax extended header only ever carries a long path or a large size for us;
#: bounding it keeps one crafted header from allocating gigabytes.
MAX_PAX_HEADER_BYTES = 64 * 1024

# Worst-case tar overhead per member: pax header block + its data + the ustar
# header + up to 511 bytes of padding.
_PER_MEMBER_OVERHEAD = 512 + MAX_PAX_HEADER_BYTES + 512 + 512
# End-of-archive blocks plus padding to one 10 KiB record.
_TAR_TRAILER = 2 * 512 + 10240


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on a bundle read from outside.

    Attributes:
        max_member_bytes: largest single member (model binaries are the big ones).
        max_total_bytes: sum of all member sizes.
        max_members: number of members listed in the manifest.
        max_manifest_bytes: size of ``manifest.json``.
        max_envelope_bytes: size of the DSSE envelope holding the attestation.
    """

    max_member_bytes: int = 8 * 1024**3
    max_total_bytes: int = 64 * 1024**3
    max_members: int = 100_000
    max_manifest_bytes: int = 16 * 1024**2
    max_envelope_bytes: int = 1024**2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BundleLimits.{f.name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, limits: Limits) -> BundleLimits:
        """The bundle view of the process-wide :class:`worker.config.Limits`.

        Why: operators set ``KFM_*`` limits once; the bundle layer must obey
        the same numbers rather than its own defaults.
        """
        return cls(
            max_member_bytes=limits.member_max_bytes,
            max_total_bytes=limits.bundle_max_bytes,
            max_members=limits.bundle_max_members,
        )

    @property
    def max_tar_bytes(self) -> int:
        """Upper bound of the decompressed tar stream a valid bundle can have.

        Why: it caps a decompression bomb before any per-member check runs.
        """
        return (
            self.max_total_bytes
            + self.max_manifest_bytes
            + (self.max_members + 1) * _PER_MEMBER_OVERHEAD
            + _TAR_TRAILER
        )

    @property
    def max_bundle_bytes(self) -> int:
        """Upper bound of the compressed bundle (zstd's worst-case expansion).

        Why: even hashing an endless stream must stop somewhere.
        """
        tar = self.max_tar_bytes
        return tar + tar // 128 + 1024**2


DEFAULT_LIMITS = BundleLimits()
