"""Kafka with TLS and SASL: events arrive over SASL_SSL (SCRAM-SHA-512, OAUTHBEARER) and mutual TLS, and every
refusal (wrong password, untrusted CA, expired certificate, wrong client certificate, refused OAuth client or
token) is a clear, fatal error instead of an endless restart loop.

One real broker (``tools.services.KafkaBroker``, the session fixture ``secure_kafka`` of ``tests.secure_kafka``,
shared with test_relay) with three extra listeners: SASL_SSL (SCRAM-SHA-512 users created at format time, and
OAUTHBEARER with Kafka's unsecured validator), MTLS (SSL, client certificates required) and EXPIRED (SSL serving
an expired certificate). Certificates come from ``CertAuthority`` (openssl). The OAuth token endpoint is the
local ``AuthTestServer`` issuing unsigned JWTs (``alg: none`` with ``sub`` and ``exp``), the form Kafka's unsecured
validator accepts.

The configuration checks at the top need no broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import yaml
from typer.testing import CliRunner

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.cli import app
from inlet.core.config import KafkaSettings, check_config, load_config
from inlet.core.errors import SinkRefused, SinkUnavailable
from inlet.core.kafka_client import OAuthBearerTokenProvider, connection_options
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.supervisor import Supervisor
from tests.helpers import read_checkpoint, write_config
from tests.secure_kafka import CLIENT_ID, CLIENT_SECRET, KEY_PASSWORD, PASSWORD, USER, WRONG, Pki
from tools.servers.auth import AuthTestServer
from tools.servers.fhir import FhirTestServer
from tools.services import CertFiles, KafkaBroker


@pytest.fixture
def pki(kafka_pki: Pki) -> Pki:
    """The session's certificates (``tests.secure_kafka``) under the short name these tests use."""
    return kafka_pki


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_PASSWORD": PASSWORD,
        "KAFKA_WRONG": WRONG,
        "OAUTH_SECRET": CLIENT_SECRET,
        "KEY_PASSWORD": KEY_PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)


def _scram(broker: KafkaBroker, pki: Pki, password_env: str = "KAFKA_PASSWORD") -> dict[str, Any]:
    return {
        "bootstrap": broker.bootstrap_of("SASL_SSL"),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "username": USER,
        "password": {"env": password_env},
        "ssl_cafile": str(pki.ca.cert),
    }


def _mtls(broker: KafkaBroker, pki: Pki, client: CertFiles, listener: str = "MTLS") -> dict[str, Any]:
    return {
        "bootstrap": broker.bootstrap_of(listener),
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca.cert),
        "ssl_certfile": str(client.cert),
        "ssl_keyfile": str(client.key),
    }


def _oauth(broker: KafkaBroker, pki: Pki, token_url: str, secret_env: str = "OAUTH_SECRET") -> dict[str, Any]:
    return {
        "bootstrap": broker.bootstrap_of("SASL_SSL"),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "OAUTHBEARER",
        "ssl_cafile": str(pki.ca.cert),
        "oauth": {"token_url": token_url, "client_id": CLIENT_ID, "client_secret": {"env": secret_env}},
    }


def _config(root: Path, base_url: str, kafka: dict[str, Any], prefix: str, *, metrics: bool = False) -> Path:
    """``write_config``'s FHIR integration, with ``kafka`` as the whole Kafka section."""
    write_config(root, base_url=base_url, kafka=kafka["bootstrap"], topic_prefix=prefix, page_size=40)
    sup = yaml.safe_load((root / "inlet.yaml").read_text())
    sup["kafka"].update(kafka)
    if metrics:
        sup["metrics_port"] = 0
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    return root


def _wanted(resources: list[Any]) -> set[str]:
    return {r["id"] for r in resources if r["status"] != "entered-in-error"}


async def _consume(
    kafka_consumer: Callable[..., Awaitable[Any]],
    settings: KafkaSettings,
    topic: str,
    until: Callable[[set[str]], bool],
    timeout: float = 90,
) -> set[str]:
    """Observation ids on ``topic``, read through the secured listener with a consumer built from ``settings``
    (the ``kafka_consumer`` fixture's, stopped when the test ends)."""
    consumer = await kafka_consumer(topic, **connection_options(settings), auto_offset_reset="earliest")
    seen: set[str] = set()
    async with asyncio.timeout(timeout):
        while not until(seen):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen |= {orjson.loads(r.value)["observation_id"] for r in records}
    return seen


