"""Keep the ``--help`` blocks of docs/cli.md equal to what ``kfm`` prints.

Each verb's section holds its help between ``<!-- help: kfm VERB -->`` and
``<!-- /help -->``; this script renders every verb's ``--help`` at a fixed
width and writes it there (``make cli-docs``), or with ``--check`` only
compares and names the blocks that differ or are missing (the unit test
tests/unit/test_cli_docs.py runs it), so the page cannot drift from the parser.

Usage: python docs/cli_help.py [--check]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
WIDTH = "100"  # argparse wraps to $COLUMNS: fixed, so the page is the same on every terminal

_BLOCK = re.compile(r"<!-- help: (?P<cmd>kfm[^>]*?) -->\n```text\n.*?```\n<!-- /help -->", re.S)


def helps() -> dict[str, str]:
    """``kfm``'s and every verb's help text, by command (``kfm ledger list``), in ``--help`` order."""
    os.environ["COLUMNS"] = WIDTH
    sys.path.insert(0, str(ROOT))
    from worker._cli import _build_parser  # noqa: PLC0415 (after COLUMNS and the path are set)
    from worker._cli_common import leaf_parsers  # noqa: PLC0415

    parser = _build_parser()
    out = {"kfm": parser.format_help()}
    for words, leaf in leaf_parsers(parser):
        out[" ".join(("kfm", *words))] = leaf.format_help()
    return out


def render(text: str, rendered: dict[str, str]) -> str:
    """``text`` with every help block replaced by the current help."""

    def block(m: re.Match[str]) -> str:
        cmd = m["cmd"].strip()
        body = rendered.get(cmd, f"(no such command: {cmd})\n")
        return f"<!-- help: {cmd} -->\n```text\n{body.rstrip()}\n```\n<!-- /help -->"

    return _BLOCK.sub(block, text)


def problems(text: str, rendered: dict[str, str]) -> list[str]:
    """What is out of date in ``text``: commands without a help block, blocks that differ."""
    present = [m["cmd"].strip() for m in _BLOCK.finditer(text)]
    out = [f"no help block for `{cmd}`" for cmd in rendered if cmd not in present]
    out += [f"a help block for `{cmd}`, which is not a command" for cmd in present if cmd not in rendered]
    new = render(text, rendered)
    if new != text:
        old_blocks = {m["cmd"].strip(): m[0] for m in _BLOCK.finditer(text)}
        new_blocks = {m["cmd"].strip(): m[0] for m in _BLOCK.finditer(new)}
        out += [f"the help of `{c}` differs" for c in old_blocks if old_blocks[c] != new_blocks.get(c)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 naming what is out of date")
    args = ap.parse_args()
    text = DOC.read_text()
    rendered = helps()
    if args.check:
        found = problems(text, rendered)
        for p in found:
            sys.stderr.write(f"docs/cli.md: {p}; run `make cli-docs`\n")
        return 1 if found else 0
    DOC.write_text(render(text, rendered))
    missing = [p for p in problems(DOC.read_text(), rendered) if p.startswith(("no help", "a help"))]
    for p in missing:
        sys.stderr.write(f"docs/cli.md: {p}: add its section by hand\n")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
