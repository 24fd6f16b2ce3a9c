"""The contract every ``kfm`` verb keeps with a script (docs/cli.md), without servers.

Verbs run as processes, piped and in a terminal (a pty), on the golden bundle
offline and against endpoints nothing listens on: exit codes, one-line
errors, the output modes. The pure parts (exit-code mapping, tables, commit
prefixes, completion) are tested as functions. The verbs that need a
registry are driven in tests/integration/test_cli_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from worker._cli import _build_parser
from worker._cli_common import check_commit_arg, resolve_commit
from worker._cli_completion import completion_script
from worker.cli_output import Exit, Output, exit_code_for, format_table, one_line
from worker.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    SettingRefusedError,
    TransientError,
    UsageError,
    VerificationError,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "bundle"
KFM = [sys.executable, "-m", "worker._cli"]
OFFLINE = ["--offline", "--key", str(GOLDEN / "golden.pub"), "--attestation", str(GOLDEN / "golden.dsse.json")]
C64 = "ab" * 32


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    """The environment without the developer's KFM_* settings, so a test names every setting it uses."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KFM_")}


def kfm(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KFM, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          check=False)


def in_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``kfm`` with stdout on a pty (as at a terminal), stderr piped; its exit code, stdout, stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*KFM, *args], env=env, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=ROOT)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n"), err


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The error: exactly one line on stderr, no traceback."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# --- exit codes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), Exit.USAGE),
        (ConfigError("KFM_S3_BUCKET must be set"), Exit.UNAVAILABLE),
        (SettingRefusedError("no such bucket"), Exit.UNAVAILABLE),
        (TransientError("Kafka unreachable"), Exit.UNAVAILABLE),
        (ConflictError("lost"), Exit.UNAVAILABLE),
        (ConnectionRefusedError(111, "refused"), Exit.UNAVAILABLE),
        (VerificationError("bad signature"), Exit.CHECK_FAILED),
        (NotFoundError("no row"), Exit.CHECK_FAILED),
        (IntegrityError("tampered"), Exit.CHECK_FAILED),
        (FileNotFoundError(2, "No such file or directory", "b.tar.zst"), Exit.USAGE),
        (KeyboardInterrupt(), Exit.INTERRUPTED),
        (RuntimeError("a bug"), Exit.UNAVAILABLE),
    ],
)
def test_each_kind_of_error_has_its_exit_code(error: BaseException, code: Exit) -> None:
    assert exit_code_for(error) == code


def test_docs_cli_md_lists_every_exit_code() -> None:
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", (ROOT / "docs" / "cli.md").read_text(), re.M))
    assert sorted(int(c) for c in table) == sorted(int(e) for e in Exit)


def test_an_error_is_one_line_that_says_what_to_do() -> None:
    assert one_line(TransientError("s3: get x: EndpointConnectionError")) == (
        "s3: get x: EndpointConnectionError; check that the service runs and the endpoint setting "
        "(docs/configuration.md), then retry")
    assert one_line(FileNotFoundError(2, "no such bundle file", "b.tar.zst")) == "b.tar.zst: no such bundle file"
    assert "\n" not in one_line(IntegrityError("first\nsecond"))
    assert one_line(RuntimeError("boom")).endswith("this is a bug: rerun with -v and report the traceback")


# --- output modes -------------------------------------------------------------------
def test_a_table_has_a_header_and_aligned_columns() -> None:
    assert format_table(("SEQ", "COMMIT"), [(0, "a" * 4), (10, "b")]) == ["SEQ  COMMIT", "0    aaaa", "10   b"]


def test_json_quiet_and_text_modes() -> None:
    doc = {"ok": True, "n": 1}
    for mode, expected in (({"json_mode": True}, json.dumps(doc, indent=2, sort_keys=True) + "\n"),
                           ({"quiet": True}, ""), ({}, "OK\n")):
        buf = StringIO()
        Output(stream=buf, **mode).result(doc, "OK")  # type: ignore[arg-type]
        assert buf.getvalue() == expected
    buf = StringIO()
    stream = Output(json_mode=True, stream=buf)
    stream.item({"a": 1}, "a")
    stream.item({"b": 2}, "b")
    assert [json.loads(line) for line in buf.getvalue().splitlines()] == [{"a": 1}, {"b": 2}]


