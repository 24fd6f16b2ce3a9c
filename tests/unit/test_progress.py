"""Progress hooks: what the streaming loops report, that reporting never changes their output,
and when the CLI draws bars at all."""

from __future__ import annotations

import io
import os
import threading
from argparse import Namespace
from pathlib import Path

import pytest

from tests.unit.bundle.helpers import GOLDEN_DIR, golden, golden_key, make_manifest, stage
from worker.bundle.tarzst import write_bundle
from worker.io.staging import _Share
from worker.io.verifying import check_bundle
from worker.keys import TrustedKeys
from worker.limits import DEFAULT_LIMITS
from worker.progress import Meters


class Recorder:
    """A Progress that keeps what it was told (from any thread)."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.done = 0
        self._lock = threading.Lock()

    def expect(self, total: int) -> None:
        self.totals.append(total)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_compression_reports_every_member_byte_and_writes_the_same_bundle(tmp_path: Path) -> None:
    contents = {"lakefs/configs/a.yaml": b"a: 1\n", "lakefs/models/m.bin": os.urandom(3 * 1024 * 1024 + 7)}
    manifest = make_manifest(contents)
    files = stage(tmp_path, contents)
    plain, counted = io.BytesIO(), io.BytesIO()
    write_bundle(plain, manifest, files, mtime=manifest.commit_mtime)
    rec = Recorder()
    write_bundle(counted, manifest, files, mtime=manifest.commit_mtime, progress=rec)
    assert counted.getvalue() == plain.getvalue()
    total = sum(len(v) for v in contents.values())
    assert rec.totals == [total] and rec.done == total


async def test_verification_reports_the_bytes_it_reads(tmp_path: Path) -> None:
    bundle = GOLDEN_DIR / golden.BUNDLE_FILE
    envelope = (GOLDEN_DIR / golden.ENVELOPE_FILE).read_bytes()
    trusted = TrustedKeys([golden_key().public_key()])
    rec = Recorder()
    checked = await check_bundle(
        bundle, envelope, trusted, DEFAULT_LIMITS, commit=None, ledger=None, extract_to=tmp_path / "out", progress=rec
    )
    size = bundle.stat().st_size
    assert rec.totals == [size] and rec.done == size
    quiet = await check_bundle(bundle, envelope, trusted, DEFAULT_LIMITS, commit=None, ledger=None)
    assert quiet.bundle == checked.bundle


def test_staging_adds_each_downloads_size_to_one_total() -> None:
    rec = Recorder()
    share = _Share(rec)
    share.expect(100)  # the configs, from the listing
    share.advance(100)
    share.expect(50)  # a model in the registry bucket says its size as it starts
    share.advance(50)
    assert rec.totals == [100, 150] and rec.done == 150


@pytest.mark.parametrize(
    ("args", "tty", "drawn"),
    [
        (Namespace(), True, True),
        (Namespace(json=True), True, False),
        (Namespace(quiet=True), True, False),
        (Namespace(), False, False),
    ],
)
def test_bars_only_for_a_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, args: Namespace, tty: bool, drawn: bool
) -> None:
    stream = Tty() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setenv("TERM", "xterm")
    meters = Meters.for_args(args)
    assert meters.enabled is drawn
    with meters.bar("verify", total=2048) as progress:
        assert (progress is not None) is drawn
        if progress is not None:
            progress.advance(2048)
    screen = stream.getvalue()
    if drawn:
        assert "verify: 100%" in screen and "2.00k/2.00k" in screen and screen.endswith("\n")
    else:
        assert screen == ""


def test_a_dumb_terminal_gets_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not Meters.for_args(Namespace()).enabled


def test_counts_are_whole_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Tty()
    with Meters(True, stream).bar("commits walked", unit="commits") as progress:
        assert progress is not None
        progress.advance(3)
    assert "commits walked: 3 commits [" in stream.getvalue()
