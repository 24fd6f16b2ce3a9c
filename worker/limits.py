"""Every size limit for untrusted input, in one object.

Why one object: webhook bodies, Kafka messages, bundles, manifests, envelopes
and model binaries all come from outside, and a limit that lives next to the
code that reads is easy to forget in the next reader. tuf keeps all of its
limits in one config object for the same reason. Operators set them once
(``KFM_LIMIT_*``, read by :mod:`worker.config`); every process obeys the same
numbers.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields

__all__ = ["DEFAULT_LIMITS", "MAX_PAX_HEADER_BYTES", "Limits", "limit_variable"]

#: A pax extended header only ever carries a long path or a large size for us;
#: bounding it keeps one crafted header from allocating gigabytes.
MAX_PAX_HEADER_BYTES = 64 * 1024

# Worst-case tar overhead per member: pax header block + its data + the ustar
# header + up to 511 bytes of padding.
_PER_MEMBER_OVERHEAD = 512 + MAX_PAX_HEADER_BYTES + 512 + 512
# End-of-archive blocks plus padding to one 10 KiB record.
_TAR_TRAILER = 2 * 512 + 10240


def _limit(default: int, variable: str) -> int:
    """A limit whose environment variable is ``KFM_LIMIT_<variable>``.

    Why not derived from the field name: the variables predate the ``max_*``
    field names, and operators' configuration must keep working.
    """
    return field(default=default, metadata={"variable": variable})


@dataclass(frozen=True)
class Limits:
    """Bounds on everything that arrives from outside; each a positive int.

    Attributes:
        max_webhook_bytes: a webhook body.
        max_message_bytes: a Kafka message (event, candidate, rollback request).
        max_model_bytes: a model binary named by the model manifest.
        max_member_bytes: one bundle member (model binaries are the big ones).
        max_total_bytes: the sum of a bundle's member sizes.
        max_members: members listed in one bundle manifest.
        max_stac_objects: STAC files in one commit.
        max_manifest_bytes: a bundle's ``manifest.json``.
        max_envelope_bytes: the DSSE envelope holding an attestation.
    """

    max_webhook_bytes: int = _limit(64 * 1024, "WEBHOOK_MAX_BYTES")
    max_message_bytes: int = _limit(1024 * 1024, "MESSAGE_MAX_BYTES")
    max_model_bytes: int = _limit(8 * 1024**3, "MODEL_MAX_BYTES")
    max_member_bytes: int = _limit(8 * 1024**3, "MEMBER_MAX_BYTES")
    max_total_bytes: int = _limit(64 * 1024**3, "BUNDLE_MAX_BYTES")
    max_members: int = _limit(100_000, "BUNDLE_MAX_MEMBERS")
    max_stac_objects: int = _limit(50_000, "STAC_MAX_OBJECTS")
    max_manifest_bytes: int = _limit(16 * 1024**2, "MANIFEST_MAX_BYTES")
    max_envelope_bytes: int = _limit(1024**2, "ENVELOPE_MAX_BYTES")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{f.name} must be a positive int, got {value!r}")

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
        """Upper bound of a compressed bundle file (zstd's worst-case expansion).

        Why: even hashing or downloading an endless stream must stop somewhere.
        """
        tar = self.max_tar_bytes
        return tar + tar // 128 + 1024**2


def limit_variable(f: Field[object]) -> str:
    """The environment variable that sets the limit field ``f``."""
    return f"KFM_LIMIT_{f.metadata['variable']}"


DEFAULT_LIMITS = Limits()
