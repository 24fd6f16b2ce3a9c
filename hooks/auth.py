"""Shared-secret check for lakeFS webhooks.

lakeFS can only send static headers (filled from ``{{ ENV.LAKEFSACTION_... }}``),
so the receiver compares a header with a secret. Both sides are hashed first so
``hmac.compare_digest`` sees equal-length inputs and the comparison time does
not depend on where, or whether in length, the strings differ. The header is
compared as the bytes that arrived: a value that is not UTF-8 is simply wrong,
never an encoding error.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["token_matches"]


def token_matches(presented: bytes | str | None, expected: str) -> bool:
    if not expected:
        return False  # fail closed: no configured secret accepts nothing
    raw = presented.encode("utf-8", "surrogateescape") if isinstance(presented, str) else presented
    given = hashlib.sha256(raw or b"").digest()
    want = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(given, want) and raw is not None
