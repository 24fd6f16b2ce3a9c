"""``--repo lakefs://REPO/REF``: lakeFS's URI form where the CLI takes a repository and a ref
(or a branch, for the verbs that take a branch and no ref)."""

from __future__ import annotations

import pytest

from worker._cli import _build_parser, _lakefs_uri, main


@pytest.mark.parametrize(
    ("argv", "repo", "ref"),
    [
        (["checkpoint", "--repo", "lakefs://data/main"], "data", "main"),
        (["checkpoint", "--repo", "lakefs://data/main", "--ref", "main"], "data", "main"),
        (["checkpoint", "--repo", "data", "--ref", "v1"], "data", "v1"),
        (["bundle", "build", "--repo", "lakefs://data/0123abcd", "--out", "b.tar.zst"], "data", "0123abcd"),
        (["rollback", "--commit", "c" * 64, "--branch", "main", "--repo", "lakefs://data"], "data", None),
    ],
)
def test_the_uri_form_gives_repository_and_ref(argv: list[str], repo: str, ref: str | None) -> None:
    args = _build_parser().parse_args(argv)
    assert _lakefs_uri(args) is None
    assert (args.repo, getattr(args, "ref", None)) == (repo, ref)


@pytest.mark.parametrize(
    "argv",
    [
        ["rollback", "--commit", "c" * 64, "--repo", "lakefs://data/main"],
        ["rollback", "--commit", "c" * 64, "--repo", "lakefs://data/main", "--branch", "main"],
        ["coverage", "--repo", "lakefs://data/main"],
        ["hooks", "install", "--repo", "lakefs://data/main"],
        ["reconcile", "--repo", "lakefs://data/main"],
        ["ledger", "list", "--repo", "lakefs://data/main"],
        ["coverage", "--repo", "data", "--branch", "main"],
    ],
)
def test_the_uri_form_gives_repository_and_branch_where_a_verb_takes_no_ref(argv: list[str]) -> None:
    args = _build_parser().parse_args(argv)
    assert _lakefs_uri(args) is None
    assert (args.repo, args.branch) == ("data", "main")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["checkpoint", "--repo", "data"], "--ref is required (or give --repo as lakefs://REPO/REF)"),
        (["checkpoint", "--repo", "lakefs://data/main/x.csv"],
         "--repo 'lakefs://data/main/x.csv': expected lakefs://REPO/REF"),
        (["checkpoint", "--repo", "lakefs:///main"], "--repo 'lakefs:///main': expected lakefs://REPO/REF"),
        (["checkpoint", "--repo", "lakefs://data/a", "--ref", "b"],
         "--repo 'lakefs://data/a' names ref 'a' but --ref is 'b'"),
        (["rollback", "--commit", "c", "--branch", "dev", "--repo", "lakefs://data/main"],
         "--repo 'lakefs://data/main' names branch 'main' but --branch is 'dev'"),
        (["coverage", "--repo", "lakefs://data/a/b"], "--repo 'lakefs://data/a/b': expected lakefs://REPO/BRANCH"),
        (["coverage", "--repo", "data"], "--branch is required (or give --repo as lakefs://REPO/BRANCH)"),
        (["rollback", "--commit", "c", "--repo", "lakefs://data"],
         "--branch is required (or give --repo as lakefs://REPO/BRANCH)"),
    ],
)
def test_a_malformed_uri_or_a_missing_ref_is_one_usage_line(argv: list[str], message: str) -> None:
    assert _lakefs_uri(_build_parser().parse_args(argv)) == message


def test_main_reports_it_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["checkpoint", "--repo", "data"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "kfm checkpoint: error: --ref is required (or give --repo as lakefs://REPO/REF)")
