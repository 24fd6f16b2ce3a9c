"""The single-writer state machine: append, duplicates, proofs, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from tests.unit.ledger.factories import T0, digest, fixed_key, make_body, make_candidate, to_jsonl
from tests.unit.ledger.reference import Ledger
from worker.errors import IntegrityError, VerificationError
from worker.ledger import merkle
from worker.ledger.checkpoint import parse_and_verify, sign_checkpoint
from worker.ledger.row import IndexCandidate, LedgerRow, compute_hash, row_to_line
from worker.ledger.state import Appended, Duplicate
from worker.utc import format_utc

# The writer's clock, pinned: a day after the bundles were made.
NOW = T0 + timedelta(days=1)


def filled(n: int) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        result = ledger.apply(make_candidate(i), NOW)
        assert isinstance(result, Appended)
    return ledger


def test_append_builds_the_chain() -> None:
    ledger = filled(12)
    assert ledger.size == 12
    assert [r.seq for r in ledger.rows] == list(range(12))
    assert ledger.leaves == tuple(row_to_line(r)[:-1] for r in ledger.rows)
    assert ledger.root() == merkle.root(ledger.leaves)
    reloaded = Ledger.from_jsonl(ledger.to_jsonl())
    assert reloaded.rows == ledger.rows and reloaded.root() == ledger.root()
    assert ledger.tail == ledger.rows[-1]


def test_row_takes_created_at_from_the_body_not_the_clock() -> None:
    ledger = Ledger()
    result = ledger.apply(make_candidate(3), NOW)
    assert isinstance(result, Appended)
    assert result.row.created_at == make_body(3).created_at != format_utc(NOW)
    assert result.row.body() == make_body(3)


def test_replay_with_another_clock_gives_identical_bytes() -> None:
    one, two = Ledger(), Ledger()
    for i in range(10):
        one.apply(make_candidate(i), NOW)
        two.apply(make_candidate(i), NOW + timedelta(hours=i))
    assert one.to_jsonl() == two.to_jsonl()


DUPLICATES = [
    ("redelivered", lambda: make_candidate(4), True),
    ("other request id", lambda: make_candidate(4, request_id="again"), True),
    (
        "other bundle",
        lambda: make_candidate(
            4,
            body=make_body(4, checksums={"artifact_sha256": digest("another bundle")}),
        ),
        False,
    ),
    (
        "other bundle and branch",
        lambda: make_candidate(
            4,
            body=make_body(
                4, lakefs_branch="main", checksums={"artifact_sha256": digest("third bundle")}
            ),
        ),
        False,
    ),
]


@pytest.mark.parametrize(
    ("make", "same"), [(m, s) for _, m, s in DUPLICATES], ids=[c for c, _, _ in DUPLICATES]
)
def test_duplicates_are_reported_not_appended(
    make: Callable[[], IndexCandidate], same: bool
) -> None:
    ledger = filled(8)
    before = ledger.to_jsonl()
    result = ledger.apply(make(), NOW)
    assert result == Duplicate(existing_row=ledger.rows[4], same_digest=same)
    assert ledger.to_jsonl() == before


def test_duplicate_is_detected_even_when_dated_in_the_future() -> None:
    ledger = filled(3)
    future = make_body(1, created_at=format_utc(NOW + timedelta(days=30)))
    result = ledger.apply(make_candidate(1, body=future), NOW)
    assert isinstance(result, Duplicate) and result.same_digest


@pytest.mark.parametrize(
    ("ahead", "ok"),
    [(timedelta(0), True), (timedelta(minutes=5), True), (timedelta(minutes=5, seconds=1), False)],
)
def test_future_created_at(ahead: timedelta, ok: bool) -> None:
    body = make_body(0, created_at=format_utc(NOW + ahead))
    ledger = Ledger()
    if ok:
        assert isinstance(ledger.apply(make_candidate(0, body=body), NOW), Appended)
    else:
        with pytest.raises(IntegrityError, match="ahead of the writer"):
            ledger.apply(make_candidate(0, body=body), NOW)
        assert ledger.size == 0


def test_skew_is_configurable() -> None:
    body = make_body(0, created_at=format_utc(NOW + timedelta(hours=1)))
    ledger = Ledger(max_future_skew=timedelta(hours=2))
    assert isinstance(ledger.apply(make_candidate(0, body=body), NOW), Appended)


@pytest.mark.parametrize(
    "clock",
    [
        datetime(2025, 12, 1, 12, 0),  # noqa: DTZ001 - the naive clock under test
        datetime(2025, 12, 1, 12, 0, tzinfo=timezone(timedelta(hours=-6))),
    ],
)
def test_clock_must_be_utc(clock: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        Ledger().apply(make_candidate(0), clock)


def test_lookup_and_inclusion_proofs() -> None:
    ledger = filled(13)
    for row in ledger.rows:
        assert ledger.row_for(row.lakefs_commit) == row
        proof = ledger.inclusion_proof(row.lakefs_commit)
        assert (proof.index, proof.size) == (row.seq, 13)
        merkle.verify_inclusion(
            row_to_line(row)[:-1], proof.index, proof.size, list(proof.hashes), ledger.root()
        )
    assert ledger.row_for(digest("unknown")) is None
    with pytest.raises(KeyError):
        ledger.inclusion_proof(digest("unknown"))


def test_loading_a_tampered_ledger_fails_closed() -> None:
    rows = list(filled(6).rows)
    forged = rows[2].model_copy(update={"producer": "attacker"})
    forged = forged.model_copy(update={"hash": compute_hash(forged)})
    with pytest.raises(VerificationError, match=r"seq=3 \(line 4\): prev mismatch"):
        Ledger([*rows[:2], forged, *rows[3:]])
    with pytest.raises(VerificationError, match=r"line 3"):
        Ledger.from_jsonl(to_jsonl([*rows[:2], *rows[3:]]))


ORIGIN = "kfm.local/rollback-registry"
KEY = fixed_key(3)


def _checkpoint_of(ledger: Ledger) -> bytes:
    return sign_checkpoint(ORIGIN, ledger.size, ledger.root(), ORIGIN, KEY)


def test_checkpoints_grow_consistently() -> None:
    ledger = filled(7)
    old = parse_and_verify(_checkpoint_of(ledger), ORIGIN, KEY.public_key(), ORIGIN)
    for i in range(7, 20):
        ledger.apply(make_candidate(i), NOW)
    new = parse_and_verify(_checkpoint_of(ledger), ORIGIN, KEY.public_key(), ORIGIN)
    merkle.verify_consistency(
        old.size, new.size, old.root, new.root, ledger.consistency_proof(old.size)
    )
    ledger.verify_checkpoint(old)
    ledger.verify_checkpoint(new)
    assert ledger.root_at(old.size) == old.root


def test_truncation_is_caught_by_the_checkpoint_root() -> None:
    ledger = filled(10)
    checkpoint = parse_and_verify(_checkpoint_of(ledger), ORIGIN, KEY.public_key(), ORIGIN)
    truncated = Ledger.from_jsonl(to_jsonl(list(ledger.rows[:8])))  # a valid chain on its own
    with pytest.raises(VerificationError, match=r"has 8 rows but checkpoint .* vouches for 10"):
        truncated.verify_checkpoint(checkpoint)


def test_rewritten_history_is_caught_by_the_checkpoint_root() -> None:
    ledger = filled(10)
    checkpoint = parse_and_verify(_checkpoint_of(ledger), ORIGIN, KEY.public_key(), ORIGIN)
    # The same commits, re-chained after changing one body: a valid, different history.
    forked = Ledger()
    for i in range(10):
        body = make_body(i, producer="rewritten") if i == 5 else make_body(i)
        forked.apply(make_candidate(i, body=body), NOW)
    with pytest.raises(VerificationError, match="history was rewritten"):
        forked.verify_checkpoint(checkpoint)
    with pytest.raises(VerificationError):
        merkle.verify_consistency(10, 10, checkpoint.root, forked.root(), [])


def test_empty_ledger() -> None:
    ledger = Ledger()
    assert (ledger.size, ledger.root(), ledger.tail, ledger.to_jsonl()) == (
        0,
        merkle.EMPTY_ROOT,
        None,
        b"",
    )
    with pytest.raises(ValueError, match="size 1"):
        ledger.root_at(1)


def test_rows_passed_in_are_not_aliased() -> None:
    rows: list[LedgerRow] = list(filled(3).rows)
    ledger = Ledger(rows)
    rows.clear()
    assert ledger.size == 3
