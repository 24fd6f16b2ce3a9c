"""The parts of the ``kfm`` command line every verb shares: global options, ``--version``, commit ids.

Kept apart from :mod:`worker._cli` (the table of verbs) and import-light:
it runs before argparse has parsed anything, so ``kfm VERB --help`` costs
only what argparse costs.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from worker._internal.s3 import Bucket

__all__ = [
    "MIN_PREFIX",
    "add_global_options",
    "check_commit_arg",
    "leaf_parsers",
    "parse_since",
    "resolve_commit",
    "spread_global_options",
]

MIN_PREFIX = 8
"""The shortest commit prefix a verb resolves: git's habit of 7 plus one, and 4 billion ids apart."""

_HEX = re.compile(r"^[0-9a-f]+$")
_MAX_CANDIDATES = 10

# Options that mean the same to every verb, accepted before or after it: (flags, add_argument keywords).
_GLOBAL: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-v", "--verbose"), {"action": "store_true", "help": "show tracebacks and library logs on errors"}),
    (
        ("--json",),
        {
            "action": "store_true",
            "help": "print the result as one JSON document (JSON lines for streams); see docs/cli.md",
        },
    ),
    (
        ("-q", "--quiet"),
        {"action": "store_true", "help": "print no result, only errors: for scripts that need only the exit code"},
    ),
    (("--kafka-bootstrap",), {"help": "Kafka bootstrap servers (KFM_KAFKA_BOOTSTRAP)"}),
    (("--lakefs-endpoint",), {"help": "lakeFS URL (KFM_LAKEFS_ENDPOINT)"}),
    (("--s3-endpoint",), {"help": "registry S3 endpoint (KFM_S3_ENDPOINT)"}),
    (("--s3-bucket",), {"help": "registry bucket (KFM_S3_BUCKET)"}),
)


_SHOWN_IN_VERBS = ("--verbose", "--json", "--quiet")


class _Version(argparse.Action):
    """``--version``: reads the installed distribution's metadata only when asked (it costs start-up)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("kfm-rollback-registry")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"kfm {version}")  # on stdout, as argparse's own version action does
        parser.exit()


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The top-level parser's global options (with their defaults) and ``--version``."""
    group = parser.add_argument_group("global options (also accepted after the verb)")
    for flags, kwargs in _GLOBAL:
        group.add_argument(*flags, **kwargs)
    group.add_argument("--version", action=_Version)


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every verb's parser with its words (``("ledger", "list")``), in the order ``--help`` lists them."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    seen: set[int] = set()
    for name, child in subs[0].choices.items():
        if id(child) not in seen:  # an alias names the same parser again
            seen.add(id(child))
            yield from leaf_parsers(child, (*path, name))


def spread_global_options(parser: argparse.ArgumentParser) -> None:
    """Accept every global option after the verb too (``kfm ledger list --json``), as lakectl and kubectl do.

    Why ``default=SUPPRESS`` in the verbs' copies: argparse copies a verb
    parser's defaults over the values already parsed, so a default there
    would undo ``kfm --json ledger list``.
    """
    for words, leaf in leaf_parsers(parser):
        leaf.set_defaults(verb=words)  # which parser reports a usage error found after parsing
        group = leaf.add_argument_group("global options (also accepted before the verb)")
        for flags, kwargs in _GLOBAL:
            if not any(f in leaf._option_string_actions for f in flags):
                # The endpoints are accepted here but listed only by `kfm --help`: a verb's help stays short.
                shown = kwargs if flags[-1] in _SHOWN_IN_VERBS else {**kwargs, "help": argparse.SUPPRESS}
                group.add_argument(*flags, **{**shown, "default": argparse.SUPPRESS})


def check_commit_arg(text: str, option: str) -> str:
    """A commit id or prefix as typed (any case), lowercased; else :class:`UsageError` naming ``option``."""
    from worker.errors import UsageError

    c = text.strip().lower()
    if not (_HEX.fullmatch(c) and MIN_PREFIX <= len(c) <= 64):
        raise UsageError(
            f"{option} {text!r}: not a commit id (64 hex digits) or a unique prefix of at least "
            f"{MIN_PREFIX} (as `kfm ledger list` prints)"
        )
    return c


async def resolve_commit(bucket: Bucket, text: str, option: str = "--commit") -> str:
    """The full id of the one commit with a ledger row whose id starts with ``text``.

    Why by listing keys: each row has an immutable object
    ``ledger/commits/<commit>``, so one LIST under the prefix finds the
    candidates without reading the ledger; a full id is returned as it is
    (the verb then reads that object, which says if it exists).

    Raises:
        UsageError: not hex, too short, or more than one commit starts with it (they are listed).
        NotFoundError: no row's commit starts with it.
    """
    from worker.constants import LEDGER_COMMITS_PREFIX
    from worker.errors import NotFoundError, UsageError

    c = check_commit_arg(text, option)
    if len(c) == 64:
        return c
    found = sorted(k.removeprefix(LEDGER_COMMITS_PREFIX) for k in await bucket.list_keys(LEDGER_COMMITS_PREFIX + c))
    if not found:
        raise NotFoundError(f"{option} {c}: no ledger row for a commit starting with it (`kfm ledger list` shows them)")
    if len(found) > 1:
        shown = ", ".join(found[:_MAX_CANDIDATES]) + (", ..." if len(found) > _MAX_CANDIDATES else "")
        raise UsageError(
            f"{option} {c} is ambiguous: {len(found)} ledger commits start with it ({shown}); give more characters"
        )
    return found[0]


def parse_since(raw: str, what: str = "--since") -> datetime:
    """:func:`worker.watch.parse_since` for an option: a bad value is a usage error (exit 2), not a setting's."""
    from worker.errors import ConfigError, UsageError
    from worker.watch import parse_since as parse

    try:
        return parse(raw, what)
    except ConfigError as e:
        raise UsageError(str(e)) from None
