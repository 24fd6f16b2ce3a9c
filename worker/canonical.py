"""One canonical JSON encoding (RFC 8785) for everything that is hashed or signed.

Why: a digest or signature is only reproducible if every producer and verifier
derives the same bytes. We sign, store and verify those exact bytes and never a
re-encoding (see STYLE.md, anti-pattern 2).
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

__all__ = ["canonical_bytes", "sha256_hex"]


def canonical_bytes(obj: Any) -> bytes:
    """Encode ``obj`` as RFC 8785 (JCS) JSON.

    Raises:
        ValueError: if ``obj`` holds values JCS cannot encode (floats out of
            range, non-string keys, unsupported types).
    """
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError) as e:
        raise ValueError(f"cannot canonicalise: {e}") from e


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
