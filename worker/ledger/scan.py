"""The fast path of :func:`worker.ledger.row.parse_line`, for reading a whole ledger.

Why: verifying a million rows in seconds leaves about 20 µs per row, and the
row model (pydantic, nested models, Python validators) takes about 100 µs to
parse one. A stored line is not any JSON, though: it must be the canonical
(RFC 8785) encoding of a valid row, so its members come in one fixed order,
without whitespace, with one spelling per value. One compiled pattern over the
bytes therefore checks form and schema together, and a few Python checks do
what a pattern cannot (real dates, the float spelling, integer range, UTF-8).

The pattern accepts a strict subset of what the model accepts (ASCII where
the model also allows other letters, byte lengths where it counts
characters, no ``..`` anywhere in a config path). :func:`scan_line` answers
``None`` for everything outside that subset, and the caller falls back to the
model, which either accepts the row or names what is wrong with it. So the
fast path can only be slower to accept, never wrong to accept; a property test
(tests/unit/ledger/test_scan.py) holds it to the model on generated rows and
their mutations.

``native/kfm_scan`` is the same scan in Rust, which :func:`scan_line` and
:func:`worker.ledger.chain.check_bundle` use when it is installed
(:mod:`worker.ledger._native`); this pattern stays the reference it is held to.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Final, NamedTuple

import orjson
import rfc8785

from worker.ledger import _native
from worker.ledger.row import GENESIS_PREV, ConfigRef, EnergyCarbon, IndexCandidate, LedgerRow, ModelRef, SnapshotRef

__all__ = ["FAST_MAX_LINE_BYTES", "LineKey", "Matched", "link_candidate", "match_run", "scan_line", "scan_line_python"]

FAST_MAX_LINE_BYTES: Final = 64 * 1024
"""Longer lines go to the model: within this size no list can exceed the model's item limits."""

_MAX_SAFE_INT: Final = 2**53 - 1


class LineKey(NamedTuple):
    """What reading the ledger needs from a checked line: position, links, commit."""

    seq: int
    prev: str
    hash: str
    commit: str


_HEX = rb"[0-9a-f]{64}"
# Printable ASCII except the two characters JSON escapes: as stored, such a
# string is its own value, so a byte-length limit is the model's length limit.
_PLAIN = rb"[!#-\[\]-~]"
# (Scheme and rest bounded apart, within the model's 2048 characters in all.)
_URI = rb'"[a-z][a-z0-9+.\-]{0,30}://' + _PLAIN + rb'{1,2000}"'
_NAME = rb'"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"'
# A string without control characters and (stricter than the model) without
# ``"`` or ``\\``, so that it is stored as is: RFC 8785 escapes nothing else.
# Counting bytes bounds the characters (a multi-byte character is several bytes).
_TEXT = rb'"[^"\\\x00-\x1f\x7f]{1,1024}"'
# A relative config path: not absolute, and (stricter than the model) no ".." at all.
_PATH = rb'"(?!/)(?![^"]*\.\.)[^"\\\x00-\x1f\x7f]{1,1024}"'
_NUMBER = rb"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"


def _object(members: list[tuple[str, bytes]], model_fields: set[str]) -> bytes:
    """The pattern of one object: members in RFC 8785 order, exactly the model's keys."""
    if {name for name, _ in members} != model_fields:
        raise RuntimeError("the scan pattern is out of step with the row model")
    ordered = sorted(members, key=lambda m: m[0])
    return rb"\{" + rb",".join(b'"' + name.encode() + b'":' + value for name, value in ordered) + rb"\}"


def _array(item: bytes) -> bytes:
    return rb"\[(?:" + item + rb"(?:," + item + rb")*)?\]"


_SNAPSHOT = _object([("stac", _URI), ("lakefs_ref", _URI)], set(SnapshotRef.model_fields))
_MODEL = _object([("name", _NAME), ("version", _NAME), ("uri", _URI), ("sha256", rb'"' + _HEX + rb'"')],
                 set(ModelRef.model_fields))
_CONFIG = _object([("path", _PATH), ("sha256", rb'"' + _HEX + rb'"')], set(ConfigRef.model_fields))
_ENERGY = _object(
    [("kwh", rb"(?P<kwh>" + _NUMBER + rb")"), ("co2e_kg", rb"(?P<co2>" + _NUMBER + rb")"), ("method", _TEXT)],
    set(EnergyCarbon.model_fields),
)

