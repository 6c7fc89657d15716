"""MQTT over TLS with client certificates: readings arrive; a refused handshake is a clear error, not silence.

A real Mosquitto (``tools.services.Mosquitto``) with a TLS listener that requires client certificates
(``require_certificate true``) next to its plain one; certificates from ``CertAuthority`` (openssl) in the
module's temporary directory. The settings checks at the top need no broker.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import structlog
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from inlet.connectors.mqtt_meter.connector import MqttMeterSettings
from inlet.core.auth import AuthError
from inlet.core.config import check_config, load_config
from inlet.core.mqtt import MqttSettings, MqttSource, create_session
from inlet.core.mqtt_receiver import ProcessSource
from inlet.core.supervisor import Supervisor
from tests.helpers import consume
from tools.services import CertAuthority, CertFiles, Mosquitto, MosquittoTls, ServiceError

KEY_PASSWORD = "mqtt-key-pw-41c9"


@dataclass(frozen=True)
class Pki:
    ca: CertAuthority
    server: CertFiles
    client: CertFiles
    client_encrypted: CertFiles
    expired_client: CertFiles
    other_ca: CertAuthority
    other_client: CertFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = CertAuthority(root / "ca"), CertAuthority(root / "other", name="some other CA")
    return Pki(
        ca=ca,
        server=ca.issue("mosquitto", server=True),
        client=ca.issue("inlet"),
        client_encrypted=ca.issue("inlet-enc", key_password=KEY_PASSWORD),
        expired_client=ca.issue("inlet-expired", expired=True),
        other_ca=other,
        other_client=other.issue("inlet"),
    )


@pytest.fixture(scope="module")
def tls_mosquitto(pki: Pki) -> Iterator[Mosquitto]:
    broker = Mosquitto(tls=MosquittoTls(cafile=pki.ca.cert, certfile=pki.server.cert, keyfile=pki.server.key))
    try:
        broker.start()
    except ServiceError as exc:
        broker.close()
        raise pytest.fail.Exception(f"could not start mosquitto with TLS: {exc}", pytrace=False) from None
    try:
        yield broker
    finally:
        broker.close()


def _settings(broker: Mosquitto, pki: Pki, client: CertFiles | None, **extra: Any) -> MqttSettings:
    tls: dict[str, Any] = {"tls_cafile": str(pki.ca.cert)}
    if client is not None:
        tls |= {"tls_certfile": str(client.cert), "tls_keyfile": str(client.key)}
    return MqttSettings.model_validate({"url": broker.tls_url, "topics": ["meters/+/power"], **tls, **extra})


async def _first_error(settings: MqttSettings, timeout: float = 60, source_type: Any = MqttSource) -> AuthError:
    """Run a source until it raises (a refusal); fail if it is still quiet after ``timeout`` seconds."""
    source = source_type(settings, f"inlet-test-{uuid.uuid4().hex[:8]}")
    await source.start()
    try:
        async with asyncio.timeout(timeout):
            with pytest.raises(AuthError) as raised:
                async for _ in source.batches():
                    pass
    finally:
        await source.stop()
    return raised.value


# --- settings, checked at load time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"url": "mqtt://127.0.0.1:1883", "tls_cafile": "{ca}"}, "is not TLS: use mqtts://"),
        ({"tls_certfile": "{cert}"}, "needs both tls_certfile and tls_keyfile"),
        ({"tls_cafile": "missing/ca.pem"}, "does not exist"),
        ({"tls_insecure": True, "tls_cafile": "{ca}"}, "tls_cafile would be ignored"),
        ({"tls_certfile": "{cert}", "tls_keyfile": "{other_key}"}, "cannot load the client certificate and key"),
    ],
    ids=["tls-on-plain-url", "certificate-without-key", "missing-file", "insecure-with-ca", "key-of-another"],
)
def test_wrong_tls_settings_are_refused(pki: Pki, extra: dict[str, Any], expected: str) -> None:
    files = {"ca": str(pki.ca.cert), "cert": str(pki.client.cert), "other_key": str(pki.other_client.key)}
    data = {
        "url": "mqtts://127.0.0.1:8883",
        "topics": ["x/#"],
        **{k: v.format(**files) if isinstance(v, str) else v for k, v in extra.items()},
    }
    with pytest.raises(ValidationError, match=expected):
        MqttSettings.model_validate(data)


def test_tls_files_are_relative_to_the_config_directory(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "integrations").mkdir()
    (tmp_path / "certs").mkdir()
    for source, name in ((pki.ca.cert, "ca.pem"), (pki.client.cert, "inlet.pem"), (pki.client.key, "inlet.key")):
        shutil.copy(source, tmp_path / "certs" / name)
    (tmp_path / "integrations" / "meters.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "acme",
                "integration": "meters",
                "plugin": "mqtt_meter",
                "settings": {
                    "mqtt": {
                        "url": "mqtts://127.0.0.1:8883",
                        "topics": ["meters/+/power"],
                        "tls_cafile": "certs/ca.pem",
                        "tls_certfile": "certs/inlet.pem",
                        "tls_keyfile": "certs/missing.key",
                    },
                    "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
                },
            }
        )
    )
    monkeypatch.chdir(pki.ca.directory)
    _, _, errors = check_config(tmp_path)
    assert len(errors) == 1 and "key settings.mqtt.tls_keyfile" in str(errors[0]), errors
    assert str(tmp_path / "certs" / "missing.key") in str(errors[0])


# --- a real broker requiring client certificates ---------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.mqtt
@pytest.mark.slow
async def test_readings_arrive_over_client_certificate_tls(
    tmp_path: Path, pki: Pki, tls_mosquitto: Mosquitto, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integration subscribes over mqtts:// with a client certificate (key encrypted, password from env)."""
    monkeypatch.setenv("MQTT_KEY_PASSWORD", KEY_PASSWORD)
    prefix = f"mqtttls-{uuid.uuid4().hex[:8]}."
    client_id = f"inlet-{prefix}"
    mqtt_settings = {
        "url": tls_mosquitto.tls_url,
        "topics": ["meters/+/power"],
        "client_id": client_id,
        "tls_cafile": str(pki.ca.cert),
        "tls_certfile": str(pki.client_encrypted.cert),
        "tls_keyfile": str(pki.client_encrypted.key),
        "tls_key_password": {"env": "MQTT_KEY_PASSWORD"},
        "batch_max": 200,
        "batch_linger_seconds": 0.005,
    }
    (tmp_path / "integrations").mkdir()
    (tmp_path / "inlet.yaml").write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "restart_backoff_initial_seconds": 0.2,
                "restart_backoff_max_seconds": 1.0,
                "topic_template": prefix + "{name}.v{major}",
                "dlq_topic_template": prefix + "dlq",
                "kafka": {"bootstrap": kafka_bootstrap, "request_timeout_ms": 5000},
            }
        )
    )
    (tmp_path / "integrations" / "meters.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "acme",
                "integration": "meters",
                "plugin": "mqtt_meter",
                "settings": {
                    "mqtt": mqtt_settings,
                    "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
                },
            }
        )
    )
    sup_cfg, integrations = load_config(tmp_path)
    # The persistent session (over TLS, the same settings) exists before anything is published.
    settings = integrations[0].settings
    assert isinstance(settings, MqttMeterSettings)
    await asyncio.to_thread(create_session, settings.mqtt, client_id)
    n = 200
    _publish(tls_mosquitto.url, n)  # on the plain listener: what a device would send

    supervisor = Supervisor(sup_cfg, integrations)
    run = asyncio.create_task(supervisor.run())
    try:
        records = await consume(
            kafka_bootstrap,
            [f"{prefix}energy.meter_reading.v1"],
            timeout=90,
            until=lambda got: len({orjson.loads(r.value)["quantity"] for r in got}) >= n,
        )
    finally:
        supervisor.stop()
        await asyncio.wait_for(run, 30)
    assert {orjson.loads(r.value)["quantity"] for r in records} == {float(i) for i in range(n)}
    assert supervisor.stats["acme/meters"].restarts == 0


