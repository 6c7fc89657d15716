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


def _config(root: Path, mqtt_url: str, kafka: str, prefix: str, receiver: str) -> Path:
    mqtt_settings = {
        "url": mqtt_url,
        "receiver": receiver,
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


def _log(root: Path) -> str:
    return (root / "supervisor.log").read_text()


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _payload(i: int) -> bytes:
    return orjson.dumps({"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i})


@pytest.mark.parametrize("receiver", ["thread", "process"])
async def test_kill_minus_9_while_readings_stream_in_loses_none(
    tmp_path: Path,
    kafka_bootstrap: str,
    mosquitto_factory: Any,
    mqtt_clients: Callable[..., mqtt.Client],
    receiver: str,
) -> None:
    """With the client in the supervisor's process, or in its receiver process (which a kill -9 of the supervisor
    leaves reading end-of-file: it disconnects without acknowledging what it still holds)."""
    broker = mosquitto_factory()
    prefix = f"mqtt9-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}energy.meter_reading.v1"
    root = _config(tmp_path, broker.url, kafka_bootstrap, prefix, receiver)
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
    if receiver == "process":  # a receiver per supervisor start, each gone with its supervisor
        lines = [orjson.loads(line) for line in _log(root).splitlines() if line.startswith("{")]
        pids = [line["pid"] for line in lines if line["event"] == "mqtt receiver process started"]
        assert any(line.get("receiver_pid") in pids and line["event"] == "mqtt connected" for line in lines)
        assert 1 <= len(pids) <= kills + 1, _log(root)[-2000:]  # a kill may come before the integration started
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "a receiver process outlived its supervisor"
            time.sleep(0.2)
    assert all(len(v) == 1 for v in ids.values()), "a redelivered reading keeps its event id"