_ROW: Final = re.compile(
    _object(
        [
            ("lakefs_repo", rb'"[a-z0-9][a-z0-9-]{2,62}"'),
            ("lakefs_branch", rb'"(?![^"]*\.\.)[A-Za-z0-9_][A-Za-z0-9_./\-]{0,255}"'),
            ("lakefs_commit", rb'"(?P<commit>' + _HEX + rb')"'),
            ("created_at", rb'"(?P<created>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}'
                           rb'(?:\.(?!000000)[0-9]{6})?)Z"'),
            ("producer", _TEXT),
            ("openlineage_run_id", rb'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"'),
            ("otel_trace_id", rb'"(?:[0-9a-f]{32})?"'),
            ("artifact_uri", _URI),
            ("data_snapshot", _array(_SNAPSHOT)),
            ("models", _array(_MODEL)),
            ("configs", _array(_CONFIG)),
            ("checksums", rb'\{"artifact_sha256":"' + _HEX + rb'"\}'),
            ("signatures", rb'\{"in_toto":' + _URI + rb',"key_id":"' + _PLAIN + rb'{1,256}"\}'),
            ("energy_carbon", _ENERGY),
            ("seq", rb"(?P<seq>0|[1-9][0-9]{0,15})"),
            ("prev", rb'"(?P<prev>' + _HEX + rb')"'),
            ("hash", rb'"(?P<hash>' + _HEX + rb')"'),
        ],
        set(LedgerRow.model_fields),
    ),
    re.DOTALL,
)
# The stored ``hash`` member around the captured digest: ``,"hash":"`` and ``"``
# (never the first member, so always after a comma).
_BEFORE_HASH: Final = len(b',"hash":"')


def _canonical_number(text: bytes) -> bool:
    """``text`` is how RFC 8785 spells the non-negative double it denotes.

    A fraction in fixed notation that Python's ``repr`` spells the same way is
    the shortest round-trip spelling, which is also RFC 8785's for such a value
    (it writes fixed notation from 1e-6 up to 1e21, and only whole values
    without a fraction); anything else is asked of the reference encoder.
    """
    try:
        value = float(text)
    except ValueError:
        return False
    if b"e" not in text and b"." in text and not text.endswith(b".0") and repr(value).encode() == text:
        return True
    try:
        return rfc8785.dumps(value) == text
    except (ValueError, OverflowError, rfc8785.CanonicalizationError):
        return False


def _values_hold(m: re.Match[bytes], line: bytes) -> bool:
    """What the pattern cannot see: UTF-8, integer range, float spelling, a real date."""
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if int(m["seq"]) > _MAX_SAFE_INT or not (_canonical_number(m["kwh"]) and _canonical_number(m["co2"])):
        return False
    try:
        datetime.fromisoformat(m["created"].decode("ascii"))
    except ValueError:
        return False
    return True


def scan_line(line: bytes) -> LineKey | None:
    """The key of ``line`` if it is certainly the canonical line of a valid row with a true ``hash``.

    ``None`` means "not decided here": parse the line with the row model,
    which accepts it or says what is wrong. The native scan
    (:mod:`worker.ledger._native`) answers when it is installed; it accepts
    the same subset, and what it leaves undecided goes to the model too.
    """
    native = _native.NATIVE
    if native is not None:
        key = native.scan_line(line)
        return None if key is None else LineKey(*key)
    return scan_line_python(line)


def scan_line_python(line: bytes) -> LineKey | None:
    """:func:`scan_line` in pure Python: the reference the native scan is held to."""
    m = _ROW.fullmatch(line) if len(line) <= FAST_MAX_LINE_BYTES else None
    if m is None or not _values_hold(m, line):
        return None
    row_hash = m["hash"].decode("ascii")
    start, end = m.span("hash")
    if hashlib.sha256(line[: start - _BEFORE_HASH] + line[end + 1 :]).hexdigest() != row_hash:
        return None
    return LineKey(int(m["seq"]), m["prev"].decode("ascii"), row_hash, m["commit"].decode("ascii"))


_CANDIDATE_KEYS: Final = frozenset(IndexCandidate.model_fields)
_REQUEST_ID_MAX: Final = 4096


