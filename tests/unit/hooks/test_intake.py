"""hooks.intake: a webhook's headers and whole body, bounded, or a 4xx naming what is wrong."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from unittest import mock

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import TransferEncodingError
from aiohttp.web import RequestPayloadError

from hooks.intake import (
    check_content_type,
    check_headers,
    content_coding,
    decode_body,
    header_values,
    read_body,
)
from worker.errors import RequestRefusedError

LIMIT = 1024


# --- headers ------------------------------------------------------------------------------


def test_header_values_are_case_insensitive_and_keep_every_repeat() -> None:
    raw = ((b"X-KFM-Hook-Token", b"a"), (b"Host", b"h"), (b"x-kfm-hook-token", b"\xff"))
    assert header_values(raw, "X-KFM-HOOK-TOKEN") == [b"a", b"\xff"]
    assert header_values(raw, "Content-Type") == []


@pytest.mark.parametrize(
    "value",
    [b"\xff", b"caf\xe9", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xf0\x9f\x98"],
    ids=["0xff", "latin-1", "bad continuation", "encoded surrogate", "truncated 4-byte"],
)
@pytest.mark.parametrize("name", [b"traceparent", b"X-KFM-Hook-Token", b"User-Agent", b"X-Anything"])
def test_a_header_value_that_is_not_utf8_is_400_naming_the_header(name: bytes, value: bytes) -> None:
    with pytest.raises(RequestRefusedError) as exc:
        check_headers(((b"Host", b"x"), (name, value)))
    assert exc.value.status == 400
    assert exc.value.reason == f"header {name.decode().lower()}: value is not UTF-8"


@pytest.mark.parametrize("name", [b"X-KFM-Hook-Token", b"Content-Encoding", b"traceparent", b"Content-Type"])
def test_a_header_we_read_given_twice_is_400(name: bytes) -> None:
    with pytest.raises(RequestRefusedError) as exc:
        check_headers(((name, b"a"), (b"Host", b"x"), (name.upper(), b"a")))
    assert (exc.value.status, exc.value.reason) == (400, f"header {name.decode().lower()}: given more than once")


def test_repeats_of_headers_we_do_not_read_and_utf8_values_pass() -> None:
    check_headers(
        (
            (b"Accept", b"a"),
            (b"Accept", b"b"),
            (b"tracestate", b"k=v"),
            (b"tracestate", b"l=w"),  # W3C allows tracestate to be split over several headers
            (b"X-Note", "ünïcødé ✓".encode()),
        )
    )


# --- media type and coding ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"application/json",
        b"Application/JSON",
        b"application/json; charset=utf-8",
        b"application/json;charset=UTF-8",
        b'application/json; charset="utf-8"',
        b"application/json; charset=utf8",
        b"application/json; version=1",
    ],
)
def test_json_media_types_pass(value: bytes) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "Content-Type must be application/json"),
        (b"", "Content-Type must be application/json"),
        (b"text/plain", "Content-Type must be application/json"),
        (b"application/jsonx", "Content-Type must be application/json"),
        (b"application/vnd.api+json", "Content-Type must be application/json"),
        (b"application/x-www-form-urlencoded", "Content-Type must be application/json"),
        (b"application/json; charset=latin-1", "Content-Type charset must be utf-8"),
        (b"application/json; charset=utf-16", "Content-Type charset must be utf-8"),
    ],
)
def test_other_media_types_and_charsets_are_415(value: bytes | None, reason: str) -> None:
    with pytest.raises(RequestRefusedError) as exc:
        check_content_type(value)
    assert (exc.value.status, exc.value.reason) == (415, reason)


@pytest.mark.parametrize(
    ("value", "coding"),
    [
        (None, "identity"),
        (b"", "identity"),
        (b"identity", "identity"),
        (b"GZIP", "gzip"),
        (b" x-gzip ", "x-gzip"),
        (b"deflate", "deflate"),
    ],
)
def test_supported_codings(value: bytes | None, coding: str) -> None:
    assert content_coding(value) == coding


@pytest.mark.parametrize("value", [b"br", b"zstd", b"compress", b"snappy", b"gzip, gzip", b"gzip,identity", b"*"])
def test_other_or_stacked_codings_are_415(value: bytes) -> None:
    with pytest.raises(RequestRefusedError) as exc:
        content_coding(value)
    assert exc.value.status == 415


# --- decoding -----------------------------------------------------------------------------

BODY = b'{"event_type": "post-commit"}'


@pytest.mark.parametrize(
    ("coding", "wire"),
    [
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
    ],
)
def test_decode_gives_the_body_back(coding: str, wire: bytes) -> None:
    assert decode_body(wire, coding, LIMIT) == BODY


def test_gzip_members_are_concatenated() -> None:
    assert decode_body(gzip.compress(BODY[:10]) + gzip.compress(BODY[10:]), "gzip", LIMIT) == BODY


@pytest.mark.parametrize(
    ("coding", "wire", "reason"),
    [
        ("gzip", b"not gzip at all", "body: not valid gzip data"),
        ("gzip", b"", "body: gzip data ends early"),
        ("gzip", gzip.compress(BODY)[:-6], "body: gzip data ends early"),
        ("gzip", gzip.compress(BODY) + b"junk", "body: not valid gzip data"),
        ("gzip", zlib.compress(BODY), "body: not valid gzip data"),
        ("deflate", zlib.compress(BODY)[2:-4], "body: not valid deflate data"),  # raw deflate, no zlib header
        ("deflate", zlib.compress(BODY) + b"x", "body: data after the end of the deflate stream"),
        ("deflate", gzip.compress(BODY), "body: not valid deflate data"),
    ],
    ids=["garbage", "empty", "truncated", "trailing junk", "zlib as gzip", "raw deflate", "deflate trailing",
         "gzip as deflate"],
)
def test_malformed_coded_data_is_400(coding: str, wire: bytes, reason: str) -> None:
    with pytest.raises(RequestRefusedError) as exc:
        decode_body(wire, coding, LIMIT)
    assert (exc.value.status, exc.value.reason) == (400, reason)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_the_limit_is_inclusive_after_decoding(coding: str) -> None:
    compress = gzip.compress if coding == "gzip" else zlib.compress
    assert len(decode_body(compress(b"x" * LIMIT), coding, LIMIT)) == LIMIT
    with pytest.raises(RequestRefusedError) as exc:
        decode_body(compress(b"x" * (LIMIT + 1)), coding, LIMIT)
    assert (exc.value.status, exc.value.reason) == (413, f"body larger than {LIMIT} bytes once decoded")


def test_the_limit_counts_every_gzip_member() -> None:
    with pytest.raises(RequestRefusedError) as exc:
        decode_body(gzip.compress(b"x" * 600) + gzip.compress(b"y" * 600), "gzip", LIMIT)
    assert exc.value.status == 413


def test_a_decompression_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 1024**2, compresslevel=9) * 512  # 512 MiB in ~500 KiB of gzip members
    started = time.monotonic()
    with pytest.raises(RequestRefusedError) as exc:
        decode_body(bomb, "gzip", LIMIT)
    assert exc.value.status == 413
    assert time.monotonic() - started < 0.2  # decoding all of it takes seconds


# --- reading ------------------------------------------------------------------------------


def _stream() -> StreamReader:
    """The reader aiohttp hands a handler, on a connection that is open."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.transport = mock.Mock(spec=asyncio.Transport)
    return StreamReader(protocol, 2**16, loop=loop)