# --- global options -----------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--s3-bucket", "b", "ledger", "list"],
        ["ledger", "list", "--json", "--s3-bucket", "b"],
        ["--json", "ledger", "list", "--s3-bucket", "b"],
    ],
)
def test_global_options_before_or_after_the_verb(argv: list[str]) -> None:
    args = _build_parser().parse_args(argv)
    assert (args.json, args.quiet, args.verbose, args.s3_bucket) == (True, False, False, "b")


def test_no_option_means_the_defaults() -> None:
    args = _build_parser().parse_args(["ledger", "list"])
    assert (args.json, args.quiet, args.verbose, args.s3_bucket) == (False, False, False, None)


def test_version(clean_env: dict[str, str]) -> None:
    r = kfm(clean_env, "--version")
    assert r.returncode == 0 and re.fullmatch(r"kfm \S+\n", r.stdout), r


# --- commit ids ---------------------------------------------------------------------
class _Listing:
    """A bucket that can only list: what prefix resolution may use (a fake for this one function)."""

    def __init__(self, commits: list[str]) -> None:
        self.keys = [f"ledger/commits/{c}" for c in commits]
        self.listed: list[str] = []

    async def list_keys(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return [k for k in self.keys if k.startswith(prefix)]


def test_a_unique_prefix_resolves_with_one_listing_under_it() -> None:
    b = _Listing(["abcdef01" + "0" * 56, "abcdef02" + "0" * 56])
    assert asyncio.run(resolve_commit(b, "ABCDEF01")) == "abcdef01" + "0" * 56  # type: ignore[arg-type]
    assert b.listed == ["ledger/commits/abcdef01"]


def test_an_ambiguous_prefix_is_refused_with_the_candidates() -> None:
    a, c = "abcdef01" + "1" * 56, "abcdef01" + "2" * 56
    want = rf"--commit abcdef01 is ambiguous: 2 ledger commits start with it \({a}, {c}\)"
    with pytest.raises(UsageError, match=want):
        asyncio.run(resolve_commit(_Listing([c, a]), "abcdef01"))  # type: ignore[arg-type]


def test_a_prefix_no_row_starts_with_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="no ledger row for a commit starting with it"):
        asyncio.run(resolve_commit(_Listing([]), "abcdef01"))  # type: ignore[arg-type]


def test_a_full_id_is_taken_as_it_is_without_listing() -> None:
    b = _Listing([])
    assert asyncio.run(resolve_commit(b, C64)) == C64  # type: ignore[arg-type]
    assert b.listed == []


@pytest.mark.parametrize("text", ["abc", "abcdef0", "xyz12345", C64 + "0", "abcdef01-"])
def test_not_a_commit_or_too_short_a_prefix_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="not a commit id"):
        check_commit_arg(text, "--commit")


# --- verbs as processes: piped and at a terminal -------------------------------------------
def test_verify_prints_the_same_line_piped_and_at_a_terminal(clean_env: dict[str, str]) -> None:
    args = ["verify", "--bundle", str(GOLDEN / "golden.tar.zst"), *OFFLINE]
    piped = kfm(clean_env, *args)
    code, out, err = in_terminal(clean_env, *args)
    assert piped.returncode == code == 0, (piped.stderr, err)
    assert piped.stdout.startswith("OK: bundle ") and out == piped.stdout


def test_verify_json_is_one_document_and_quiet_prints_nothing(clean_env: dict[str, str]) -> None:
    args = ["verify", "--bundle", str(GOLDEN / "golden.tar.zst"), *OFFLINE]
    doc = json.loads(kfm(clean_env, *args, "--json").stdout)
    assert doc["ok"] is True and doc["ledger"] is None and set(doc) == {
        "ok", "bundle", "sha256", "commit", "members", "key_id", "ledger"}
    code, out, _ = in_terminal(clean_env, "--json", *args)
    assert code == 0 and json.loads(out) == doc
    quiet = kfm(clean_env, *args, "-q")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_the_deprecated_positional_bundle_still_verifies(clean_env: dict[str, str]) -> None:
    r = kfm(clean_env, "verify", *OFFLINE, str(GOLDEN / "golden.tar.zst"))
    assert r.returncode == 0 and r.stdout.startswith("OK: bundle "), r.stderr


