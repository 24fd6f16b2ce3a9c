"""Two error families, and they are the retry policy.

``IntegrityError`` (bad data: tampered bundle, duplicate commit with another
digest, malformed message) is never retried; it is dead-lettered and reported.
``TransientError`` (a broker, lakeFS or S3 that did not answer) is retried
with backoff. Third-party exceptions are wrapped at the boundary with
``raise ... from e`` so that nothing else leaks out of our modules.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Error",
    "IntegrityError",
    "TransientError",
    "VerificationError",
]


class Error(Exception):
    """Base of every error this project raises on purpose."""

    def diagnostics(self) -> str:
        """A message fit for a person at a terminal; the CLI prints this."""
        return str(self)


class ConfigError(Error):
    """A setting is missing or invalid; the message names the setting."""


class IntegrityError(Error):
    """Data is wrong or untrusted. Retrying cannot help."""


class VerificationError(IntegrityError):
    """A bundle, attestation, signature or ledger failed verification."""


class TransientError(Error):
    """A dependency did not answer; the same call may succeed later."""