async def _run_once(root: Path) -> Any:
    sup_cfg, integrations = load_config(root)
    supervisor = Supervisor(sup_cfg, integrations, once=True)
    stats = await asyncio.wait_for(supervisor.run(), 120)
    assert not supervisor.failed, supervisor.failed
    return stats["acme/observations"]


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _refused_run(root: Path, server: FhirTestServer) -> tuple[str, Any, tuple[int, dict[str, Any]]]:
    """Run the supervisor (daemon mode, probes served) until the integration is stopped; prove it stays stopped.

    Returns the failure message, the stats and the /readyz answer seen while it was stopped.
    """
    sup_cfg, integrations = load_config(root)
    supervisor = Supervisor(sup_cfg, integrations)
    stats = supervisor.stats["acme/observations"]
    run = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(90):
            while "acme/observations" not in supervisor.failed:
                assert not run.done(), "the supervisor ended instead of stopping the integration"
                await asyncio.sleep(0.1)
        requests = len(server.requests)
        # Several restart backoffs (0.2 s doubling to 2 s) long: a restart loop would show here.
        await asyncio.sleep(4.0)
        assert stats.restarts == 0, f"restarted {stats.restarts} times after a refusal"
        assert len(server.requests) == requests, "kept reading upstream after the refusal"
        assert not run.done(), "the daemon keeps serving /readyz after its integrations stopped"
        assert supervisor.health is not None
        ready = await asyncio.to_thread(_readyz, supervisor.health.port)
    finally:
        supervisor.stop()
        await asyncio.wait_for(run, 30)
    return supervisor.failed["acme/observations"], stats, ready


# --- configuration: refused at load time (`inlet check`), no broker ---------------------------------------------


def _check_kafka(root: Path, kafka: dict[str, Any]) -> list[str]:
    write_config(root, base_url="https://ehr.acme.invalid/fhir", kafka="127.0.0.1:9093")
    sup = yaml.safe_load((root / "inlet.yaml").read_text())
    sup["kafka"] = {"bootstrap": "127.0.0.1:9093", **kafka}
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    _, _, errors = check_config(root)
    return [str(e) for e in errors]


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}, "needs username and password"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "inlet"},
            "needs username and password",
        ),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "needs oauth"),
        ({"security_protocol": "SSL", "username": "inlet"}, "does not authenticate with SASL"),
        ({"ssl_check_hostname": False}, "which has no TLS"),
        ({"security_protocol": "SSL", "ssl_cafile": "certs/missing-ca.pem"}, "does not exist"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "username": "inlet",
                "password": "literal-password",
            },
            "never the value itself",
        ),
        ({"security_protocol": "SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
    ids=[
        "sasl-without-mechanism",
        "scram-without-credentials",
        "plain-without-password",
        "oauthbearer-without-oauth",
        "username-without-sasl",
        "tls-option-on-plaintext",
        "missing-ca-file",
        "literal-password",
        "unsupported-mechanism",
    ],
)
def test_check_refuses_wrong_security_combinations(tmp_path: Path, kafka: dict[str, Any], expected: str) -> None:
    errors = _check_kafka(tmp_path, kafka)
    assert len(errors) == 1 and expected in errors[0], errors
    assert f"file {tmp_path / 'inlet.yaml'}" in errors[0] and "key kafka" in errors[0]


def test_check_refuses_unusable_tls_files(tmp_path: Path, pki: Pki, secrets: None) -> None:
    base = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca.cert)}
    only_cert = _check_kafka(tmp_path, {**base, "ssl_certfile": str(pki.client.cert)})
    assert "needs both ssl_certfile" in only_cert[0]
    foreign_key = _check_kafka(
        tmp_path, {**base, "ssl_certfile": str(pki.client.cert), "ssl_keyfile": str(pki.other_client.key)}
    )
    assert "cannot load the client certificate and key" in foreign_key[0] and "key kafka" in foreign_key[0]
    no_password = _check_kafka(
        tmp_path, {**base, "ssl_certfile": str(pki.client_encrypted.cert), "ssl_keyfile": str(pki.client_encrypted.key)}
    )
    assert "set ssl_key_password" in no_password[0]
    wrong_password = _check_kafka(
        tmp_path,
        {
            **base,
            "ssl_certfile": str(pki.client_encrypted.cert),
            "ssl_keyfile": str(pki.client_encrypted.key),
            "ssl_key_password": {"env": "KAFKA_WRONG"},
        },
    )
    assert wrong_password and WRONG not in wrong_password[0]
    (tmp_path / "key-password").write_text(KEY_PASSWORD + "\n")
    assert (
        _check_kafka(
            tmp_path,
            {
                **base,
                "ssl_certfile": str(pki.client_encrypted.cert),
                "ssl_keyfile": str(pki.client_encrypted.key),
                "ssl_key_password": {"file": str(tmp_path / "key-password")},
            },
        )
        == []
    )


