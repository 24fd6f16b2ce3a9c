"""Hash chain: building, verifying, and pinpointing the first bad row."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.unit.ledger.factories import make_body, make_chain, to_jsonl
from worker.canonical import sha256_hex
from worker.errors import VerificationError
from worker.ledger.chain import next_row, verify_chain, verify_jsonl
from worker.ledger.row import GENESIS_PREV, LedgerRow, compute_hash, leaf_bytes, row_to_line

N = 50


@pytest.fixture(scope="module")
def chain() -> list[LedgerRow]:
    return make_chain(N)


def _names_line(message: str, line: int) -> bool:
    return re.search(rf"\bline {line}\b", message) is not None


def test_chain_of_50_is_valid(chain: list[LedgerRow]) -> None:
    verify_chain(chain)
    assert verify_jsonl(to_jsonl(chain)) == chain
    assert [r.seq for r in chain] == list(range(N))


def test_links(chain: list[LedgerRow]) -> None:
    assert chain[0].prev == GENESIS_PREV
    for before, row in itertools.pairwise(chain):
        # prev is the digest of the previous line as stored, minus its newline.
        assert row.prev == sha256_hex(row_to_line(before)[:-1]) == sha256_hex(leaf_bytes(before))
        assert row.hash == compute_hash(row)


def test_next_row_ignores_chain_fields_of_a_row_passed_as_body(chain: list[LedgerRow]) -> None:
    # A LedgerRow is a RowBody; its seq/prev/hash must not leak into the new row.
    again = next_row(chain[-1], chain[3])
    assert (again.seq, again.prev) == (N, sha256_hex(leaf_bytes(chain[-1])))
    assert again.body() == chain[3].body()


def test_every_single_byte_edit_is_caught_at_its_line() -> None:
    """Flip each byte of line 2 (of 3) in turn; the error always names line 2."""
    rows = make_chain(3)
    lines = [row_to_line(r) for r in rows]
    target = 1  # 0-based row, line 2: it has a row before and after it
    for pos in range(len(lines[target])):
        edited = bytearray(lines[target])
        edited[pos] ^= 0x01
        data = b"".join([*lines[:target], bytes(edited), *lines[target + 1 :]])
        with pytest.raises(VerificationError) as err:
            verify_jsonl(data)
        assert _names_line(str(err.value), target + 1), (pos, str(err.value))


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [
        ("producer", "airflow:dag=kfm-promote", "airflow:dag=kfm-pr0mote"),
        ("lakefs_branch", "prod", "prud"),
        ("created_at", "2025-11-30T12:17:00.250000Z", "2025-11-30T12:17:01.250000Z"),
    ],
)
def test_edited_content_is_a_hash_mismatch_at_that_row(
    chain: list[LedgerRow], field: str, old: str, new: str
) -> None:
    lines = [row_to_line(r) for r in chain]
    assert f'"{field}":"{old}"'.encode() in lines[17]
    lines[17] = lines[17].replace(f'"{field}":"{old}"'.encode(), f'"{field}":"{new}"'.encode())
    with pytest.raises(VerificationError, match=r"seq=17 \(line 18\): hash mismatch"):
        verify_jsonl(b"".join(lines))


def test_edited_hash_field_is_caught_at_that_row(chain: list[LedgerRow]) -> None:
    lines = [row_to_line(r) for r in chain]
    good = chain[30].hash
    lines[30] = lines[30].replace(
        good.encode(), ("0" if good[0] != "0" else "1").encode() + good[1:].encode()
    )
    with pytest.raises(VerificationError, match=r"seq=30 \(line 31\): hash mismatch"):
        verify_jsonl(b"".join(lines))


def test_rewritten_row_with_recomputed_hash_is_caught_at_the_next_row(
    chain: list[LedgerRow],
) -> None:
    forged = chain[20].model_copy(update={"producer": "attacker"})
    forged = forged.model_copy(update={"hash": compute_hash(forged)})
    rows = [*chain[:20], forged, *chain[21:]]
    with pytest.raises(VerificationError, match=r"seq=21 \(line 22\): prev mismatch"):
        verify_chain(rows)


@pytest.mark.parametrize("deleted", [0, 1, 17, N - 2])
def test_deleted_row(chain: list[LedgerRow], deleted: int) -> None:
    rows = chain[:deleted] + chain[deleted + 1 :]
    message = rf"seq={deleted + 1} \(line {deleted + 1}\): expected seq {deleted}"
    with pytest.raises(VerificationError, match=message):
        verify_jsonl(to_jsonl(rows))


def test_deleted_tail_is_not_visible_to_the_chain(chain: list[LedgerRow]) -> None:
    # Documented limit: a prefix is a valid chain. Checkpoints catch truncation
    # (see test_state.test_truncation_is_caught_by_the_checkpoint_root).
    verify_chain(chain[:-1])


@pytest.mark.parametrize(("i", "j"), [(0, 1), (10, 20), (N - 2, N - 1)])
def test_reordered_rows(chain: list[LedgerRow], i: int, j: int) -> None:
    rows = list(chain)
    rows[i], rows[j] = rows[j], rows[i]
    with pytest.raises(VerificationError, match=rf"seq={j} \(line {i + 1}\): expected seq {i}"):
        verify_jsonl(to_jsonl(rows))


def test_duplicated_line(chain: list[LedgerRow]) -> None:
    rows = [*chain[:11], chain[10], *chain[11:]]
    with pytest.raises(VerificationError, match=r"seq=10 \(line 12\): expected seq 11"):
        verify_jsonl(to_jsonl(rows))


def test_duplicate_commit_in_a_well_formed_chain() -> None:
    rows: list[LedgerRow] = []
    for i in range(N):
        body = make_body(i) if i != 30 else make_body(30, lakefs_commit=make_body(10).lakefs_commit)
        rows.append(next_row(rows[-1] if rows else None, body))
    message = r"seq=30 \(line 31\): duplicate lakefs_commit [0-9a-f]{64}, first at seq=10"
    with pytest.raises(VerificationError, match=message):
        verify_chain(rows)
    with pytest.raises(VerificationError, match=message):
        verify_jsonl(to_jsonl(rows))


def test_wrong_genesis_prev() -> None:
    row = make_chain(1)[0]
    forged = row.model_copy(update={"prev": "1" * 64})
    forged = forged.model_copy(update={"hash": compute_hash(forged)})
    with pytest.raises(VerificationError, match=r"seq=0 \(line 1\): prev mismatch"):
        verify_chain([forged])


def test_empty_chain_is_valid() -> None:
    verify_chain([])
    assert verify_jsonl(b"") == []
