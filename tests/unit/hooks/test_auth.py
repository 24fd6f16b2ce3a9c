"""token_matches: the shared-secret check for lakeFS webhooks fails closed."""

from __future__ import annotations

import pytest

from hooks.auth import token_matches

SECRET = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("presented", "expected", "ok"),
    [
        pytest.param(SECRET, SECRET, True, id="right token"),
        pytest.param("ünïcødé-tøken-✓-0123", "ünïcødé-tøken-✓-0123", True, id="right non-ascii token"),
        pytest.param("x" * len(SECRET), SECRET, False, id="wrong token same length"),
        pytest.param(SECRET.upper(), SECRET, False, id="case differs"),
        pytest.param(SECRET[:-1], SECRET, False, id="prefix of the secret"),
        pytest.param(SECRET + "0", SECRET, False, id="secret plus a byte"),
        pytest.param(SECRET + " ", SECRET, False, id="trailing space"),
        pytest.param("", SECRET, False, id="empty header"),
        pytest.param(None, SECRET, False, id="missing header"),
        pytest.param("", "", False, id="empty expected, empty header"),
        pytest.param(None, "", False, id="empty expected, missing header"),
        pytest.param("anything", "", False, id="empty expected, some header"),
        pytest.param(SECRET.encode(), SECRET, True, id="right token as the bytes that arrived"),
        pytest.param("ünïcødé-tøken-✓-0123".encode(), "ünïcødé-tøken-✓-0123", True, id="right non-ascii bytes"),
        pytest.param(b"\xff\xfe", SECRET, False, id="bytes that are not UTF-8"),
        pytest.param(SECRET.encode() + b"\xff", SECRET, False, id="secret plus a byte that is not UTF-8"),
        pytest.param("caf\udce9", "café", False, id="latin-1 header as aiohttp decodes it, against UTF-8"),
        pytest.param(b"", SECRET, False, id="empty bytes"),
    ],
)
def test_token_matches(presented: str | bytes | None, expected: str, ok: bool) -> None:
    assert token_matches(presented, expected) is ok