def test_a_failed_check_is_fail_on_stdout_and_exit_1(clean_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "flipped.tar.zst"
    data = bytearray((GOLDEN / "golden.tar.zst").read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    r = kfm(clean_env, "verify", "--bundle", str(bad), *OFFLINE)
    assert r.returncode == 1 and r.stdout.startswith("FAIL: ") and r.stderr == "", r
    doc = json.loads(kfm(clean_env, "verify", "--json", "--bundle", str(bad), *OFFLINE).stdout)
    assert doc["ok"] is False and doc["error"] == r.stdout.strip().removeprefix("FAIL: ")


@pytest.fixture
def restore_targets(tmp_path: Path) -> Iterator[dict[str, Path]]:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    link = tmp_path / "link"
    link.symlink_to(empty)
    yield {"full": full, "link": link, "file": full / "keep.txt", "orphan": tmp_path / "no" / "such" / "dir"}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("full", "is not empty; give the path of a new or empty directory (a restore never overwrites)"),
        ("link", "is a symbolic link; give the path of a new or empty directory (a link is not followed)"),
        ("file", "exists and is not a directory; give the path of a new or empty directory"),
        ("orphan", "its parent directory does not exist; create it first"),
    ],
)
def test_restore_refuses_an_unusable_destination_in_one_line(
    clean_env: dict[str, str], restore_targets: dict[str, Path], target: str, message: str
) -> None:
    to = restore_targets[target]
    r = kfm(clean_env, "restore", "--bundle", str(GOLDEN / "golden.tar.zst"), *OFFLINE, "--to", str(to))
    assert r.returncode == 2 and r.stdout == "", r
    assert one_error_line(r) == f"kfm: error: {to}: {message}"
    assert (restore_targets["full"] / "keep.txt").read_text() == "mine"


def test_restore_at_a_terminal_reports_the_same(clean_env: dict[str, str], restore_targets: dict[str, Path]) -> None:
    code, out, err = in_terminal(clean_env, "restore", "--bundle", str(GOLDEN / "golden.tar.zst"), *OFFLINE,
                                 "--to", str(restore_targets["link"]))
    assert code == 2 and out == "" and err.strip().endswith("is a symbolic link; give the path of a new or empty "
                                                            "directory (a link is not followed)")