async def test_a_body_in_pieces_is_read_whole() -> None:
    stream = _stream()

    async def feed() -> None:
        for piece in (BODY[:3], BODY[3:20], BODY[20:]):
            await asyncio.sleep(0.01)
            stream.feed_data(piece)
        stream.feed_eof()

    feeder = asyncio.create_task(feed())
    assert await read_body(stream, LIMIT, None) == BODY
    await feeder


async def test_an_empty_body_is_empty() -> None:
    stream = _stream()
    stream.feed_eof()
    assert await read_body(stream, LIMIT, 0) == b""


async def test_a_declared_length_over_the_limit_reads_nothing() -> None:
    stream = mock.Mock(spec=StreamReader)
    with pytest.raises(RequestRefusedError) as exc:
        await read_body(stream, LIMIT, LIMIT + 1)
    assert exc.value.status == 413
    stream.readany.assert_not_called()


async def test_the_limit_holds_without_a_declared_length_and_is_inclusive() -> None:
    stream = _stream()
    stream.feed_data(b"x" * LIMIT)
    stream.feed_eof()
    assert len(await read_body(stream, LIMIT, None)) == LIMIT
    stream = _stream()
    for _ in range(LIMIT // 100 + 1):
        stream.feed_data(b"x" * 100)  # chunked: the first piece is small, the whole is not
    with pytest.raises(RequestRefusedError) as exc:
        await read_body(stream, LIMIT, None)  # no EOF fed: it stops at the limit, not at the end
    assert exc.value.status == 413


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionResetError("Connection lost"), "body: connection closed before the body was complete"),
        (RequestPayloadError("bad chunk"), "body: broken transfer framing (RequestPayloadError)"),
        (TransferEncodingError("bad chunk"), "body: broken transfer framing (TransferEncodingError)"),
    ],
)
async def test_a_body_that_breaks_off_is_400(error: Exception, reason: str) -> None:
    stream = _stream()
    stream.feed_data(BODY[:5])

    async def fail() -> None:
        await asyncio.sleep(0.01)
        stream.set_exception(error)

    failer = asyncio.create_task(fail())
    with pytest.raises(RequestRefusedError) as exc:
        await read_body(stream, LIMIT, len(BODY))
    assert (exc.value.status, exc.value.reason) == (400, reason)
    await failer
