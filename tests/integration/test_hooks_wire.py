"""The live `kfm hooks serve` against what arrives on a socket: framing, coding, headers, timing.

Requests go over raw sockets so delivery patterns are real: headers first and the body in
pieces, chunked, slow, cut off, stalled, oversized, compressed or not. An oracle below says,
from how a request was built, which answers are right; the table of named cases pins the
examples that once went wrong, and a property-based run sends well over a thousand
generated requests. Afterwards the events topic (a prefix of this module's own) must hold
exactly the events of the requests answered 202, the process must still answer, and its log
must hold no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.helpers import end_offsets, free_port, hooks_server, isolated_registry, logs_dir, read_since
from worker.constants import HOOK_TOKEN_HEADER, TOPIC_EVENTS
from worker.events import CommitEvent

pytestmark = pytest.mark.stack

LIMIT = 4096  # KFM_LIMIT_WEBHOOK_MAX_BYTES for this server
READ_TIMEOUT = 1.0  # KFM_HOOKS_READ_TIMEOUT_S for this server: ten times the slowest valid delivery
KAFKA_TIMEOUT = 4.0  # KFM_KAFKA_TIMEOUT_S: a slow broker is a 503 within ANSWER_WITHIN, not a hang
WATCHED = ("main", "feature/x")
ANSWER_WITHIN = 5.0  # seconds: the read timeout plus a publish, with room for a busy machine
BATCH = 8  # requests sent at once per generated example
EXAMPLES = 130  # generated examples per run: BATCH * EXAMPLES requests
PLACEHOLDER = "<commit>"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01".encode()


@dataclass(frozen=True)
class Server:
    port: int
    token: bytes
    bootstrap: str
    topic: str
    log: Path
    log_start: int  # the log file may hold an earlier run's lines

    def log_text(self) -> str:
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[Server]:
    prefix = f"wire-{uuid.uuid4().hex[:8]}."
    env = isolated_registry(stack_env, prefix)
    token = Path(stack_env["KFM_HOOK_TOKEN_FILE"]).read_text().strip().encode()
    port = free_port()
    log = logs_dir(env) / f"hooks-test-{port}.log"
    log_start = log.stat().st_size if log.exists() else 0
    extra = {
        "KFM_HOOKS_PORT": str(port),
        "KFM_LIMIT_WEBHOOK_MAX_BYTES": str(LIMIT),
        "KFM_HOOKS_READ_TIMEOUT_S": str(READ_TIMEOUT),
        "KFM_KAFKA_TIMEOUT_S": str(KAFKA_TIMEOUT),
        "KFM_WATCHED_BRANCHES": ",".join(WATCHED),
    }
    with hooks_server(env, **extra):
        yield Server(port, token, env["KFM_KAFKA_BOOTSTRAP"], prefix + TOPIC_EVENTS, log, log_start)


# --- one request, built ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A request as built; ``expected`` says from these fields alone which answers are right."""

    body: bytes | dict[str, Any]  # a dict is serialised with a fresh commit id where PLACEHOLDER is
    kind: str  # publish | ignored | unwatched | invalid | not-object | garbage
    method: str = "POST"
    path: str = "/lakefs/webhook"
    token: str = "good"  # good | missing | wrong | not-utf8 | twice | good+wrong | padded
    content_type: bytes | None = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    coding: str = "absent"  # absent | identity | gzip | x-gzip | deflate | bad | cut | bomb | <unsupported>
    framing: str = "length"  # length | chunked | none
    chunk: int = 64  # chunk size for chunked framing
    delivery: str = "whole"  # whole | split | slow | truncated | stall
    cut: float = 0.5  # where split, truncated and stall deliveries cut the framed body
    pad: int = 0  # characters added to commit_message (to go past the limit)
    dup_key: bool = False  # give the first key of the JSON object twice
    ascii_json: bool = True
    expect: bool = False  # send Expect: 100-continue and the body only after the 100


UNSUPPORTED_CODINGS = ("br", "zstd", "compress", "gzip, gzip", "snappy")
# aiohttp refuses the head itself: a control byte in a value, a line past 8190 bytes, an unknown
# method, and a second User-Agent (one of the headers it allows only once).
BAD_HEAD_HEADERS = (b"x-ctl", b"x-long")
METHODS = ("POST", "GET", "PUT", "DELETE")


def _commit(n: int | str) -> str:
    return hashlib.sha256(f"wire-{n}".encode()).hexdigest()


