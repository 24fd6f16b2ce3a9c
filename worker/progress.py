"""Progress of long work (bundle build, download, verify, restore, audit replay, back-fill).

Two halves. :class:`Progress` is what a streaming loop is handed, as an
optional argument: it says how much it expects and how much it did, and
never learns where that goes, so the loops (and the pure code beneath them)
depend on nothing here but this protocol. :class:`Meters` is what the CLI
makes: progress bars on stderr, drawn only when stderr is a terminal and the
verb's output is for a person (not ``--json`` or ``--quiet``), so a pipe, a
log file or a script sees exactly the bytes it saw before.

Why tqdm, imported only when a bar is drawn: of the two usual choices (tqdm,
rich) it is the lighter (one package, no dependencies, tens of milliseconds
to import against rich's hundreds with its console and markup), and it
draws what is asked for: bytes, rate and time left, or a count. Importing
it at start-up would still cost every ``kfm`` call (bench/bench_startup.py),
so it is imported by the first bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TextIO

__all__ = ["Meters", "Progress", "Steps"]


class Progress(Protocol):
    """Told by a streaming loop how far it got. Called from any thread; must not raise."""

    def expect(self, total: int) -> None:
        """The whole work's size, once known (bytes, or items for a count)."""

    def advance(self, n: int) -> None:
        """``n`` more bytes (or items) done."""


class Steps(Protocol):
    """Work of several steps in a row (download, then compress): a bar per step, opened when it starts."""

    def bar(self, label: str, *, unit: str = "B", total: int | None = None) -> AbstractContextManager[Progress | None]:
        """A :class:`Progress` for one step, or None (report nothing); closed when the step ends."""


class _TqdmBar:
    def __init__(self, label: str, unit: str, total: int | None, stream: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 (imported by the first bar: it costs start-up)

        self._bar = tqdm(
            total=total,
            desc=label,
            unit=unit if unit == "B" else f" {unit}",  # 1.5MB, but 42 commits
            unit_scale=unit == "B",
            unit_divisor=1024,
            file=stream,
            leave=True,
            dynamic_ncols=True,
            mininterval=0.1,
            smoothing=0.1,
        )

    def expect(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def advance(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _bar(label: str, unit: str, total: int | None, stream: TextIO) -> _TqdmBar | None:
    try:
        return _TqdmBar(label, unit, total, stream)
    except ImportError:  # a trimmed install: the work goes on without a bar
        return None


class Meters:
    """Progress bars for one CLI verb, or none.

    Args:
        enabled: draw bars; :meth:`for_args` decides it from the terminal and the output mode.
        stream: where bars go (stderr: stdout stays the verb's result).
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self._stream = stream

    @classmethod
    def for_args(cls, args: Any) -> Meters:
        """Bars when stderr is a terminal (and not ``TERM=dumb``) and the verb prints for a person."""
        stream = sys.stderr
        person = not getattr(args, "json", False) and not getattr(args, "quiet", False)
        tty = stream.isatty() and os.environ.get("TERM", "") != "dumb"
        return cls(enabled=person and tty, stream=stream)

    @contextmanager
    def bar(self, label: str, *, unit: str = "B", total: int | None = None) -> Iterator[Progress | None]:
        """A bar for one step, closed (its last state left on screen) when the step ends;
        None when bars are off, which every loop takes to mean "report nothing"."""
        bar = _bar(label, unit, total, self._stream or sys.stderr) if self.enabled else None
        try:
            yield bar
        finally:
            if bar is not None:
                bar.close()