def test_tls_paths_are_relative_to_the_config_directory(
    tmp_path: Path, pki: Pki, secrets: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "certs").mkdir()
    shutil.copy(pki.ca.cert, tmp_path / "certs" / "ca.pem")
    monkeypatch.chdir(pki.ca.directory)  # anywhere but the config directory
    errors = _check_kafka(
        tmp_path,
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": USER,
            "password": {"env": "KAFKA_PASSWORD"},
            "ssl_cafile": "certs/ca.pem",
        },
    )
    assert errors == []
    sup_cfg, _ = load_config(tmp_path)
    assert sup_cfg.kafka is not None and sup_cfg.kafka.ssl_cafile == str(tmp_path / "certs" / "ca.pem")
    options = connection_options(sup_cfg.kafka)
    assert options["security_protocol"] == "SASL_SSL" and options["ssl_context"].check_hostname
    assert options["sasl_plain_password"] == PASSWORD and PASSWORD not in repr(sup_cfg)


def test_inlet_check_names_file_key_and_fix(tmp_path: Path) -> None:
    _check_kafka(
        tmp_path, {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "ssl_cafile": "nowhere/ca.pem"}
    )
    result = CliRunner().invoke(app, ["check", "--config", str(tmp_path)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "inlet.yaml" in output and "key kafka.ssl_cafile" in output and "does not exist" in output
    assert str(tmp_path / "nowhere" / "ca.pem") in output


def test_plaintext_stays_the_default() -> None:
    settings = KafkaSettings(bootstrap="127.0.0.1:9092")
    assert connection_options(settings) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "inlet",
        "request_timeout_ms": 15_000,
    }


# --- events arrive -------------------------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
async def test_sasl_ssl_scram_sha_512_events_arrive(
    tmp_path: Path,
    secure_kafka: KafkaBroker,
    pki: Pki,
    secrets: None,
    kafka_consumer: Callable[..., Awaitable[Any]],
) -> None:
    resources = generate_observations(150, seed=21)
    prefix = f"scram-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources) as server:
        root = _config(tmp_path, server.base_url, _scram(secure_kafka, pki), prefix)
        stats = await _run_once(root)
    assert stats.restarts == 0 and stats.totals.records_in == len(resources)
    sup_cfg, _ = load_config(root)
    assert sup_cfg.kafka is not None
    seen = await _consume(
        kafka_consumer, sup_cfg.kafka, f"{prefix}clinical.observation.v1", lambda got: got >= _wanted(resources)
    )
    assert seen == _wanted(resources)


@pytest.mark.kafka
@pytest.mark.slow
async def test_mutual_tls_events_arrive(
    tmp_path: Path,
    secure_kafka: KafkaBroker,
    pki: Pki,
    secrets: None,
    kafka_consumer: Callable[..., Awaitable[Any]],
) -> None:
    """Client certificate with an encrypted key (its password a file secret) on a listener requiring one."""
    resources = generate_observations(150, seed=22)
    prefix = f"mtls-{uuid.uuid4().hex[:8]}."
    (tmp_path / "key-password").write_text(KEY_PASSWORD)
    kafka = {
        **_mtls(secure_kafka, pki, pki.client_encrypted),
        "ssl_key_password": {"file": str(tmp_path / "key-password")},
    }
    with FhirTestServer(resources) as server:
        root = _config(tmp_path / "config", server.base_url, kafka, prefix)
        stats = await _run_once(root)
    assert stats.restarts == 0 and stats.totals.records_in == len(resources)
    sup_cfg, _ = load_config(root)
    assert sup_cfg.kafka is not None
    seen = await _consume(
        kafka_consumer, sup_cfg.kafka, f"{prefix}clinical.observation.v1", lambda got: got >= _wanted(resources)
    )
    assert seen == _wanted(resources)


@pytest.mark.kafka
@pytest.mark.slow
async def test_oauthbearer_events_arrive_with_client_credentials_tokens(
    tmp_path: Path,
    secure_kafka: KafkaBroker,
    pki: Pki,
    secrets: None,
    kafka_consumer: Callable[..., Awaitable[Any]],
) -> None:
    resources = generate_observations(150, seed=23)
    prefix = f"oauth-{uuid.uuid4().hex[:8]}."
    with AuthTestServer(token_lifetime=600) as tokens, FhirTestServer(resources) as server:
        tokens.unsecured_jwt = True
        tokens.clients[CLIENT_ID] = CLIENT_SECRET
        root = _config(tmp_path, server.base_url, _oauth(secure_kafka, pki, tokens.oauth_token_url), prefix)
        stats = await _run_once(root)
        sup_cfg, _ = load_config(root)
        assert sup_cfg.kafka is not None
        seen = await _consume(
            kafka_consumer, sup_cfg.kafka, f"{prefix}clinical.observation.v1", lambda got: got >= _wanted(resources)
        )
        # A client's connections share its token: fetched once, then reused until it is due.
        assert sup_cfg.kafka.oauth is not None
        provider = OAuthBearerTokenProvider(sup_cfg.kafka.oauth)
        before = tokens.hits("/oauth/token", 200)
        first, *others = await asyncio.gather(*(provider.token() for _ in range(5)))
        assert others == [first] * 4 and await provider.token() == first
        assert tokens.hits("/oauth/token", 200) == before + 1
    assert stats.restarts == 0 and seen == _wanted(resources)
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in first.split(".")[:2])
    assert header == {"alg": "none"} and claims["sub"] == CLIENT_ID and claims["exp"] > claims["iat"]


