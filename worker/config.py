"""Settings from ``KFM_*`` environment variables, validated once at start-up.

Why one object: every process (hooks, agents, CLI) reads the same names, and a
bad value fails fast with a message naming the variable instead of surfacing
later as a confusing connection error. Every size limit for untrusted input
lives in :class:`worker.limits.Limits` (tuf's habit), read from ``KFM_LIMIT_*``.
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.errors import ConfigError
from worker.limits import Limits, limit_variable
from worker.snapshot.select import SnapshotRules
from worker.watch import WatchSpec, parse_since, parse_watched_repos

__all__ = ["KafkaAccess", "Limits", "Settings", "load_settings"]

_PREFIX = "KFM_"

_KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaAccess:
    """How every Kafka client of this project reaches the cluster.

    Why one object: the receiver's producer, the worker (Faust and our own
    clients) and every CLI consumer must connect the same way; a client built
    from the bootstrap address alone would silently try plaintext.
    """

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    client_certificate: bool = False

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_SSL", "SASL_PLAINTEXT")

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments aiokafka's producer, consumer and admin client take for this."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        return options


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field ``foo_bar`` is read from ``KFM_FOO_BAR``."""

    # Endpoints, bucket and lakeFS credentials have no default: a process that needs one
    # and finds it unset stops at start-up naming the variable (Settings.require).
    kafka_bootstrap: str = ""
    # PLAINTEXT, SSL, SASL_SSL or SASL_PLAINTEXT; SASL takes a mechanism, user and password,
    # TLS a CA file (empty: the system's trust store) and optionally a client certificate.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_sasl_password_file: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    topic_prefix: str = ""
    lakefs_endpoint: str = ""
    lakefs_access_key_id: str = ""
    lakefs_secret_access_key: str = field(default="", repr=False)
    # Empty: the provider's own endpoint (AWS S3).
    s3_endpoint: str = ""
    s3_bucket: str = ""
    # Empty: the region from the AWS chain (AWS_REGION, the profile), else us-east-1.
    s3_region: str = ""
    # path or virtual; empty: path with an endpoint set (S3-compatible servers), virtual without (AWS).
    s3_addressing_style: str = ""
    # Empty: the usual AWS credential chain (AWS_* variables, profiles, roles).
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)
    hook_token: str = field(default="", repr=False)
    hook_token_file: str = ""
    hooks_host: str = "127.0.0.1"
    hooks_port: int = 18080
    hooks_read_timeout_s: float = 10.0  # a webhook's head and body must arrive within this
    # Prometheus /metrics of the receiver, on a port of its own (worker/metrics.py says why); 0: off.
    hooks_metrics_port: int = 0
    # The worker's /healthz, /readyz and /metrics; 0: off.
    worker_http_port: int = 0
    metrics_host: str = "127.0.0.1"  # where both of those listen
    kafka_timeout_s: float = 10.0
    signing_key: str = ""
    trusted_keys_dir: str = ""
    watched_branches: str = ""
    # Repositories the reconciler walks: "repo" or "repo:branch1|branch2", comma-separated (docs/coverage.md).
    watched_repos: str = ""
    reconcile_interval_s: float = 60.0  # 0 turns the worker's reconciler off
    reconcile_since: str = ""  # RFC 3339 date or date-time: the horizon for commits never seen before
    reconcile_page_size: int = 100
    reconcile_pause_s: float = 0.2
    reconcile_pending_timeout_s: float = 900.0
    reconcile_max_requests: int = 1000
    coverage_grace_s: float = 300.0
    stac_prefixes: str = "stac/"
    config_globs: str = "configs/*,configs/**/*"
    model_manifest: str = "models/manifest.json"
    work_dir: str = ""
    energy_watts_per_cpu: float = 15.0
    energy_base_watts: float = 0.0
    energy_grid_kg_per_kwh: float = 0.4
    builder_id: str = "https://kfm.local/rollback-registry/worker"
    producer_name: str = "kfm-worker"
    bundle_retries: int = 3
    # zstd level of new bundles; recorded in each manifest (format v2), so changing it never
    # makes an earlier bundle look unreproducible (docs/bundles.md#deterministic-bytes).
    bundle_zstd_level: int = 3
    # Checkpoints: origin ``<checkpoint_name>/<bucket>``, signed under checkpoint_key_name
    # (empty: the origin, as the checkpoint format recommends); verified under that name,
    # under checkpoint_name (the key name of checkpoints signed before) and under
    # checkpoint_trusted_names.
    checkpoint_name: str = "kfm-rollback-registry"
    checkpoint_key_name: str = ""
    checkpoint_trusted_names: str = ""
    otel_exporter: str = "none"
    # How long the group waits for a silent worker before moving its partitions.
    kafka_session_timeout_s: float = 30.0
    # Static group membership id (worker/membership.py): empty derives <hostname>-<slot>; 'off' disables.
    worker_instance_id: str = ""
    log_level: str = "INFO"
    limits: Limits = field(default_factory=Limits)

    # The comma-separated settings above, parsed once when the settings are made
    # (a bad entry fails start-up, not the first commit that needs it).
    watched_branch_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """``KFM_WATCHED_BRANCHES`` as names; empty means every branch."""
    watch_specs: tuple[WatchSpec, ...] = field(init=False, repr=False, compare=False)
    """``KFM_WATCHED_REPOS`` parsed (a repository named twice merged)."""
    reconcile_horizon: datetime | None = field(init=False, repr=False, compare=False)
    """``KFM_RECONCILE_SINCE`` as a UTC instant, or None when unset."""
    snapshot_rules: SnapshotRules = field(init=False, repr=False, compare=False)
    """``KFM_STAC_PREFIXES``, ``KFM_CONFIG_GLOBS`` and ``KFM_MODEL_MANIFEST`` together."""
    checkpoint_key_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """``KFM_CHECKPOINT_KEY_NAME`` (if set) and ``KFM_CHECKPOINT_TRUSTED_NAMES``: the key names a
    checkpoint may be signed under besides the origin and ``KFM_CHECKPOINT_NAME``."""
    kafka: KafkaAccess = field(init=False, repr=False, compare=False)
    """The ``KFM_KAFKA_*`` connection settings together, the TLS context built (its files read)."""

    def __post_init__(self) -> None:
        """Parse the comma-separated settings.

        Raises:
            ConfigError: naming the variable and the bad entry.
        """
        derived = {
            "watched_branch_names": _split(self.watched_branches),
            "watch_specs": tuple(parse_watched_repos(self.watched_repos)),
            "reconcile_horizon": parse_since(self.reconcile_since, "KFM_RECONCILE_SINCE")
            if self.reconcile_since else None,
            "snapshot_rules": SnapshotRules(_split(self.stac_prefixes), _split(self.config_globs), self.model_manifest),
            "checkpoint_key_names": _key_names(self.checkpoint_key_name, self.checkpoint_trusted_names),
            "kafka": _kafka_access(self),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def require(self, *names: str) -> None:
        """Stop a process that needs these settings before it starts without them.

        Why not defaults: a loopback default made a production process talk to
        nothing (or to the wrong thing) and fail later with a connection error.

        Raises:
            ConfigError: naming every variable that is unset.
        """
        missing = [_PREFIX + n.upper() for n in names if not str(getattr(self, n)).strip()]
        if missing:
            raise ConfigError(f"{', '.join(missing)} must be set (the local stack's env file sets them all)")

    def topic(self, name: str) -> str:
        """Physical topic name, so several registries can share one cluster."""
        return f"{self.topic_prefix}{name}"

    def resolved_hook_token(self) -> str:
        """The webhook secret, from ``KFM_HOOK_TOKEN`` or the file it names.

        Raises:
            ConfigError: if neither is set, or the file is unreadable or empty.
        """
        if self.hook_token:
            if len(self.hook_token) < 16:
                raise ConfigError("KFM_HOOK_TOKEN: token must be at least 16 characters")
            return self.hook_token
        if not self.hook_token_file:
            raise ConfigError("KFM_HOOK_TOKEN or KFM_HOOK_TOKEN_FILE must be set")
        try:
            token = Path(self.hook_token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"KFM_HOOK_TOKEN_FILE: cannot read {self.hook_token_file}: {e.strerror}") from e
        if len(token) < 16:
            raise ConfigError("KFM_HOOK_TOKEN_FILE: token must be at least 16 characters")
        return token

    def branch_watched(self, branch: str) -> bool:
        """An empty ``KFM_WATCHED_BRANCHES`` watches every branch."""
        return not self.watched_branch_names or branch in self.watched_branch_names


def _split(raw: str) -> tuple[str, ...]:
    """A comma-separated setting's entries, blanks dropped."""
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _key_names(key_name: str, trusted_names: str) -> tuple[str, ...]:
    """The checkpoint key names that are set, checked as signed notes require (no space, no '+').

    Raises:
        ConfigError: naming the variable and the bad name.
    """
    named = [("KFM_CHECKPOINT_KEY_NAME", key_name.strip())] if key_name.strip() else []
    named += [("KFM_CHECKPOINT_TRUSTED_NAMES", n) for n in _split(trusted_names)]
    for var, name in named:
        if "+" in name or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
            raise ConfigError(f"{var}: key name {name!r} must not contain spaces, '+' or control characters")
    return tuple(dict.fromkeys(name for _, name in named))


def _kafka_access(s: Settings) -> KafkaAccess:
    """The Kafka connection settings, checked together; the TLS files are read here, once.

    Why refuse TLS or SASL settings under PLAINTEXT: a client given a CA file or a
    password and connecting in the clear anyway is a misconfiguration nobody sees.

    Raises:
        ConfigError: naming the variable.
    """
    protocol = s.kafka_security_protocol.strip().upper()
    if protocol not in _KAFKA_PROTOCOLS:
        raise ConfigError(f"KFM_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol!r}: "
                          f"one of {', '.join(_KAFKA_PROTOCOLS)}")
    tls_files = {"KFM_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile, "KFM_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
                 "KFM_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile}
    sasl = {"KFM_KAFKA_SASL_USERNAME": s.kafka_sasl_username, "KFM_KAFKA_SASL_PASSWORD": s.kafka_sasl_password,
            "KFM_KAFKA_SASL_PASSWORD_FILE": s.kafka_sasl_password_file}
    access = KafkaAccess(s.kafka_bootstrap, protocol)
    if protocol in ("SSL", "SASL_SSL"):
        access = replace(access, ssl_context=_tls_context(s), client_certificate=bool(s.kafka_ssl_certfile))
    elif given := [k for k, v in tls_files.items() if v]:
        raise ConfigError(f"{given[0]} is set but KFM_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS")
    if protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        mechanism = s.kafka_sasl_mechanism.strip().upper()
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(f"KFM_KAFKA_SASL_MECHANISM={s.kafka_sasl_mechanism!r}: "
                              f"one of {', '.join(_SASL_MECHANISMS)}")
        if not s.kafka_sasl_username:
            raise ConfigError(f"KFM_KAFKA_SASL_USERNAME must be set with KFM_KAFKA_SECURITY_PROTOCOL={protocol}")
        access = replace(access, sasl_mechanism=mechanism, sasl_username=s.kafka_sasl_username,
                         sasl_password=_sasl_password(s, protocol))
    elif given := [k for k, v in sasl.items() if v]:
        raise ConfigError(f"{given[0]} is set but KFM_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL")
    return access


def _sasl_password(s: Settings, protocol: str) -> str:
    if s.kafka_sasl_password and s.kafka_sasl_password_file:
        raise ConfigError("KFM_KAFKA_SASL_PASSWORD and KFM_KAFKA_SASL_PASSWORD_FILE: set one, not both")
    if s.kafka_sasl_password:
        return s.kafka_sasl_password
    if not s.kafka_sasl_password_file:
        raise ConfigError(f"KFM_KAFKA_SASL_PASSWORD or KFM_KAFKA_SASL_PASSWORD_FILE must be set with "
                          f"KFM_KAFKA_SECURITY_PROTOCOL={protocol}")
    try:
        password = Path(s.kafka_sasl_password_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"KFM_KAFKA_SASL_PASSWORD_FILE: cannot read {s.kafka_sasl_password_file}: "
                          f"{e.strerror}") from e
    if not password:
        raise ConfigError(f"KFM_KAFKA_SASL_PASSWORD_FILE: {s.kafka_sasl_password_file} is empty")
    return password


def _tls_context(s: Settings) -> ssl.SSLContext:
    """A verifying client context: the broker's certificate and host name are always checked.

    Raises:
        ConfigError: a file is missing or is not what its variable says.
    """
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        raise ConfigError("KFM_KAFKA_SSL_KEYFILE is set without KFM_KAFKA_SSL_CERTFILE")
    try:
        context = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"KFM_KAFKA_SSL_CAFILE={s.kafka_ssl_cafile!r}: {_os_reason(e)}") from e
    if s.kafka_ssl_certfile:
        try:
            context.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile or None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"KFM_KAFKA_SSL_CERTFILE={s.kafka_ssl_certfile!r}"
                              f"{', KFM_KAFKA_SSL_KEYFILE=' + repr(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else ''}"
                              f": {_os_reason(e)}") from e
    return context


