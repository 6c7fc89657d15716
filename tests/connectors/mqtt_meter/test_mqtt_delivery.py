"""MQTT meter readings end to end while one side is down: the broker's queue is the buffer, nothing is lost.

1. The supervisor is down (SIGTERM drain, or kill -9): readings published meanwhile wait in its persistent
   session (QoS 1, ``clean_session=False``) and reach Kafka once it is back.
2. Kafka is down: the supervisor keeps running but cannot sink, so it sends no PUBACK for what it was handed;
   the broker keeps those readings, and when Kafka returns the same supervisor process resumes by itself.

Both count exactly: every reading published is on Kafka under one event id, and no other event is.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from tests.helpers import consume, start_supervisor, supervisor_log
from tools.services import KafkaBroker, Mosquitto

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]


# --- helpers ----------------------------------------------------------------------------------------------


def _config(
    root: Path, mqtt_url: str, kafka: str, prefix: str, *, request_timeout_ms: int = 5000, metrics: bool = False
) -> tuple[Path, str]:
    """A config directory with one ``mqtt_meter`` integration (plain JSON route); returns it and the client id."""
    client_id = f"inlet-{prefix}"
    (root / "integrations").mkdir(parents=True)
    sup: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "restart_backoff_initial_seconds": 0.2,
        "restart_backoff_max_seconds": 1.0,
        "topic_template": prefix + "{name}.v{major}",
        "dlq_topic_template": prefix + "dlq",
        "kafka": {"bootstrap": kafka, "request_timeout_ms": request_timeout_ms},
    }
    if metrics:
        sup["metrics_port"] = 0
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    (root / "integrations" / "meters.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "acme",
                "integration": "meters",
                "plugin": "mqtt_meter",
                "settings": {
                    "mqtt": {
                        "url": mqtt_url,
                        "topics": ["meters/+/power"],
                        "client_id": client_id,
                        "batch_max": 200,
                        "batch_linger_seconds": 0.005,
                    },
                    "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
                },
            }
        )
    )
    return root, client_id


class _Publisher:
    """QoS 1 readings ``value == i`` with at most 20 publishes unacknowledged (paho's limit)."""

    _WINDOW = 20

    def __init__(self, mqtt_clients: Callable[..., mqtt.Client], url: str) -> None:
        self._in_flight = threading.BoundedSemaphore(self._WINDOW)
        self._client = mqtt_clients(url, on_publish=lambda *args: self._in_flight.release())

    def publish(self, values: range) -> None:
        for i in values:
            assert self._in_flight.acquire(timeout=10), "the broker stopped acknowledging publishes"
            payload = orjson.dumps({"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i})
            self._client.publish(f"meters/dev{i % 10}/power", payload, qos=1)

    def flush(self) -> None:
        """Return once the broker has acknowledged (stored) every reading published so far."""
        for _ in range(self._WINDOW):
            assert self._in_flight.acquire(timeout=10), "the broker did not acknowledge every publish"
        for _ in range(self._WINDOW):
            self._in_flight.release()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, root: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{supervisor_log(root)}")
        time.sleep(0.1)


def _connects(root: Path) -> list[dict[str, Any]]:
    """The supervisor's "mqtt connected" log entries (JSON lines), oldest first."""
    lines = (root / "supervisor.log").read_text().splitlines()
    entries = [orjson.loads(line) for line in lines if line.startswith("{") and '"mqtt connected"' in line]
    return [e for e in entries if e.get("event") == "mqtt connected"]


def _wait_connected(root: Path, proc: Any, connects: int) -> None:
    """Until the supervisor's log shows its ``connects``-th MQTT connection (it subscribes on each)."""
    _wait_for(
        lambda: proc.poll() is None and len(_connects(root)) >= connects, 60, "the supervisor's MQTT connection", root
    )


def _ids_by_value(records: list[Any]) -> dict[float, set[str]]:
    """Reading value → the event ids it appeared under on Kafka."""
    ids: dict[float, set[str]] = {}
    for r in records:
        ids.setdefault(orjson.loads(r.value)["quantity"], set()).add(dict(r.headers)["ce_id"].decode())
    return ids


async def _read_back(bootstrap: str, topic: str, values: range, timeout: float = 60) -> dict[float, set[str]]:
    """The readings on ``topic`` once every value in ``values`` is there (or ``timeout`` passed)."""
    wanted = {float(i) for i in values}
    records = await consume(bootstrap, [topic], timeout=timeout, until=lambda got: set(_ids_by_value(got)) >= wanted)
    return _ids_by_value(records)


def _assert_exactly(ids: dict[float, set[str]], values: range) -> None:
    missing = {float(i) for i in values} - set(ids)
    extra = set(ids) - {float(i) for i in values}
    assert not missing and not extra, (
        f"{len(missing)} readings missing (e.g. {sorted(missing)[:5]}), "
        f"{len(extra)} unexpected (e.g. {sorted(extra)[:5]})"
    )
    duplicated = {v: s for v, s in ids.items() if len(s) != 1}
    assert not duplicated, f"a redelivered reading must keep its event id: {list(duplicated.items())[:3]}"
    assert len(set().union(*ids.values())) == len(values)


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _events_out(port: int) -> float:
    """The supervisor's own count of events the sink accepted (``inlet_events_out_total``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("inlet_events_out_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def _stop(proc: Any) -> int | None:
    """SIGTERM (a drain) and the exit code; None when it had to be killed after 30 s (never left running)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return int(proc.wait(timeout=30))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


def _metrics_port(root: Path) -> int:
    for line in (root / "supervisor.log").read_text().splitlines():
        if line.startswith("{") and (entry := orjson.loads(line)).get("event", "").startswith("serving /metrics"):
            return int(entry["port"])
    raise AssertionError(f"the supervisor did not log its metrics port\n{supervisor_log(root)}")


# --- 1. the supervisor is down ----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
async def test_readings_published_while_the_supervisor_is_down_arrive_after_it_returns(
    tmp_path: Path,
    kafka_bootstrap: str,
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_clients: Callable[..., mqtt.Client],
    stop: signal.Signals,
) -> None:
    """The first run creates the persistent session; what is published while no supervisor runs waits there."""
    broker = mosquitto_factory()
    prefix = f"mqttdown-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}energy.meter_reading.v1"
    root, _ = _config(tmp_path, broker.url, kafka_bootstrap, prefix)
    n = 500
    publisher = _Publisher(mqtt_clients, broker.url)
    proc = start_supervisor(root, log_level="info")
    try:
        _wait_connected(root, proc, 1)
        # A probe through the whole path: the subscription (hence the session) exists before the supervisor stops.
        publisher.publish(range(n, n + 1))
        await _read_back(kafka_bootstrap, topic, range(n, n + 1))
        proc.send_signal(stop)
        code = proc.wait(timeout=30)
        assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), supervisor_log(root)

        publisher.publish(range(n))
        publisher.flush()  # all n are in the broker while no supervisor runs
        assert proc.poll() is not None

        proc = start_supervisor(root, log_level="info")
        _wait_connected(root, proc, 2)
        assert _connects(root)[-1]["session_present"] is True, "the broker forgot the supervisor's session"
        ids = await _read_back(kafka_bootstrap, topic, range(n + 1))
    finally:
        code = _stop(proc)
    assert code == 0, supervisor_log(root)
    _assert_exactly(ids, range(n + 1))


# --- 2. Kafka is down ----------------------------------------------------------------------------------------


async def test_kafka_outage_holds_pubacks_and_the_broker_buffers_until_the_supervisor_resumes(
    tmp_path: Path,
    kafka_broker_factory: Callable[..., KafkaBroker],
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_clients: Callable[..., mqtt.Client],
) -> None:
    """No PUBACK goes out for a reading that is not on Kafka; the broker keeps it; the same process resumes.

    The proof of "no PUBACK" is the broker's own packet log (``log_type all``): it names every PUBLISH it sends
    to, and every PUBACK it receives from, the supervisor's client id — exact, and observed from outside the
    process under test. The alternatives are weaker: resuming the session after kill -9 with a plain
    manual-ack subscriber of the same client id shows only the broker's in-flight window (20 unacknowledged
    messages; acking to see more would take the readings away), and ``$SYS`` counters are broker-wide and lag
    by ``sys_interval``. MQTT requires the broker to keep a QoS 1 message until its PUBACK, so "handed to the
    supervisor, no PUBACK, later on Kafka" is the broker's queue acting as the buffer.

    aiokafka keeps a batch for a known but unreachable leader without expiring it; ``KafkaSink`` bounds that wait
    (2x the request timeout), so the outage shows: the integration fails its batch, /readyz answers 503, the
    supervisor restarts it with backoff (unacknowledged readings are redelivered), all without a PUBACK.
    """
    kafka = kafka_broker_factory()
    broker = mosquitto_factory(log_packets=True, persistence=False)
    prefix = f"mqttkafka-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}energy.meter_reading.v1"
    root, client_id = _config(tmp_path, broker.url, kafka.bootstrap, prefix, request_timeout_ms=1000, metrics=True)

    def pubacks() -> int:
        return broker.console_log.read_text().count(f"Received PUBACK from {client_id} (")

    def sent_to_supervisor() -> int:
        return broker.console_log.read_text().count(f"Sending PUBLISH to {client_id} (")

    first, more = 100, 300
    publisher = _Publisher(mqtt_clients, broker.url)
    proc = start_supervisor(root, log_level="info")
    try:
        _wait_connected(root, proc, 1)
        port = _metrics_port(root)

        # Before the outage: readings flow, each acknowledged once it is on Kafka.
        publisher.publish(range(first))
        _assert_exactly(await _read_back(kafka.bootstrap, topic, range(first)), range(first))
        _wait_for(lambda: pubacks() >= first, 10, f"{first} PUBACKs", root)
        assert pubacks() == first
        assert _events_out(port) == first

        # Kafka goes away; more readings arrive; the supervisor is handed some of them but cannot sink them.
        kafka.stop()
        publisher.publish(range(first, first + more))
        publisher.flush()
        _wait_for(lambda: sent_to_supervisor() > first, 10, "readings handed to the supervisor during the outage", root)
        time.sleep(4.0)  # four producer request timeouts: time enough for a wrong PUBACK to go out
        assert proc.poll() is None, "the supervisor must keep running while Kafka is down"
        assert _http_status(port, "/healthz") == 200
        _wait_for(lambda: _http_status(port, "/readyz") == 503, 10, "/readyz reporting the outage", root)
        assert _events_out(port) == first, "the sink accepted events while Kafka was down"
        assert pubacks() == first, "a PUBACK went out for a reading that is not on Kafka"

        # Kafka is back on the same port: the same process resumes, the broker's backlog drains into Kafka.
        kafka.start()
        ids = await _read_back(kafka.bootstrap, topic, range(first + more))
        _wait_for(lambda: pubacks() >= first + more, 10, "a PUBACK for every reading", root)
        assert pubacks() == first + more, "every reading is acknowledged exactly once, after it is on Kafka"
        _wait_for(lambda: _http_status(port, "/readyz") == 200, 10, "/readyz after Kafka returned", root)
    finally:
        code = _stop(proc)
    assert code == 0, supervisor_log(root)
    _assert_exactly(ids, range(first + more))
