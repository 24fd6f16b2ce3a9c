"""docs/cli.md shows every verb's ``--help`` as ``kfm`` prints it: a change to the parser without
``make cli-docs`` fails here, naming the verb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_verb_has_its_current_help_in_docs_cli_md() -> None:
    r = subprocess.run([sys.executable, "docs/cli_help.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def test_the_check_names_a_verb_whose_help_drifted(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import cli_help  # type: ignore[import-not-found]  # noqa: PLC0415 (docs/ is not a package)
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = (ROOT / "docs" / "cli.md").read_text()
    rendered = cli_help.helps()
    stale = text.replace("usage: kfm ledger show", "usage: kfm ledger shows", 1)
    assert cli_help.problems(stale, rendered) == ["the help of `kfm ledger show` differs"]
    without = stale.replace("<!-- help: kfm completion -->", "<!-- nothing -->", 1)
    assert "no help block for `kfm completion`" in cli_help.problems(without, rendered)