def _json(case: Case, commit: str) -> bytes:
    if isinstance(case.body, bytes):
        return case.body
    doc = {k: (commit if v == PLACEHOLDER else v) for k, v in case.body.items()}
    if case.pad:
        doc["commit_message"] = str(doc.get("commit_message", "")) + "p" * case.pad
    raw = json.dumps(doc, ensure_ascii=case.ascii_json).encode("utf-8", "surrogatepass")
    if case.dup_key and doc:
        key, value = next(iter(doc.items()))  # present for sure, whatever was dropped
        raw = raw[:-1] + b", " + json.dumps({key: value})[1:].encode("utf-8", "surrogatepass")
    return raw


BOMB = gzip.compress(b" " * (4 * 1024 * 1024), compresslevel=9)


def _coded(case: Case, body: bytes) -> bytes:
    if case.coding in ("gzip", "x-gzip"):
        return gzip.compress(body, mtime=0)
    if case.coding == "deflate":
        return zlib.compress(body)
    if case.coding == "bad":  # labelled gzip, not gzip
        return b"\x1f\x8b\x08\x00garbage" + body
    if case.coding == "cut":  # gzip missing its trailer
        return gzip.compress(body, mtime=0)[:-6]
    if case.coding == "bomb":
        return BOMB
    return body


def _coding_header(case: Case) -> bytes | None:
    return {"absent": None, "bad": b"gzip", "cut": b"gzip", "bomb": b"gzip"}.get(
        case.coding, case.coding.encode()
    )