def _publish(url: str, count: int) -> None:
    """``count`` QoS 1 readings, returning once the broker acknowledged them all."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    acked = threading.Semaphore(0)
    client.on_publish = lambda *args: acked.release()
    client.connect(host, int(port))
    client.loop_start()
    try:
        for i in range(count):
            payload = orjson.dumps({"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i})
            client.publish(f"meters/dev{i % 10}/power", payload, qos=1)
        for _ in range(count):
            assert acked.acquire(timeout=30), "the broker did not acknowledge every publish"
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mqtt
@pytest.mark.slow
@pytest.mark.parametrize(
    ("client", "ca", "phrases"),
    [
        ("other_client", "ca", ["TLS handshake refused", "refused the client certificate", "UNKNOWN_CA"]),
        ("expired_client", "ca", ["TLS handshake refused", "refused the client certificate", "CERTIFICATE_EXPIRED"]),
        (None, "ca", ["TLS handshake refused", "requires a client certificate: set tls_certfile and tls_keyfile"]),
        # paho leaves its socket unclosed when the handshake fails in its own connect (paho 2.2, _ssl_wrap_socket):
        # the ResourceWarning of that socket is paho's, not inlet's.
        pytest.param(
            "client",
            "other_ca",
            ["the broker's certificate was not accepted", "tls_cafile"],
            marks=pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning"),
        ),
    ],
    ids=["foreign-client-certificate", "expired-client-certificate", "no-client-certificate", "untrusted-broker"],
)
async def test_a_refused_tls_handshake_is_a_clear_error(
    pki: Pki, tls_mosquitto: Mosquitto, client: str | None, ca: str, phrases: list[str]
) -> None:
    settings = _settings(
        tls_mosquitto, pki, getattr(pki, client) if client else None, tls_cafile=str(getattr(pki, ca).cert)
    )
    error = str(await _first_error(settings))
    assert error.startswith(f"MQTT broker {tls_mosquitto.tls_url} refused the connection"), error
    for phrase in phrases:
        assert phrase in error, f"{phrase!r} not in {error!r}"


@pytest.mark.mqtt
@pytest.mark.slow
async def test_a_refusal_found_by_the_receiver_process_is_the_same_error(pki: Pki, tls_mosquitto: Mosquitto) -> None:
    """``receiver: process``: the child probes and words the refusal; the supervisor's process raises it."""
    settings = _settings(tls_mosquitto, pki, None)
    in_thread = str(await _first_error(settings))
    in_process = str(await _first_error(settings.model_copy(update={"receiver": "process"}), source_type=ProcessSource))
    assert in_process == in_thread and "requires a client certificate" in in_process


@pytest.mark.mqtt
@pytest.mark.slow
async def test_tls_insecure_connects_without_verifying_and_says_so(pki: Pki, tls_mosquitto: Mosquitto) -> None:
    settings = MqttSettings.model_validate(
        {
            "url": tls_mosquitto.tls_url,
            "topics": ["x/#"],
            "tls_insecure": True,
            "tls_certfile": str(pki.client.cert),
            "tls_keyfile": str(pki.client.key),
        }
    )
    source = MqttSource(settings, f"inlet-test-{uuid.uuid4().hex[:8]}")
    with structlog.testing.capture_logs() as logs:
        await source.start()
    try:
        assert await asyncio.to_thread(source.connected.wait, 30), "no connection without a CA to verify against"
    finally:
        await source.stop()
    assert any(entry["log_level"] == "warning" and "tls_insecure: true" in entry["event"] for entry in logs), logs