@pytest.mark.kafka
@pytest.mark.slow
async def test_turning_off_host_name_checks_is_explicit_and_warned(
    secure_kafka: KafkaBroker, pki: Pki, kafka_sinks: Callable[[KafkaSettings], KafkaSink]
) -> None:
    settings = KafkaSettings.model_validate({**_mtls(secure_kafka, pki, pki.client), "ssl_check_hostname": False})
    assert connection_options(settings)["ssl_context"].check_hostname is False
    sink = kafka_sinks(settings)
    with structlog.testing.capture_logs() as logs:
        await sink.start()
    assert any(e["log_level"] == "warning" and "ssl_check_hostname: false" in e["event"] for e in logs), logs


# --- refusals: clear, fatal, nothing committed, no restart loop ----------------------------------------------


def _wrong_password(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return _scram(broker, pki, password_env="KAFKA_WRONG")


def _untrusted_ca(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return {**_scram(broker, pki), "ssl_cafile": str(pki.other_ca.cert)}


def _expired_broker_certificate(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return {"bootstrap": broker.bootstrap_of("EXPIRED"), "security_protocol": "SSL", "ssl_cafile": str(pki.ca.cert)}


def _foreign_client_certificate(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return _mtls(broker, pki, pki.other_client)


def _expired_client_certificate(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return _mtls(broker, pki, pki.expired_client)


def _refused_client_secret(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return _oauth(broker, pki, token_url, secret_env="KAFKA_WRONG")


def _token_the_broker_refuses(broker: KafkaBroker, pki: Pki, token_url: str) -> dict[str, Any]:
    return _oauth(broker, pki, token_url)  # the token server issues opaque tokens in this case


REFUSALS = {
    "wrong-password": (
        _wrong_password,
        [
            "SASL_SSL",
            "sasl_mechanism SCRAM-SHA-512",
            f"user {USER}",
            "SASL authentication failed",
            "invalid credentials",
        ],
    ),
    "untrusted-ca": (_untrusted_ca, ["SASL_SSL", "SCRAM-SHA-512", "not signed by a CA in ssl_cafile"]),
    "expired-broker-certificate": (_expired_broker_certificate, ["security_protocol SSL", "certificate has expired"]),
    "foreign-client-certificate": (
        _foreign_client_certificate,
        ["security_protocol SSL", "TLS handshake refused", "refused the client certificate"],
    ),
    "expired-client-certificate": (
        _expired_client_certificate,
        ["security_protocol SSL", "TLS handshake refused", "refused the client certificate"],
    ),
    "refused-client-secret": (
        _refused_client_secret,
        ["sasl_mechanism OAUTHBEARER", f"client {CLIENT_ID}", "token endpoint refused", "401", "invalid_client"],
    ),
    "token-refused-by-kafka": (
        _token_the_broker_refuses,
        ["sasl_mechanism OAUTHBEARER", "the broker rejected the token", "invalid_token"],
    ),
}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refusal_stops_the_integration_with_a_clear_error(
    tmp_path: Path, secure_kafka: KafkaBroker, pki: Pki, secrets: None, case: str
) -> None:
    settings_for, phrases = REFUSALS[case]
    resources = generate_observations(80, seed=30)
    with AuthTestServer() as tokens, FhirTestServer(resources) as server:
        tokens.unsecured_jwt = case != "token-refused-by-kafka"
        tokens.clients[CLIENT_ID] = CLIENT_SECRET
        kafka = settings_for(secure_kafka, pki, tokens.oauth_token_url)
        root = _config(tmp_path, server.base_url, kafka, f"refused-{uuid.uuid4().hex[:8]}.", metrics=True)
        message, stats, (status, body) = await _refused_run(root, server)

    assert message.startswith("SinkRefused: ") and f"Kafka at {kafka['bootstrap']}" in message, message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    assert not any(secret in message for secret in (PASSWORD, WRONG, CLIENT_SECRET)), message
    assert stats.totals.records_in == 0 and stats.batches == 0
    assert read_checkpoint(root) is None, "nothing may be committed past a refusing Kafka"
    assert status == 503 and body["unhealthy"]["acme/observations"] == message


@pytest.mark.kafka
@pytest.mark.slow
async def test_a_refusal_after_commits_leaves_the_checkpoint_where_it_was(
    tmp_path: Path, secure_kafka: KafkaBroker, pki: Pki, secrets: None
) -> None:
    """Events went through; then the password is wrong (rotated on one side only): newer records stay unread."""
    first = generate_observations(120, seed=31)
    prefix = f"rotated-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(first) as server:
        root = _config(tmp_path, server.base_url, _scram(secure_kafka, pki), prefix, metrics=True)
        await _run_once(root)
        committed = read_checkpoint(root)
        assert committed is not None
        later = first[-1]["meta"]["lastUpdated"]
        server.add(r for r in generate_observations(80, seed=32) if r["meta"]["lastUpdated"] > later)
        _config(root, server.base_url, _scram(secure_kafka, pki, password_env="KAFKA_WRONG"), prefix, metrics=True)
        message, stats, (status, _) = await _refused_run(root, server)
    assert "SASL authentication failed" in message and status == 503
    assert read_checkpoint(root) == committed and stats.restarts == 0


@pytest.mark.kafka
async def test_a_broker_that_is_not_there_is_an_outage_not_a_refusal(
    pki: Pki, secrets: None, kafka_sinks: Callable[[KafkaSettings], KafkaSink]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    settings = KafkaSettings.model_validate(
        {
            "bootstrap": f"127.0.0.1:{port}",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": USER,
            "password": {"env": "KAFKA_PASSWORD"},
            "ssl_cafile": str(pki.ca.cert),
            "request_timeout_ms": 5000,
        }
    )
    sink = kafka_sinks(settings)
    with pytest.raises(SinkUnavailable, match="not reachable"):
        await sink.start()


@pytest.mark.kafka
@pytest.mark.slow
async def test_plaintext_client_on_a_tls_listener_is_told_so(
    secure_kafka: KafkaBroker, kafka_sinks: Callable[[KafkaSettings], KafkaSink]
) -> None:
    sink = kafka_sinks(KafkaSettings(bootstrap=secure_kafka.bootstrap_of("EXPIRED"), request_timeout_ms=5000))
    with pytest.raises(SinkRefused, match="speaks TLS but security_protocol is PLAINTEXT"):
        await sink.start()
