"""Every error class this project raises on purpose; their families are the retry policy.

``IntegrityError`` (bad data: tampered bundle, duplicate commit with another
digest, malformed message, an object that is not there) is never retried; it
is dead-lettered and reported. ``TransientError`` (a broker, lakeFS or S3 that
did not answer) is retried with backoff. ``ConflictError`` (a conditional
write lost to another writer) is retried too, but only after re-reading what
the other writer left: the same call would lose again. Third-party exceptions
are wrapped at the boundary with ``raise ... from e`` so that nothing else
leaks out of our modules; ``worker._internal`` raises only these classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # pydantic costs ~0.1 s to import; `kfm --help` and the CLI's error path load this module
    from pydantic import BaseModel, ValidationError

__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "ConflictError",
    "Error",
    "IntegrityError",
    "LeadershipLostError",
    "NotFoundError",
    "PayloadError",
    "RequestRefusedError",
    "SettingRefusedError",
    "TransientError",
    "UsageError",
    "VerificationError",
    "decode_json",
    "describe_validation_error",
]

M = TypeVar("M", bound="BaseModel")


class Error(Exception):
    """Base of every error this project raises on purpose."""

    def diagnostics(self) -> str:
        """A message fit for a person at a terminal; the CLI prints this."""
        return str(self)


class ConfigError(Error):
    """A setting is missing or invalid; the message names the setting."""


class UsageError(Error):
    """The command line is wrong (a malformed id, an ambiguous prefix, conflicting options);
    the message names the option and what it takes. The CLI exits 2 for it, as for argparse's own."""


class IntegrityError(Error):
    """Data is wrong or untrusted. Retrying cannot help."""


class VerificationError(IntegrityError):
    """A bundle, attestation, signature or ledger failed verification."""


class NotFoundError(IntegrityError):
    """The object, repository, ref or branch asked for does not exist (S3 or lakeFS)."""


class SettingRefusedError(ConfigError, IntegrityError):
    """A service refused a request because of a setting (S3: no such bucket, credentials refused).

    Both families: like bad data it is never retried, and like a missing
    setting its fix is the configuration, which the message names; the CLI
    exits 4 ("could not run") for it, not 1.
    """


class TransientError(Error):
    """A dependency did not answer; the same call may succeed later."""


class ConflictError(Error):
    """A conditional write lost: the object changed since it was read, or already exists.

    Retryable, unlike an :class:`IntegrityError`, but not by repeating the
    same call: the caller re-reads what the other writer left and decides
    again (the ledger writer reloads its head).
    """


class AlreadyExistsError(ConflictError):
    """``If-None-Match: *`` refused: an immutable object is already there.

    Callers that write immutable objects catch it and compare the bytes
    already stored with their own.
    """


class PayloadError(IntegrityError, ValueError):
    """A webhook body is not one we accept; ``str()`` names the field.

    The receiver answers it with a 4xx and publishes nothing: lakeFS sending
    the same body again cannot make it acceptable. Also a ``ValueError``, as
    every refusal of a malformed value is.
    """


class RequestRefusedError(IntegrityError):
    """The webhook receiver refuses a request (framing, headers, coding, size, time);
    ``status`` is the 4xx to answer, ``reason`` says why in one line. Sending the
    same request again cannot make it acceptable, so it is never retried."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LeadershipLostError(Exception):
    """The reconciler is no longer the group's leader: stop the pass where it is.

    Deliberately not an :class:`Error`: it is control flow, and the handlers
    that catch ``Error`` to report one branch's failure and go on to the next
    must let it through.
    """


def describe_validation_error(e: ValidationError, whole: str = "") -> str:
    """The first problem in ``e`` as ``field.path: message``; ``whole`` names the top level.

    Each message keeps the name its readers already know for the top level
    (``body`` for a webhook, ``<root>`` for a manifest); empty by default.

    Why not ``str(e)``: pydantic echoes the offending input, which for
    untrusted data can be large or carry control characters. Why only the
    first: one line per error, and the first fix is the one to make.
    """
    first = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or whole
    return f"{loc}: {first['msg']}"


def decode_json(model: type[M], data: bytes, what: str, *, whole: str = "") -> M:
    """Untrusted JSON as ``model``, refused in the one format: ``what: field.path: message``.

    Raises:
        IntegrityError: ``data`` is not valid JSON for ``model``.
    """
    from pydantic import ValidationError  # noqa: PLC0415 (see the TYPE_CHECKING import above)

    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        raise IntegrityError(f"{what}: {describe_validation_error(e, whole)}") from e
