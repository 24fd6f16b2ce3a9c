"""Taking a webhook request off the wire: its headers and its whole body, within bounds.

Why a reader of our own: ``StreamReader.read(n)`` returns whatever has arrived, so a body
sent in several TCP segments (or chunks) was parsed from its first piece; aiohttp's own
decompression fails inside its parser, where only a 500 can come out; and header values are
decoded with ``surrogateescape``, so a byte that is not UTF-8 blew up the first ``encode()``.
Here every failure is a :class:`RequestRefusedError` with a 4xx status and a one-line reason, the body
limit holds on the wire and after decoding, whatever the transfer framing, and decoding
stops one byte past the limit, so a decompression bomb costs no more than a full-size body.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from aiohttp import StreamReader
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

from worker.errors import RequestRefusedError

__all__ = [
    "CODINGS",
    "READ_HEADERS",
    "check_content_type",
    "check_headers",
    "content_coding",
    "decode_body",
    "header_values",
    "read_body",
]

#: Headers whose value the receiver uses; each may appear at most once (which of two
#: values would count is exactly the ambiguity request smuggling lives on).
READ_HEADERS = ("x-kfm-hook-token", "content-type", "content-encoding", "traceparent")

#: ``Content-Encoding`` values accepted (lower case) and the zlib window bits that decode them.
#: ``deflate`` is the zlib format (RFC 9110); raw deflate and stacked codings are refused.
CODINGS: dict[str, int] = {"identity": 0, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                           "deflate": zlib.MAX_WBITS}


def header_values(raw_headers: Sequence[tuple[bytes, bytes]], name: str) -> list[bytes]:
    """Every value of header ``name`` (case-insensitive), as the bytes that arrived."""
    key = name.lower().encode("ascii")
    return [v for k, v in raw_headers if k.lower() == key]


def check_headers(raw_headers: Sequence[tuple[bytes, bytes]]) -> None:
    """Refuse header values that are not UTF-8 and repeated headers the receiver reads.

    Raises:
        RequestRefusedError: 400, naming the header.
    """
    seen: set[str] = set()
    for name, value in raw_headers:
        key = name.decode("ascii", "replace").lower()  # the HTTP parser admits only token characters
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRefusedError(400, f"header {key}: value is not UTF-8") from None
        if key in READ_HEADERS:
            if key in seen:
                raise RequestRefusedError(400, f"header {key}: given more than once")
            seen.add(key)


def check_content_type(value: bytes | None) -> None:
    """``application/json``, with no charset or ``charset=utf-8`` (JSON is UTF-8 on the wire).

    Raises:
        RequestRefusedError: 415.
    """
    text = (value or b"").decode("utf-8", "replace")
    media, *params = (p.strip() for p in text.split(";"))
    if media.lower() != "application/json":
        raise RequestRefusedError(415, "Content-Type must be application/json")
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestRefusedError(415, "Content-Type charset must be utf-8")


def content_coding(value: bytes | None) -> str:
    """The body's one content coding: ``identity`` (also when absent), ``gzip`` or ``deflate``.

    Raises:
        RequestRefusedError: 415 for any other coding, or more than one.
    """
    coding = (value or b"identity").decode("utf-8", "replace").strip().lower()
    if coding not in CODINGS:
        raise RequestRefusedError(415, "Content-Encoding must be identity, gzip or deflate (one coding)")
    return coding


async def read_body(stream: StreamReader, limit: int, declared: int | None) -> bytes:
    """The whole body, however it is framed (Content-Length, chunked) and split across segments.

    ``declared`` is the Content-Length, if any: over the limit, nothing is read. The caller
    bounds the time (a client that stops sending must not hold the handler).

    Raises:
        RequestRefusedError: 413 past ``limit`` bytes; 400 if the framing is broken or the connection
            ends before the body does.
    """
    if declared is not None and declared > limit:
        raise RequestRefusedError(413, f"body larger than {limit} bytes")
    body = bytearray()
    while True:
        try:
            chunk = await stream.readany()
        except (RequestPayloadError, HttpProcessingError) as e:
            raise RequestRefusedError(400, f"body: broken transfer framing ({type(e).__name__})") from e
        except ConnectionError as e:
            raise RequestRefusedError(400, "body: connection closed before the body was complete") from e
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise RequestRefusedError(413, f"body larger than {limit} bytes")


def decode_body(raw: bytes, coding: str, limit: int) -> bytes:
    """Undo the content coding, producing at most ``limit`` bytes.

    gzip may hold several members (RFC 1952); each must be complete, and nothing may follow
    the last one. Decoding stops one byte past the limit, so its cost is bounded by the limit.

    Raises:
        RequestRefusedError: 400 if the data is not valid for its coding; 413 if it decodes past ``limit``.
    """
    wbits = CODINGS[coding]
    if not wbits:
        return raw
    out = bytearray()
    data = raw
    while True:
        d = zlib.decompressobj(wbits)
        try:
            out += d.decompress(data, limit + 1 - len(out))  # max_length >= 1: 0 would mean unbounded
        except zlib.error as e:
            raise RequestRefusedError(400, f"body: not valid {coding} data") from e
        if len(out) > limit:
            raise RequestRefusedError(413, f"body larger than {limit} bytes once decoded")
        if not d.eof:
            raise RequestRefusedError(400, f"body: {coding} data ends early")
        data = d.unused_data
        if not data:
            return bytes(out)
        if wbits != CODINGS["gzip"]:
            raise RequestRefusedError(400, f"body: data after the end of the {coding} stream")