def _float_fragment(value: float) -> orjson.Fragment:
    text = repr(value)
    if "e" in text or text.endswith(".0"):  # not the fixed-notation fraction RFC 8785 shares with repr
        return orjson.Fragment(rfc8785.dumps(value))
    return orjson.Fragment(text)


def link_candidate(value: bytes, prev: tuple[int, str] | None) -> tuple[bytes, LineKey] | None:
    """The line the writer appends for the candidates-topic ``value`` after ``prev``, and its key.

    The audit replay's bulk path: :func:`worker.ledger.chain.link` on
    :func:`worker.ledger.row.parse_candidate`'s result costs about 250 µs a
    row. Here the value is read as plain JSON and the line encoded with
    orjson, and the result counts only if :func:`scan_line` accepts that line
    (so the body is a valid row body) and the value is exactly as the bundler
    publishes it (sorted keys, no duplicates), so that both parsers read the
    same values: then the line is byte for byte the writer's. ``None``: decide
    with the models.
    """
    try:
        candidate = orjson.loads(value)
        if (
            len(value) > FAST_MAX_LINE_BYTES
            or type(candidate) is not dict
            or candidate.keys() != _CANDIDATE_KEYS
            or orjson.dumps(candidate, option=orjson.OPT_SORT_KEYS) != value
        ):
            return None
        body, request_id = candidate["body"], candidate["request_id"]
        if type(body) is not dict or type(request_id) is not str or len(request_id) > _REQUEST_ID_MAX:
            return None
        seq, prev_hash = (0, GENESIS_PREV) if prev is None else (prev[0] + 1, prev[1])
        energy = body.get("energy_carbon")
        if "seq" in body or "prev" in body or "hash" in body or type(energy) is not dict:
            return None
        row = body | {
            "seq": seq,
            "prev": prev_hash,
            "energy_carbon": {k: _float_fragment(v) if type(v) is float else v for k, v in energy.items()},
        }
        row["hash"] = hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()
        line = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, rfc8785.CanonicalizationError, ValueError, TypeError):
        return None
    key = scan_line(line)
    if (
        key is None
        or candidate["bundle_sha256"] != body["checksums"]["artifact_sha256"]
        or candidate["attestation_uri"] != body["signatures"]["in_toto"]
    ):
        return None
    return line, key


class Matched(NamedTuple):
    """A candidate that links to exactly the stored line at its position."""

    commit: str
    leaf_hash: bytes  # RFC 6962 leaf hash of the line
    line_sha256: str  # what the next row's ``prev`` must be


def match_run(values: list[bytes], stored: list[bytes], prev_line: bytes | None, first_seq: int) -> list[Matched]:
    """How many of ``values``, from the first, link one to one onto ``stored`` (rows from ``first_seq``).

    The replay's parallel step (picklable: runs in a process pool, or in
    threads with the native scan, which releases the GIL): each candidate is
    linked after the stored line before it, which is what the writer did if
    the ledger is what the topic implies. The run stops at the first
    candidate that does not give the next stored line by the fast path (a
    duplicate, a rejected or unusual candidate, or a difference); the caller
    takes it from there with the models.

    With the native scan, its ``match_run`` decides the candidates it can
    (it compares the value's bytes with the stored line's instead of
    re-encoding, and accepts only what :func:`link_candidate` accepts); one
    it leaves undecided is asked of :func:`link_candidate`, so the answer is
    the pure path's.
    """
    prev = None if prev_line is None else (first_seq - 1, hashlib.sha256(prev_line).hexdigest())
    out: list[Matched] = []
    native = _native.NATIVE
    i = 0
    while i < len(values) and i < len(stored):
        if native is not None:
            got = native.match_run(
                values[i:], stored[i:], 0 if prev is None else prev[0] + 1, None if prev is None else prev[1]
            )
            out += map(Matched._make, got)
            i += len(got)
            if got:
                prev = (prev[0] + len(got) if prev is not None else len(got) - 1, got[-1][2])
            if i == len(values) or i == len(stored):
                break
        fast = link_candidate(values[i], prev)
        if fast is None or fast[0] != stored[i]:
            break
        line_sha = hashlib.sha256(stored[i]).hexdigest()
        leaf = hashlib.sha256(b"\x00")
        leaf.update(stored[i])
        out.append(Matched(fast[1].commit, leaf.digest(), line_sha))
        prev = (fast[1].seq, line_sha)
        i += 1
    return out