def _framed(case: Case, wire: bytes) -> bytes:
    if case.framing != "chunked":
        return wire
    out = bytearray()
    for i in range(0, len(wire), case.chunk):
        piece = wire[i : i + case.chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


def _token_headers(case: Case, token: bytes) -> list[tuple[bytes, bytes]]:
    name = HOOK_TOKEN_HEADER.encode()
    return {
        "good": [(name, token)],
        "padded": [(name, b" " + token + b"\t")],  # optional whitespace is not part of the value
        "missing": [],
        "wrong": [(name, b"wrong-" + token)],
        "not-utf8": [(name, token + b"\xff")],
        "twice": [(name, token), (name, token)],
        "good+wrong": [(name, token), (name.lower(), b"nope")],
    }[case.token]


def build(case: Case, token: bytes, commit: str) -> tuple[bytes, bytes]:
    """The request head and the framed body, as they go on the wire."""
    wire = _coded(case, _json(case, commit))
    lines = [f"{case.method} {case.path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    headers = _token_headers(case, token)
    if case.content_type is not None:
        headers.append((b"Content-Type", case.content_type))
    coding = _coding_header(case)
    if coding is not None:
        headers.append((b"Content-Encoding", coding))
    if case.framing == "length":
        headers.append((b"Content-Length", str(len(wire)).encode()))
    elif case.framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
    if case.expect:
        headers.append((b"Expect", b"100-continue"))
    headers.extend(case.headers)
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n", _framed(case, wire)


# --- what the answer must be ----------------------------------------------------------------


def _head_refused(case: Case) -> bool:
    names = [k.lower() for k, _ in case.headers]
    return (
        case.method not in METHODS
        or any(n in BAD_HEAD_HEADERS for n in names)
        or names.count(b"user-agent") > 1
    )


def _before_body(case: Case) -> int | None:
    """The answer decided from the request head alone, if any, in the server's order of checks."""
    if _head_refused(case):
        return 400
    if case.path.split("?")[0] != "/lakefs/webhook":
        return 404
    if case.method != "POST":
        return 405
    if case.token not in ("good", "padded"):
        return 401
    names = [k.lower() for k, _ in case.headers]
    codings = names.count(b"content-encoding") + (_coding_header(case) is not None)
    if any(_not_utf8(v) for _, v in case.headers) or names.count(b"traceparent") > 1 or codings > 1:
        return 400
    media, _, params = (case.content_type or b"").decode().partition(";")
    if media.strip().lower() != "application/json" or "latin" in params.lower():
        return 415
    if case.coding in UNSUPPORTED_CODINGS:
        return 415
    return None


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _body_answer(case: Case, raw: bytes) -> int:
    if case.kind == "publish" and case.pad == 0 and not case.dup_key:
        return 202
    if case.kind in ("ignored", "unwatched") and case.pad == 0 and not case.dup_key:
        return 200
    if case.kind == "garbage":
        return 422 if raw.strip().startswith(b"{") else 400
    if case.kind == "not-object":
        return 400
    return 422


def expected(case: Case) -> set[int | None]:
    """Every answer that is right for ``case`` (None: the server closes without one)."""
    early = _before_body(case)
    raw = _json(case, _commit(0))
    wire = _coded(case, raw)
    if case.framing == "none" and wire:
        # Without framing the body is no body: aiohttp takes its bytes for a next request on a
        # connection the client said it would close, and refuses that (or the request before it
        # is answered as having an empty body).
        return {400, None} | ({early} if early is not None else set())
    if case.delivery == "truncated":
        # The server may answer what the head decided before it sees the end of the stream.
        # Otherwise the close ends the connection before any answer can be written.
        return {None, early} if early is not None else {None} | ({413} if len(wire) > LIMIT else set())
    if early is not None:
        # aiohttp closes at once on a head it refuses, and a close with unread data is a reset
        # that can discard its answer; any early answer may race the rest of a body in pieces.
        return {early, None} if _head_refused(case) or case.delivery != "whole" else {early}
    if case.delivery == "stall":
        return {408, 413} if len(wire) > LIMIT else {408}
    if case.framing == "none":
        return {400}  # no framing and nothing sent: empty JSON, or empty gzip data
    if len(wire) > LIMIT:
        return {413}
    if case.coding == "bad":
        return {400}
    decoded = LIMIT + 1 if case.coding == "bomb" else len(raw)
    if decoded > LIMIT:
        return {413}  # a gzip stream cut short still decodes past the limit first
    if case.coding == "cut":
        return {400}
    answer = _body_answer(case, raw)
    return {answer, 503} if answer == 202 else {answer}  # 503: the broker did not acknowledge


# --- sending it -----------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    commit: str
    status: int | None
    reply: bytes
    seconds: float
    invited: bool  # the server answered 100 Continue before its final answer


async def _response(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    """Status and body of one response; (None, b"") if the connection ends without one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None, b""
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    try:
        body = await reader.readexactly(int(length.group(1))) if length else b""
    except (asyncio.IncompleteReadError, ConnectionError):
        body = b""
    return status, body


async def send(port: int, case: Case, token: bytes, commit: str) -> Outcome:
    head, framed = build(case, token, commit)
    cut = int(len(framed) * case.cut)
    if case.delivery in ("truncated", "stall"):
        pieces = [framed[: min(cut, len(framed) - 1)]]
    elif case.delivery == "split":
        pieces = [framed[:cut], framed[cut:]]
    elif case.delivery == "slow":
        step = max(1, len(framed) // 10)
        pieces = [framed[i : i + step] for i in range(0, len(framed), step)]
    else:
        pieces = [framed]
    if case.expect or case.delivery in ("split", "slow"):
        pieces.insert(0, head)
    else:
        pieces[0] = head + pieces[0]
    started = time.monotonic()
    invited = False
    status: int | None = None
    reply = b""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            for i, piece in enumerate(pieces):
                if i and case.expect and i == 1:
                    status, reply = await asyncio.wait_for(_response(reader), ANSWER_WITHIN * 2)
                    if status != 100:
                        break  # the final answer came instead of the invitation
                    invited, status = True, None
                elif i:
                    await asyncio.sleep(0.005 if case.delivery == "split" else 0.01)
                writer.write(piece)
                await writer.drain()
            if case.delivery == "truncated" and status is None:
                writer.write_eof()
        except ConnectionError:
            pass  # the server answered and closed early; its answer may still be readable
        if status is None:
            status, reply = await asyncio.wait_for(_response(reader), ANSWER_WITHIN * 2)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Outcome(case, commit, status, reply, time.monotonic() - started, invited)


def check(outcome: Outcome) -> None:
    case, status = outcome.case, outcome.status
    assert status is None or status < 500 or status == 503, (status, outcome.reply, case)
    assert status in expected(case), (status, outcome.reply, case)
    assert outcome.seconds < ANSWER_WITHIN, (outcome.seconds, case)
    if outcome.invited:  # no body is asked for that the head already refuses
        declared_too_big = case.framing == "length" and len(_coded(case, _json(case, outcome.commit))) > LIMIT
        assert status != 401 and not declared_too_big, (status, case)
    if status is not None and status >= 400 and outcome.reply.startswith(b"{"):
        reason = json.loads(outcome.reply)["error"]
        assert reason and "\n" not in reason and "Traceback" not in reason, reason


# --- named cases ----------------------------------------------------------------------------

DOC: dict[str, Any] = {
    "event_type": "post-commit",
    "event_time": "2026-11-26T10:00:00Z",
    "action_name": "kfm-rollback-registry",
    "hook_id": "kfm_rollback_publish",
    "repository_id": "hooks-wire",
    "branch_id": "main",
    "source_ref": "main",
    "commit_id": PLACEHOLDER,
    "commit_message": "m",
    "committer": "admin",
    "commit_metadata": {"k": "v"},
}
OK = Case(DOC, "publish")

NAMED: dict[str, tuple[Case, set[int | None]]] = {
    "whole": (OK, {202}),
    "headers first, then the body in two pieces": (replace(OK, delivery="split", cut=0.3), {202}),
    "body 10 pieces 10 ms apart": (replace(OK, delivery="slow"), {202}),
    "chunked in 16-byte chunks": (replace(OK, framing="chunked", chunk=16, delivery="split"), {202}),
    "chunked past the limit, small first chunk": (replace(OK, framing="chunked", chunk=16, pad=LIMIT), {413}),
    "length past the limit": (replace(OK, pad=LIMIT), {413}),
    "gzip": (replace(OK, coding="gzip", delivery="split"), {202}),
    "deflate, chunked": (replace(OK, coding="deflate", framing="chunked", chunk=7), {202}),
    "gzip past the limit once decoded": (replace(OK, coding="gzip", pad=LIMIT), {413}),
    "gzip bomb": (replace(OK, coding="bomb"), {413}),
    "bad gzip": (replace(OK, coding="bad"), {400}),
    "gzip cut short": (replace(OK, coding="cut"), {400}),
    "unknown coding": (replace(OK, coding="br"), {415}),
    "stacked codings": (replace(OK, coding="gzip, gzip"), {415}),
    "token not UTF-8": (replace(OK, token="not-utf8"), {401}),
    "token twice": (replace(OK, token="twice"), {401}),
    "token padded with whitespace": (replace(OK, token="padded"), {202}),
    "traceparent not UTF-8": (replace(OK, headers=((b"traceparent", b"00-\xff\xfe"),)), {400}),
    "traceparent twice": (replace(OK, headers=((b"traceparent", TRACEPARENT), (b"traceparent", TRACEPARENT))), {400}),
    "other header latin-1": (replace(OK, headers=((b"X-Note", b"caf\xe9"),)), {400}),
    "header with a control byte": (replace(OK, headers=((b"X-Ctl", b"a\x01b"),)), {400}),
    "content type latin-1": (replace(OK, content_type=b"application/json; charset=latin-1"), {415}),
    "no framing, body ignored": (replace(OK, framing="none"), {400}),
    "connection closed mid-body": (replace(OK, delivery="truncated"), {None}),
    "chunked, closed mid-body": (replace(OK, framing="chunked", delivery="truncated"), {None}),
    "stalled mid-body": (replace(OK, delivery="stall"), {408}),
    "chunked, stalled": (replace(OK, framing="chunked", delivery="stall", cut=0.9), {408}),
    "ignored type with a bad event_time": (Case({**DOC, "event_type": "pre-commit", "event_time": "x"}, "invalid"),
                                           {422}),
    "ignored type with a bad repository id": (
        Case({**DOC, "event_type": "post-create-tag", "repository_id": "A_B"}, "invalid"), {422}),
    "ignored type": (Case({**DOC, "event_type": "pre-commit"}, "ignored"), {200}),
    "key given twice": (replace(OK, dup_key=True), {422}),
    "deep nesting": (Case(b'{"x": ' + b"[" * 1500 + b"]" * 1500 + b"}", "garbage"), {422}),
    "lone surrogate escape": (Case({**DOC, "commit_message": "\ud800"}, "invalid"), {422}),
    "GET": (replace(OK, method="GET"), {405}),
    "unknown method": (replace(OK, method="BREW"), {400}),
    "other path": (replace(OK, path="/lakefs/webhooks"), {404}),
    "query string": (replace(OK, path="/lakefs/webhook?x=1"), {202}),
    "Expect: 100-continue, body after the 100": (replace(OK, expect=True), {202}),
    "Expect: 100-continue, wrong token": (replace(OK, expect=True, token="wrong"), {401}),
    "Expect: 100-continue, declared length past the limit": (replace(OK, expect=True, pad=LIMIT), {413}),
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_cases(server: Server, name: str) -> None:
    case, want = NAMED[name]
    assert expected(case) - {None, 503} <= want  # the oracle agrees with the table
    outcome = asyncio.run(send(server.port, _fix(case), server.token, _commit(f"named-{name}")))
    assert outcome.status in want, (outcome.status, outcome.reply)
    assert outcome.seconds < ANSWER_WITHIN
    assert outcome.invited == (case.expect and outcome.status == 202)


# --- generated ------------------------------------------------------------------------------

text = st.text(max_size=24)
TIMES = ["2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123456789Z", "2026-11-26T12:00:00+02:00",
         "2026-11-26t10:00:00z"]
valid_doc = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["post-commit", "post-merge"]),
        "event_time": st.sampled_from(TIMES),
        "action_name": text,
        "hook_id": text,
        "repository_id": st.sampled_from(["hooks-wire", "repo-one", "a1-b2-c3"]),
        "branch_id": st.sampled_from(WATCHED),
        "commit_id": st.just(PLACEHOLDER),
    },
    optional={
        "source_ref": text,
        "commit_message": st.text(max_size=200),
        "committer": text,
        "commit_metadata": st.dictionaries(text, text, max_size=4),
        "merge_source": text,
        "tag_id": text,
    },
)
MUTATIONS: list[tuple[str, Any]] = [
    ("repository_id", "Bad_Repo"), ("repository_id", 7), ("commit_id", "zz"), ("commit_id", "C" * 64),
    ("branch_id", "a..b"), ("event_time", "yesterday"), ("event_time", "2026-11-26T10:00:00"),
    ("event_type", "Post-Commit"), ("surprise", 1), ("commit_metadata", {"k": 1}), ("commit_message", None),
    ("action_name", "a" * 1025), ("commit_id", ""), ("branch_id", ""), ("repository_id", ...), ("hook_id", ...),
    ("event_type", ...), ("commit_id", ...), ("commit_message", "\ud800"),
]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | dict[str, Any], str]:
    kind = draw(st.sampled_from(["publish"] * 5 + ["ignored", "unwatched", "invalid", "invalid", "not-object",
                                                   "garbage"]))
    doc = draw(valid_doc)
    if kind == "ignored":
        doc["event_type"] = draw(st.sampled_from(["pre-commit", "post-create-tag", "pre-create-branch", "pre-merge"]))
        for name in ("branch_id", "commit_id"):
            if draw(st.booleans()):
                del doc[name]
    elif kind == "unwatched":
        doc["branch_id"] = draw(st.sampled_from(["dev", "release-1.0"]))
    elif kind == "invalid":
        name, value = draw(st.sampled_from(MUTATIONS))
        if value is ...:
            doc.pop(name, None)
        else:
            doc[name] = value
    elif kind == "not-object":
        return draw(st.sampled_from([b"[]", b'"post-commit"', b"1", b"null", b"true", b" [{}] "])), kind
    elif kind == "garbage":
        return draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\xef\xbb\xbf{}", b"{nope"]))), kind
    return doc, kind


def _extra_headers() -> st.SearchStrategy[tuple[tuple[bytes, bytes], ...]]:
    one = st.sampled_from(
        [
            (b"User-Agent", b"Go-http-client/1.1"),
            (b"X-Note", "ünïcødé ✓".encode()),
            (b"traceparent", TRACEPARENT),
            (b"traceparent", b"not-a-traceparent"),  # invalid W3C context: ignored, a new trace starts
            (b"tracestate", b"k=v"),
            (b"X-Note", b"caf\xe9"),
            (b"traceparent", b"00-\xff"),
            (b"Content-Encoding", b"identity"),
            (b"X-Ctl", b"a\x01b"),
            (b"X-Long", b"a" * 9000),
        ]
    )
    return st.lists(one, max_size=2).map(tuple)


def case_strategy(*, clean_head: bool) -> st.SearchStrategy[Case]:
    """Requests of every kind; with ``clean_head`` the head is right and only body and delivery vary.

    Why two: generation copies choices between examples, so a fault in the head can ride along
    with most of one delivery pattern; clean heads make sure every pattern meets the body checks.
    """

    def head(wanted: list[Any], faults: list[Any]) -> st.SearchStrategy[Any]:
        return st.sampled_from(wanted if clean_head else wanted * 6 + faults)

    return st.builds(
        lambda body, **kw: Case(body[0], body[1], **kw),
        bodies(),
        method=head(["POST"] * 5, ["GET", "PUT", "BREW"]),
        path=head(["/lakefs/webhook"] * 5 + ["/lakefs/webhook?x=1"], ["/nope", "/lakefs/webhook/"]),
        token=head(["good", "good", "padded"], ["missing", "wrong", "not-utf8", "twice", "good+wrong"]),
        content_type=head(
            [b"application/json", b"application/json; charset=utf-8", b"Application/JSON"],
            [None, b"text/plain", b"application/json; charset=latin-1", b"application/vnd.api+json"],
        ),
        headers=st.just(()) if clean_head else st.one_of(st.just(()), st.just(()), _extra_headers()),
        coding=head(["absent"] * 8 + ["identity", "gzip", "x-gzip", "deflate", "bad", "cut", "bomb"],
                    list(UNSUPPORTED_CODINGS[:2])),
        framing=st.sampled_from(["length"] * 6 + ["chunked"] * 3 + ["none"]),
        chunk=st.integers(1, 300),
        # A stall costs the read timeout; one in about thirty keeps the run short.
        delivery=st.sampled_from(["whole"] * 16 + ["split"] * 7 + ["slow"] * 3 + ["truncated"] * 3 + ["stall"]),
        cut=st.floats(0.0, 1.0),
        pad=st.sampled_from([0] * 12 + [LIMIT, LIMIT * 2]),
        dup_key=st.sampled_from([False] * 15 + [True]),
        ascii_json=st.booleans(),
        expect=st.sampled_from([False] * 7 + [True]),
    )


CLEAN = 5  # of BATCH requests, how many have a clean head
batches = st.tuples(
    *[case_strategy(clean_head=True)] * CLEAN, *[case_strategy(clean_head=False)] * (BATCH - CLEAN)
).map(list)


def _fix(case: Case) -> Case:
    """A body without framing, or empty, cannot be cut short; send it whole."""
    if case.delivery in ("truncated", "stall") and (
        case.framing == "none" or not _framed(case, _coded(case, _json(case, _commit(0))))
    ):
        return replace(case, delivery="whole")
    return case


def test_generated_requests_never_5xx_never_hang_and_publish_only_valid_events(server: Server) -> None:
    loop = asyncio.new_event_loop()
    outcomes: list[Outcome] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against a live server: cases say enough
        suppress_health_check=list(HealthCheck),
    )
    @given(batches)
    def run(batch: list[Case]) -> None:
        first = len(outcomes)
        batch = [_fix(c) for c in batch]

        async def send_all() -> list[Outcome]:
            return await asyncio.gather(
                *(send(server.port, c, server.token, _commit(first + i)) for i, c in enumerate(batch))
            )

        done = loop.run_until_complete(send_all())
        outcomes.extend(done)
        for outcome in done:
            check(outcome)

    try:
        start = loop.run_until_complete(end_offsets(server.bootstrap, server.topic))
        run()
        assert len(outcomes) >= 1000
        # The process is still up and answering.
        assert loop.run_until_complete(_get(server.port, "/healthz")) == 200
        published = [o.commit for o in outcomes if o.status == 202]
        records = loop.run_until_complete(
            read_since(server.bootstrap, server.topic, start, want=len(published), timeout=30)
        )
    finally:
        loop.close()

    by_commit = {o.commit: o for o in outcomes}
    seen: list[str] = []
    for key, value, headers in records:
        event = CommitEvent.model_validate_json(value)
        outcome = by_commit.get(event.commit_id)
        assert outcome is not None and outcome.status in (202, 503), (event, outcome)
        assert key == f"{event.repository_id}/{event.commit_id}".encode()
        doc = outcome.case.body
        assert isinstance(doc, dict)
        assert (event.source, event.repository_id, event.branch_id) == (
            doc["event_type"], doc["repository_id"], doc["branch_id"])
        assert event.commit_message == doc.get("commit_message", "")
        assert event.commit_metadata == doc.get("commit_metadata", {})
        if (b"traceparent", TRACEPARENT) in outcome.case.headers:
            assert dict(headers)["traceparent"].decode().split("-")[1] == TRACE_ID
        seen.append(event.commit_id)
    # Each 202 is on the topic exactly once; a 503 at most once (its acknowledgement may have been
    # lost after the broker stored it); nothing else is there (checked per record above).
    counts = Counter(seen)
    assert all(counts[c] == 1 for c in published), [c for c in published if counts[c] != 1]
    assert all(n == 1 for n in counts.values())
    log = server.log_text()
    assert "Traceback" not in log and '"level": "error"' not in log


async def _get(port: int, path: str) -> int | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, _ = await _response(reader)
    writer.close()
    await writer.wait_closed()
    return status


