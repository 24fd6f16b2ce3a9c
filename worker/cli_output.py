"""What every ``kfm`` verb promises a script: its exit codes, one-line errors, and its output modes.

Why one module: the exit codes and the output formats are a contract
(docs/cli.md); defined once here, every verb keeps the same one. It imports
nothing heavy, because ``kfm --help`` and the error path of every verb load it.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["Exit", "Output", "exit_code_for", "one_line", "report_error"]


class Exit(enum.IntEnum):
    """The exit codes of every verb (docs/cli.md#exit-codes).

    ``UNAVAILABLE`` is 4, the first code after the ones the issue fixed: a
    small number a shell ``case`` can name, kept apart from 1 so that a
    script can tell "the bundle is bad" (do not use it) from "the registry
    could not be asked" (try again later). sysexits' 69 was considered and
    not taken: no other verb of this tool's neighbours (lakectl, cosign,
    rekor-cli) uses sysexits either.
    """

    OK = 0
    CHECK_FAILED = 1  # a verification, coverage check, ledger verify or audit found a problem; or not found
    USAGE = 2  # the command line is wrong (argparse's own code), or a path it names is unusable
    TIMEOUT = 3  # waited (--wait, --timeout) and no final answer came
    UNAVAILABLE = 4  # could not run: a service unreachable or refusing, a setting missing or invalid
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
    BROKEN_PIPE = 141  # stdout closed early (`kfm ledger list | head -1`), as a shell reports SIGPIPE


def exit_code_for(e: BaseException) -> Exit:
    """The exit code of an error that ended a verb."""
    from worker.errors import ConfigError, ConflictError, IntegrityError, TransientError, UsageError

    if isinstance(e, UsageError):
        return Exit.USAGE
    if isinstance(e, KeyboardInterrupt):
        return Exit.INTERRUPTED
    if isinstance(e, ConfigError | TransientError | ConflictError | ConnectionError | TimeoutError):
        return Exit.UNAVAILABLE  # before IntegrityError: SettingRefusedError is both
    if isinstance(e, IntegrityError):
        return Exit.CHECK_FAILED
    if isinstance(e, OSError) and e.filename is not None:
        return Exit.USAGE  # a file or directory named on the command line is missing or unusable
    return Exit.UNAVAILABLE


def one_line(e: BaseException) -> str:
    """``e`` as one line that says what was wrong and what to do."""
    from worker.errors import ConfigError, Error, TransientError

    if isinstance(e, Error):
        text = e.diagnostics()
        if isinstance(e, TransientError):
            text += "; check that the service runs and the endpoint setting (docs/configuration.md), then retry"
        elif isinstance(e, ConfigError) and "KFM_" not in text and "--" not in text:
            text += " (see docs/configuration.md)"
    elif isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    elif isinstance(e, OSError | TimeoutError):
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    else:
        text = f"unexpected {type(e).__name__}: {e}; this is a bug: rerun with -v and report the traceback"
    return " ".join(text.split())


def report_error(e: BaseException, *, stream: TextIO | None = None) -> Exit:
    """Print ``kfm: error: ...`` (one line) on stderr; return the exit code."""
    print(f"kfm: error: {one_line(e)}", file=stream or sys.stderr, flush=True)
    return exit_code_for(e)


class Output:
    """Where a verb's result goes: text for a person (default), one JSON document (``--json``), or nothing
    (``--quiet``: only the exit code). Errors go to stderr in every mode.

    Why the verb hands over both forms at once: the JSON fields are the
    stable contract (docs/cli.md), the text may change; one call keeps them
    describing the same result.
    """

    def __init__(self, *, json_mode: bool = False, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.quiet = quiet
        self._stream = stream

    @classmethod
    def of(cls, args: Any) -> Output:
        return cls(json_mode=bool(getattr(args, "json", False)), quiet=bool(getattr(args, "quiet", False)))

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def result(self, doc: Any, text: str | Sequence[str] | None = None) -> None:
        """The verb's one result: ``doc`` as JSON, or ``text`` (default: ``doc`` as JSON too)."""
        if self.quiet:
            return
        if self.json or text is None:
            print(json.dumps(doc, indent=2, sort_keys=True), file=self.stream, flush=True)
        else:
            print(text if isinstance(text, str) else "\n".join(text), file=self.stream, flush=True)

    def item(self, doc: Any, text: str) -> None:
        """One element of a stream: a JSON line, or a line of text."""
        if self.quiet:
            return
        print(json.dumps(doc, sort_keys=True) if self.json else text, file=self.stream, flush=True)

    def table(self, doc: Any, headers: Sequence[str], rows: Sequence[Sequence[Any]], footer: str = "") -> None:
        """A result that is a list: ``doc`` as JSON, or an aligned table with a header line."""
        if self.quiet:
            return
        if self.json:
            self.result(doc)
            return
        lines = format_table(headers, rows)
        if footer:
            lines.append(footer)
        print("\n".join(lines), file=self.stream, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Columns left-aligned to their widest cell, two spaces apart; the last column is not padded."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
