"""MQTT readings at QoS 1 survive kill -9 of the supervisor: PUBACK only after Kafka has them, redelivery after."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from tests.helpers import consume, start_supervisor, write_kafka_config

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]


def _config(root: Path, mqtt_url: str, kafka: str, prefix: str) -> Path:
    mqtt_settings = {
        "url": mqtt_url,
        "topics": ["meters/+/power"],
        "client_id": f"inlet-{prefix}",
        "batch_max": 200,
        "batch_linger_seconds": 0.005,
    }
    integration = {
        "customer": "acme",
        "integration": "meters",
        "plugin": "mqtt_meter",
        "settings": {
            "mqtt": mqtt_settings,
            "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
        },
    }
    return write_kafka_config(root, kafka=kafka, prefix=prefix, integration=integration)


def _payload(i: int) -> bytes:
    return orjson.dumps({"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i})


async def test_kill_minus_9_while_readings_stream_in_loses_none(
    tmp_path: Path, kafka_bootstrap: str, mosquitto_factory: Any, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    broker = mosquitto_factory()
    prefix = f"mqtt9-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}energy.meter_reading.v1"
    root = _config(tmp_path, broker.url, kafka_bootstrap, prefix)
    in_flight = threading.BoundedSemaphore(20)  # paho breaks down with too many unacknowledged publishes
    client = mqtt_clients(broker.url, on_publish=lambda *args: in_flight.release())
    n = 3000
    proc = start_supervisor(root, log_level="info")
    # Messages published before the supervisor's first subscription have no session to wait in.
    deadline = time.monotonic() + 60
    while "mqtt connected" not in (root / "supervisor.log").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, (root / "supervisor.log").read_text()[-2000:]
        time.sleep(0.1)
    in_flight.acquire()
    client.publish("meters/probe/power", _payload(n), qos=1)
    assert len(await consume(kafka_bootstrap, [topic], expect=1, timeout=60)) == 1

    done = threading.Event()

    def publish_all() -> None:
        for i in range(n):
            in_flight.acquire()
            client.publish(f"meters/dev{i % 10}/power", _payload(i), qos=1)
            if i % 100 == 0:
                time.sleep(0.05)  # about 2k readings/s
        done.set()

    publisher = threading.Thread(target=publish_all, daemon=True)
    publisher.start()
    rng = random.Random(int(os.environ.get("INLET_TEST_SEED", "0")) or None)
    kills = 0
    try:
        while not done.is_set() and kills < 3:
            time.sleep(rng.uniform(0.2, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            proc = start_supervisor(root, log_level="info")
        publisher.join(timeout=60)
        assert done.is_set(), "the publisher did not finish"

        def complete(records: list[Any]) -> bool:
            return len({orjson.loads(r.value)["quantity"] for r in records}) >= n + 1

        records = await consume(kafka_bootstrap, [topic], timeout=120, until=complete)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, (root / "supervisor.log").read_text()[-2000:]
    assert kills >= 1
    ids: dict[float, set[str]] = {}
    for r in records:
        ids.setdefault(orjson.loads(r.value)["quantity"], set()).add(dict(r.headers)["ce_id"].decode())
    assert set(ids) == {float(i) for i in range(n + 1)}, "every reading (and the probe) is on Kafka at least once"
    assert all(len(v) == 1 for v in ids.values()), "a redelivered reading keeps its event id"
