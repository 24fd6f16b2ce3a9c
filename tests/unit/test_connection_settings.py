"""Kafka security, S3 and lakeFS connection settings: checked at start-up, naming the variable."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from worker._internal.kafka import Producer, check_access
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import load_settings
from worker.errors import ConfigError, TransientError


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate signed by it, made with openssl as the local stack makes them."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.crt", "-days", "2")
    return {n: d / n for n in ("ca.crt", "client.crt", "client.key")}


def test_sasl_ssl_builds_a_verifying_context_and_client_options(tls_files: dict[str, Path]) -> None:
    s = load_settings({
        "KFM_KAFKA_BOOTSTRAP": "broker:9093", "KFM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KFM_KAFKA_SASL_USERNAME": "kfm", "KFM_KAFKA_SASL_PASSWORD": "pw",
        "KFM_KAFKA_SSL_CAFILE": str(tls_files["ca.crt"]),
        "KFM_KAFKA_SSL_CERTFILE": str(tls_files["client.crt"]), "KFM_KAFKA_SSL_KEYFILE": str(tls_files["client.key"]),
    })
    ctx = s.kafka.ssl_context
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert s.kafka.client_options() == {
        "bootstrap_servers": "broker:9093", "security_protocol": "SASL_SSL", "ssl_context": ctx,
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "kfm", "sasl_plain_password": "pw"}
    assert "pw" not in repr(s) and "pw" not in repr(s.kafka)


def test_the_password_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    s = load_settings({"KFM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KFM_KAFKA_SASL_MECHANISM": "plain",
                       "KFM_KAFKA_SASL_USERNAME": "u", "KFM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw")})
    assert (s.kafka.sasl_mechanism, s.kafka.sasl_password, s.kafka.ssl_context) == ("PLAIN", "from-file", None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KFM_KAFKA_SECURITY_PROTOCOL='TLS': one of PLAINTEXT, SSL"),
        ({"KFM_KAFKA_SSL_CAFILE": "/x"}, "KFM_KAFKA_SSL_CAFILE is set but KFM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KFM_KAFKA_SASL_USERNAME": "u"}, "KFM_KAFKA_SASL_USERNAME is set but KFM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SSL", "KFM_KAFKA_SASL_PASSWORD": "p"},
         "KFM_KAFKA_SASL_PASSWORD is set but KFM_KAFKA_SECURITY_PROTOCOL=SSL does not use SASL"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KFM_KAFKA_SASL_USERNAME must be set"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KFM_KAFKA_SASL_USERNAME": "u"},
         "KFM_KAFKA_SASL_PASSWORD or KFM_KAFKA_SASL_PASSWORD_FILE must be set"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KFM_KAFKA_SASL_USERNAME": "u", "KFM_KAFKA_SASL_PASSWORD": "p",
          "KFM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "KFM_KAFKA_SASL_MECHANISM='GSSAPI': one of SCRAM-SHA-512"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SSL", "KFM_KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"},
         "KFM_KAFKA_SSL_CAFILE='/nonexistent/ca.crt': No such file"),
        ({"KFM_KAFKA_SECURITY_PROTOCOL": "SSL", "KFM_KAFKA_SSL_KEYFILE": "/k"},
         "KFM_KAFKA_SSL_KEYFILE is set without KFM_KAFKA_SSL_CERTFILE"),
        ({"KFM_S3_ADDRESSING_STYLE": "dns"}, "KFM_S3_ADDRESSING_STYLE='dns': path or virtual"),
        ({"KFM_KAFKA_BOOTSTRAP": "a:1,b"}, "KFM_KAFKA_BOOTSTRAP='a:1,b': expected host:port"),
    ],
)
def test_bad_connection_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env)
    assert str(exc.value).startswith(message), str(exc.value)


def test_a_key_that_is_not_a_key_names_both_files(tls_files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^KFM_KAFKA_SSL_CERTFILE=.*KFM_KAFKA_SSL_KEYFILE=.*not a usable"):
        load_settings({"KFM_KAFKA_SECURITY_PROTOCOL": "SSL", "KFM_KAFKA_SSL_CERTFILE": str(tls_files["client.crt"]),
                       "KFM_KAFKA_SSL_KEYFILE": str(tls_files["ca.crt"])})


def test_unset_endpoints_stop_the_clients_naming_the_variable() -> None:
    s = load_settings({})
    with pytest.raises(ConfigError, match=r"^KFM_KAFKA_BOOTSTRAP must be set"):
        Producer(s.kafka)
    with pytest.raises(ConfigError, match=r"^KFM_LAKEFS_ENDPOINT, KFM_LAKEFS_ACCESS_KEY_ID, "
                                          r"KFM_LAKEFS_SECRET_ACCESS_KEY must be set"):
        LakeFS(s)

    async def bucket() -> None:
        async with open_bucket(s):
            pass

    with pytest.raises(ConfigError, match=r"^KFM_S3_BUCKET must be set"):
        asyncio.run(bucket())


def test_an_empty_s3_endpoint_is_aws_with_virtual_host_addressing() -> None:
    async def client_of(env: dict[str, str]) -> tuple[str, str]:
        async with open_bucket(load_settings({"KFM_S3_BUCKET": "b", "KFM_S3_REGION": "eu-west-1", **env})) as b:
            meta = b._c.meta
            return meta.endpoint_url, meta.config.s3["addressing_style"]

    assert asyncio.run(client_of({})) == ("https://s3.eu-west-1.amazonaws.com", "virtual")
    assert asyncio.run(client_of({"KFM_S3_ENDPOINT": "http://s3.internal:9000"})) == \
        ("http://s3.internal:9000", "path")
    assert asyncio.run(client_of({"KFM_S3_ADDRESSING_STYLE": "path"}))[1] == "path"


def test_a_closed_port_is_transient_not_a_settings_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError, match=r"^Kafka unreachable \(Kafka at 127.0.0.1:\d+: "):
        asyncio.run(check_access(f"127.0.0.1:{port}", 2.0))