def _os_reason(e: OSError) -> str:
    """The reason of a file or TLS error without its errno prefix."""
    if isinstance(e, ssl.SSLError):
        return f"not a usable certificate or key ({e.reason or e})"
    return e.strerror or str(e)


def _coerce(name: str, raw: str, kind: Any) -> Any:
    if kind in (int, "int"):
        try:
            value = int(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r}: not an integer") from e
        if value < 0:
            raise ConfigError(f"{name}={raw!r}: must not be negative")
        return value
    if kind in (float, "float"):
        try:
            number = float(raw)
        except ValueError as e:
            raise ConfigError(f"{name}={raw!r}: not a number") from e
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"{name}={raw!r}: must be a finite, non-negative number")
        return number
    return raw


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read settings from ``env`` (default ``os.environ``) then apply ``overrides``.

    Overrides come from command-line flags; ``None`` values are ignored so an
    unset flag keeps the environment's value.

    Raises:
        ConfigError: naming the first invalid variable.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "limits" or not f.init:
            continue
        key = _PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _coerce(key, env[key], f.type)
    limit_values: dict[str, Any] = {}
    for f in fields(Limits):
        key = limit_variable(f)
        if key in env:
            limit_values[f.name] = _coerce(key, env[key], f.type)
            if limit_values[f.name] == 0:
                raise ConfigError(f"{key}={env[key]!r}: must be positive")
    settings = Settings(**values, limits=Limits(**limit_values))
    if overrides:
        kinds = {f.name: f.type for f in fields(Settings) if f.init}
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(kinds) - {"limits"})
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        coerced: dict[str, Any] = {
            k: v if isinstance(v, Limits) else _coerce(f"--{k.replace('_', '-')}", str(v), kinds[k])
            for k, v in given.items()
        }
        settings = replace(settings, **coerced)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    for name in ("lakefs_endpoint", "s3_endpoint"):
        url = getattr(s, name)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"KFM_{name.upper()}={url!r}: must be an http(s) URL")
    if s.s3_addressing_style not in ("", "path", "virtual"):
        raise ConfigError(f"KFM_S3_ADDRESSING_STYLE={s.s3_addressing_style!r}: path or virtual (empty: path "
                          "with KFM_S3_ENDPOINT set, virtual without)")
    if s.kafka_bootstrap and any(":" not in h for h in s.kafka_bootstrap.split(",")):
        raise ConfigError(f"KFM_KAFKA_BOOTSTRAP={s.kafka_bootstrap!r}: expected host:port[,host:port]")
    if not 0 < s.hooks_port < 65536:
        raise ConfigError(f"KFM_HOOKS_PORT={s.hooks_port}: not a TCP port")
    for name in ("hooks_metrics_port", "worker_http_port"):
        if getattr(s, name) > 65535:
            raise ConfigError(f"KFM_{name.upper()}={getattr(s, name)}: not a TCP port (0: off)")
    if s.hooks_metrics_port and s.hooks_metrics_port == s.hooks_port:
        raise ConfigError(f"KFM_HOOKS_METRICS_PORT={s.hooks_metrics_port}: must differ from KFM_HOOKS_PORT")
    if s.hooks_read_timeout_s <= 0:
        raise ConfigError(f"KFM_HOOKS_READ_TIMEOUT_S={s.hooks_read_timeout_s}: must be positive")
    if not 1 <= s.bundle_zstd_level <= 19:
        raise ConfigError(f"KFM_BUNDLE_ZSTD_LEVEL={s.bundle_zstd_level}: between 1 and 19")
    _validate_reconcile(s)
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"KFM_LOG_LEVEL={s.log_level!r}: one of DEBUG, INFO, WARNING, ERROR")


def _validate_reconcile(s: Settings) -> None:
    if 0 < s.reconcile_interval_s < 1:
        raise ConfigError(f"KFM_RECONCILE_INTERVAL_S={s.reconcile_interval_s}: 0 (off) or at least 1")
    if not 1 <= s.reconcile_page_size <= 1000:
        raise ConfigError(f"KFM_RECONCILE_PAGE_SIZE={s.reconcile_page_size}: between 1 and 1000")