def test_verify_of_a_missing_file_names_the_bundle(clean_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "15bfa160.tar.zst"
    r = kfm(clean_env, "verify", "--bundle", str(missing), "--offline", "--key", str(GOLDEN / "golden.pub"))
    assert r.returncode == 2 and one_error_line(r) == f"kfm: error: {missing}: no such bundle file"


def test_verify_without_an_attestation_beside_the_bundle_says_to_give_one(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar.zst"
    shutil.copy(GOLDEN / "golden.tar.zst", bundle)
    r = kfm(clean_env, "verify", "--bundle", str(bundle), "--offline", "--key", str(GOLDEN / "golden.pub"))
    assert r.returncode == 2
    assert one_error_line(r) == (f"kfm: error: {tmp_path / 'b.intoto.json'}: no attestation beside the bundle "
                                 "(looked for b.intoto.json); give --attestation")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["rollback", "--commit", "xyz", "--branch", "main", "--repo", "data"], 2,
         "kfm: error: --commit 'xyz': not a commit id (64 hex digits) or a unique prefix of at least 8 "
         "(as `kfm ledger list` prints)"),
        (["rollback", "--commit", C64, "--branch", "a..b", "--repo", "data"], 2,
         "kfm: error: --branch 'a..b': not a lakeFS branch name"),
        (["rollback", "--commit", C64, "--branch", "main", "--repo", "Bad_Repo"], 2,
         "kfm: error: --repo 'Bad_Repo': not a lakeFS repository id"),
        (["verify", "--bundle", "x.tar.zst", "--offline", "--commit", "abcdef01", "--key", str(GOLDEN / "golden.pub")],
         2, "kfm: error: --commit: give the full commit id with --offline (a prefix is resolved against the ledger)"),
        (["verify", "--bundle", "x.tar.zst", "--offline", "--key", "k.pub"], 2,
         "kfm: error: --key: public key k.pub: cannot read: No such file or directory"),
        (["ledger", "vkey"], 4, "kfm: error: KFM_S3_BUCKET, KFM_SIGNING_KEY must be set"),
        (["ledger", "list"], 4, "kfm: error: KFM_S3_BUCKET must be set"),
        (["coverage", "--repo", "lakefs://data/main", "--since", "yesterday"], 2,
         "kfm: error: --since='yesterday': expected an RFC 3339 date (2026-01-31) or date-time (2026-01-31T12:00:00Z)"),
        (["coverage", "--repo", "data"], 2,
         "kfm coverage: error: --branch is required (or give --repo as lakefs://REPO/BRANCH)"),
        (["ledger", "show", "abc"], 2, "kfm: error: COMMIT 'abc': not a commit id"),
        (["ledger", "list", "--json", "--quiet"], 2, "kfm ledger list: error: --json and --quiet: choose one"),
        (["nope"], 2, "kfm: error: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_a_user_error_is_one_line_and_its_exit_code(
    clean_env: dict[str, str], args: list[str], code: int, message: str
) -> None:
    r = kfm(clean_env, *args)
    assert r.returncode == code, r
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_broker_while_waiting_is_one_line_and_exit_4(clean_env: dict[str, str]) -> None:
    port = _closed_port()
    r = kfm({**clean_env, "KFM_KAFKA_TIMEOUT_S": "3"}, "rollback", "--commit", C64, "--branch", "main", "--repo",
            "data", "--wait", "--timeout", "5", "--kafka-bootstrap", f"127.0.0.1:{port}")
    assert r.returncode == 4 and r.stdout == ""
    line = one_error_line(r)
    assert line.startswith("kfm: error: ") and f"Kafka at 127.0.0.1:{port}" in line and "retry" in line


def test_health_without_a_signing_key_says_which_setting(clean_env: dict[str, str]) -> None:
    port = _closed_port()
    env = {**clean_env, "KFM_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "KFM_KAFKA_TIMEOUT_S": "2",
           "KFM_LAKEFS_ENDPOINT": f"http://127.0.0.1:{port}", "KFM_LAKEFS_ACCESS_KEY_ID": "a",
           "KFM_LAKEFS_SECRET_ACCESS_KEY": "b", "KFM_S3_ENDPOINT": f"http://127.0.0.1:{port}",
           "KFM_S3_BUCKET": "b", "KFM_S3_ACCESS_KEY_ID": "a", "KFM_S3_SECRET_ACCESS_KEY": "b"}
    r = kfm(env, "health", "--json", timeout=180)
    assert r.returncode == 1, r
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert not checks["keys"]["ok"] and checks["keys"]["detail"].startswith("KFM_SIGNING_KEY is not set")
    assert "Is a directory" not in r.stdout


# --- completion ---------------------------------------------------------------------
_CASES = {
    "kfm led": "ledger",
    "kfm ledger ''": "list show prove verify migrate vkey export",
    "kfm ledger list --j": "--json",
    "kfm rollback --strategy ''": "revert reset branch",
    "kfm --json ledger sh": "show",
    "kfm completion ''": "bash zsh",
}


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_offers_the_parsers_words(tmp_path: Path) -> None:
    script = tmp_path / "kfm.bash"
    script.write_text(completion_script(_build_parser(), "bash"))
    calls = "\n".join(f'try {words}' for words in _CASES)
    out = subprocess.run(["bash", "-c", f"""source {script}
try() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=(); _kfm; echo "${{COMPREPLY[*]}}"; }}
{calls}"""], capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert out == list(_CASES.values())


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_zsh_completion_offers_the_parsers_words(tmp_path: Path) -> None:
    script = tmp_path / "_kfm"
    script.write_text(completion_script(_build_parser(), "zsh"))
    calls = "\n".join(f"try {words}" for words in _CASES)
    out = subprocess.run(["zsh", "-f", "-c", f"""compdef() {{ : }}
source {script}
compadd() {{ [[ $1 == -- ]] && shift; print -r -- "${{(M)@:#${{words[CURRENT]}}*}}" }}
try() {{ words=("$@"); CURRENT=${{#words}}; _kfm }}
{calls}"""], capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert out == list(_CASES.values())


# --- start-up -----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["verify", "--help"], ["ledger", "list", "--help"], ["--help"]])
def test_help_imports_nothing_heavy(clean_env: dict[str, str], argv: list[str]) -> None:
    """``kfm VERB --help`` under 0.3 s (issue 10): argparse only, none of the modules that cost start-up."""
    r = subprocess.run([sys.executable, "-X", "importtime", *KFM[1:], *argv], env=clean_env, capture_output=True,
                       text=True, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"pydantic", "asyncio", "structlog", "worker.config", "aiokafka", "botocore", "importlib.metadata"}
    assert imported & heavy == set()
