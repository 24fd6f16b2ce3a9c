"""load_settings: KFM_* variables, limits, validation errors naming the variable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.config import Limits, Settings, load_settings
from worker.errors import ConfigError
from worker.snapshot.select import SnapshotRules


def test_empty_env_gives_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.limits == Limits()
    # No loopback defaults: what a production process needs is set or it stops (Settings.require).
    assert (s.kafka_bootstrap, s.lakefs_endpoint, s.s3_endpoint, s.s3_bucket) == ("", "", "", "")
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.hooks_port == 18080
    assert s.bundle_zstd_level == 3  # docs/performance.md#bundle-paths: same size as 10, less CPU
    assert load_settings({"KFM_BUNDLE_ZSTD_LEVEL": "10"}).bundle_zstd_level == 10


def test_none_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFM_S3_BUCKET", "from-os-environ")
    assert load_settings().s3_bucket == "from-os-environ"


def test_kfm_variables_override_and_are_coerced() -> None:
    s = load_settings(
        {
            "KFM_S3_BUCKET": "other-bucket",
            "KFM_HOOKS_PORT": "9000",
            "KFM_KAFKA_TIMEOUT_S": "2.5",
            "KFM_ENERGY_WATTS_PER_CPU": "20",
            "KFM_BUNDLE_RETRIES": "0",
            "KFM_TOPIC_PREFIX": "staging.",
            "KFM_LOG_LEVEL": "debug",
        }
    )
    assert s.s3_bucket == "other-bucket"
    assert s.hooks_port == 9000
    assert isinstance(s.hooks_port, int)
    assert s.kafka_timeout_s == 2.5
    assert s.energy_watts_per_cpu == 20.0
    assert isinstance(s.energy_watts_per_cpu, float)
    assert s.bundle_retries == 0
    assert s.topic("kfm.events") == "staging.kfm.events"
    assert s.log_level == "debug"


def test_unprefixed_and_unknown_variables_are_ignored() -> None:
    s = load_settings({"S3_BUCKET": "nope", "KFM_NOT_A_SETTING": "x", "KFM_LIMITS": "x", "kfm_s3_bucket": "nope"})
    assert s == Settings()


def test_limit_variables() -> None:
    s = load_settings({"KFM_LIMIT_WEBHOOK_MAX_BYTES": "1024", "KFM_LIMIT_BUNDLE_MAX_MEMBERS": "7"})
    assert s.limits == Limits(max_webhook_bytes=1024, max_members=7)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KFM_HOOKS_PORT": "eighty"}, "KFM_HOOKS_PORT='eighty': not an integer"),
        ({"KFM_HOOKS_PORT": "80.5"}, "KFM_HOOKS_PORT='80.5': not an integer"),
        ({"KFM_BUNDLE_RETRIES": "-1"}, "KFM_BUNDLE_RETRIES='-1': must not be negative"),
        ({"KFM_KAFKA_TIMEOUT_S": "soon"}, "KFM_KAFKA_TIMEOUT_S='soon': not a number"),
        ({"KFM_ENERGY_GRID_KG_PER_KWH": ""}, "KFM_ENERGY_GRID_KG_PER_KWH='': not a number"),
        ({"KFM_LIMIT_MESSAGE_MAX_BYTES": "1MB"}, "KFM_LIMIT_MESSAGE_MAX_BYTES='1MB': not an integer"),
        ({"KFM_LIMIT_STAC_MAX_OBJECTS": "-5"}, "KFM_LIMIT_STAC_MAX_OBJECTS='-5': must not be negative"),
        ({"KFM_LAKEFS_ENDPOINT": "ftp://lakefs:8000"}, "KFM_LAKEFS_ENDPOINT='ftp://lakefs:8000': must be an http(s)"),
        ({"KFM_LAKEFS_ENDPOINT": "lakefs:8000"}, "KFM_LAKEFS_ENDPOINT='lakefs:8000': must be an http(s)"),
        ({"KFM_S3_ENDPOINT": "s3://bucket"}, "KFM_S3_ENDPOINT='s3://bucket': must be an http(s)"),
        ({"KFM_KAFKA_BOOTSTRAP": "localhost"}, "KFM_KAFKA_BOOTSTRAP='localhost': expected host:port"),
        ({"KFM_HOOKS_PORT": "0"}, "KFM_HOOKS_PORT=0: not a TCP port"),
        ({"KFM_HOOKS_PORT": "65536"}, "KFM_HOOKS_PORT=65536: not a TCP port"),
        ({"KFM_LOG_LEVEL": "TRACE"}, "KFM_LOG_LEVEL='TRACE': one of"),
        ({"KFM_BUNDLE_ZSTD_LEVEL": "0"}, "KFM_BUNDLE_ZSTD_LEVEL=0: between 1 and 19"),
        ({"KFM_BUNDLE_ZSTD_LEVEL": "22"}, "KFM_BUNDLE_ZSTD_LEVEL=22: between 1 and 19"),
        ({"KFM_BUNDLE_ZSTD_LEVEL": "fast"}, "KFM_BUNDLE_ZSTD_LEVEL='fast': not an integer"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize("url", ["http://lakefs:8000", "https://lakefs.example"])
def test_http_and_https_endpoints_accepted(url: str) -> None:
    assert load_settings({"KFM_LAKEFS_ENDPOINT": url, "KFM_S3_ENDPOINT": url}).s3_endpoint == url


def test_overrides_apply_and_none_is_ignored() -> None:
    s = load_settings(
        {"KFM_S3_BUCKET": "env-bucket", "KFM_LOG_LEVEL": "WARNING"},
        overrides={"s3_bucket": None, "log_level": "DEBUG", "hooks_port": None},
    )
    assert s.s3_bucket == "env-bucket"
    assert s.log_level == "DEBUG"
    assert s.hooks_port == 18080


def test_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^KFM_LAKEFS_ENDPOINT="):
        load_settings({}, overrides={"lakefs_endpoint": "file:///tmp/x"})


def test_secrets_are_not_in_repr() -> None:
    s = load_settings(
        {
            "KFM_HOOK_TOKEN": "hook-secret-value-123",
            "KFM_LAKEFS_SECRET_ACCESS_KEY": "lakefs-secret-value",
            "KFM_S3_SECRET_ACCESS_KEY": "s3-secret-value",
        }
    )
    text = repr(s)
    for secret in ("hook-secret-value-123", "lakefs-secret-value", "s3-secret-value"):
        assert secret not in text


def test_resolved_hook_token_prefers_the_variable(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("file-token-0123456789")
    s = load_settings({"KFM_HOOK_TOKEN": "env-token-0123456789", "KFM_HOOK_TOKEN_FILE": str(f)})
    assert s.resolved_hook_token() == "env-token-0123456789"


def test_resolved_hook_token_reads_and_strips_the_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  file-token-0123456789\n")
    assert load_settings({"KFM_HOOK_TOKEN_FILE": str(f)}).resolved_hook_token() == "file-token-0123456789"


@pytest.mark.parametrize("content", ["short-token", "", "   \n", "x" * 15])
def test_resolved_hook_token_refuses_short_file_token(tmp_path: Path, content: str) -> None:
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(ConfigError, match=r"^KFM_HOOK_TOKEN_FILE: token must be at least 16 characters"):
        load_settings({"KFM_HOOK_TOKEN_FILE": str(f)}).resolved_hook_token()


def test_resolved_hook_token_accepts_exactly_16(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("x" * 16)
    assert load_settings({"KFM_HOOK_TOKEN_FILE": str(f)}).resolved_hook_token() == "x" * 16


def test_resolved_hook_token_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"^KFM_HOOK_TOKEN_FILE: cannot read .*nope"):
        load_settings({"KFM_HOOK_TOKEN_FILE": str(missing)}).resolved_hook_token()


def test_resolved_hook_token_requires_one_source() -> None:
    with pytest.raises(ConfigError, match="KFM_HOOK_TOKEN or KFM_HOOK_TOKEN_FILE must be set"):
        load_settings({}).resolved_hook_token()


@pytest.mark.parametrize(
    ("watched", "branch", "expected"),
    [
        ("", "main", True),
        ("", "anything/else", True),
        (" , ,", "main", True),
        ("main", "main", True),
        ("main", "mai", False),
        ("main", "main2", False),
        ("main, dev", "dev", True),
        ("main,dev", "feature/x", False),
        ("main,dev", "", False),
    ],
)
def test_branch_watched(watched: str, branch: str, expected: bool) -> None:
    assert load_settings({"KFM_WATCHED_BRANCHES": watched}).branch_watched(branch) is expected


def test_inline_hook_token_has_the_same_minimum_as_the_file() -> None:
    with pytest.raises(ConfigError, match="16"):
        load_settings({"KFM_HOOK_TOKEN": "x"}).resolved_hook_token()


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_float_settings_must_be_finite_and_non_negative(value: str) -> None:
    with pytest.raises(ConfigError, match="KFM_ENERGY_WATTS_PER_CPU"):
        load_settings({"KFM_ENERGY_WATTS_PER_CPU": value})


def test_overrides_refuse_unknown_names_coerce_strings_and_name_the_option() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        load_settings({}, {"no_such_thing": 1})
    assert load_settings({}, {"hooks_port": "8081"}).hooks_port == 8081
    with pytest.raises(ConfigError, match="--hooks-port"):
        load_settings({}, {"hooks_port": "eighty"})


def test_comma_separated_settings_are_parsed_once_when_loaded() -> None:
    s = load_settings({
        "KFM_WATCHED_BRANCHES": " main, ,dev ",
        "KFM_WATCHED_REPOS": "kfm-data:main|dev, models",
        "KFM_RECONCILE_SINCE": "2026-01-31",
        "KFM_STAC_PREFIXES": "stac/, catalog/",
        "KFM_CONFIG_GLOBS": "*.toml",
    })
    assert s.watched_branch_names == ("main", "dev")
    assert [(w.repo, w.branches) for w in s.watch_specs] == [("kfm-data", ("main", "dev")), ("models", ())]
    assert s.reconcile_horizon == datetime(2026, 1, 31, tzinfo=UTC)
    assert s.snapshot_rules.stac_prefixes == ("stac/", "catalog/")
    assert s.snapshot_rules.config_globs == ("*.toml",)
    assert Settings().reconcile_horizon is None


def test_limit_of_zero_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^KFM_LIMIT_BUNDLE_MAX_MEMBERS='0': must be positive$"):
        load_settings({"KFM_LIMIT_BUNDLE_MAX_MEMBERS": "0"})


def test_snapshot_rules_split_strip_and_drop_empties() -> None:
    rules = load_settings({
        "KFM_STAC_PREFIXES": " stac/ , catalogs/,", "KFM_CONFIG_GLOBS": "configs/*, *.toml ,,",
        "KFM_MODEL_MANIFEST": "m/manifest.json",
    }).snapshot_rules
    assert rules == SnapshotRules(("stac/", "catalogs/"), ("configs/*", "*.toml"), "m/manifest.json")


def test_snapshot_rules_of_the_setting_defaults_equal_the_defaults() -> None:
    assert Settings().snapshot_rules == SnapshotRules()
