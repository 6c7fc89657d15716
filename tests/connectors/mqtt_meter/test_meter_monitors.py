"""Data-quality monitors end to end: a supervisor process draining meters from a real Mosquitto into a real Kafka
puts an ``inlet.data_alert`` on Kafka when one meter's values jump x1000, keeps the alert (and its baselines)
across a restart without opening it again, clears it when the values return, and notices the feed stopping.

Windows of one second and three seconds of learning stand in for hours and a week (the rules are the same;
tests/core/test_monitors.py and test_monitors_corpus.py judge them over simulated weeks)."""

from __future__ import annotations

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

from inlet.core.checkpoint import CheckpointStore
from tests.helpers import consume, start_supervisor, supervisor_log, write_kafka_config

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]

DEVICES = 5


def _config(root: Path, mqtt_url: str, kafka: str, prefix: str) -> Path:
    integration = {
        "customer": "acme",
        "integration": "meters",
        "plugin": "mqtt_meter",
        "settings": {
            "mqtt": {"url": mqtt_url, "topics": ["meters/+/power"], "client_id": f"inlet-{prefix}"},
            "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
        },
        # Volume is left out: one-second windows on a loaded machine count batches, not the feed.
        "monitors": {"window_seconds": 1, "learn_seconds": 3, "volume": False},
    }
    return write_kafka_config(root, kafka=kafka, prefix=prefix, integration=integration)


class Meters:
    """Publishes a power reading per device every 50 ms; ``factor`` multiplies device 2's values."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client, self.factor, self.running = client, 1.0, threading.Event()
        self.running.set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            if self.running.is_set():
                now_ms = int(time.time() * 1000)
                for d in range(DEVICES):
                    value = (200 + 20 * d + i % 7) * (self.factor if d == 2 else 1.0)
                    payload = {"metric": "power", "value": value, "unit": "W", "ts": now_ms}
                    self.client.publish(f"meters/dev{d}/power", orjson.dumps(payload), qos=1)
                i += 1
            time.sleep(0.05)


def _stored_state(root: Path) -> dict[str, Any]:
    """The monitors' state as the supervisor stored it beside the position (``meters@monitors``)."""
    store = CheckpointStore(root / "state" / "checkpoints.sqlite")
    try:
        state = store.load_sync("acme", "meters@monitors")
    finally:
        store.close()
    assert state is not None
    return state


def _alerts(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def _wait_alerts(kafka: str, topic: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    records = await consume(kafka, [topic], timeout=60, until=lambda rs: done(_alerts(rs)))
    return _alerts(records)


def _shift(a: dict[str, Any]) -> bool:
    return a["check"] == "level_shift" and str(a["series"]).startswith("dev2/power")


async def test_a_unit_jump_alerts_on_kafka_survives_a_restart_and_clears(
    tmp_path: Path, kafka_bootstrap: str, mosquitto_factory: Any, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    broker = mosquitto_factory()
    prefix = f"mon-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}inlet.data_alert.v1"
    root = _config(tmp_path, broker.url, kafka_bootstrap, prefix)
    meters = Meters(mqtt_clients(broker.url))
    proc = start_supervisor(root, log_level="info")
    try:
        time.sleep(6)  # learning (3 s) and a few windows of baseline after it
        meters.factor = 1000.0  # device 2 now reports in mW
        alerts = await _wait_alerts(kafka_bootstrap, topic, lambda al: any(map(_shift, al)))
        [opened] = [a for a in alerts if _shift(a)]
        assert (
            opened["status"] == "open"
            and opened["field"] == "quantity"
            and opened["contract"] == "energy.meter_reading"
        )
        assert opened["seen"] > 100 * opened["expected"]
        assert "data alert opened" in (root / "supervisor.log").read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, supervisor_log(root)
        state = _stored_state(root)
        assert any(k.startswith("level_shift|energy.meter_reading|quantity|dev2/power") for k in state["open"])
        assert any('"dev1"' in k for k in state["numeric"]["energy.meter_reading|quantity"])  # baselines kept

        proc = start_supervisor(root, log_level="info")
        time.sleep(4)  # still x1000 after the restart: the alert is still open, not opened again
        meters.factor = 1.0
        alerts = await _wait_alerts(
            kafka_bootstrap, topic, lambda al: any(_shift(a) and a["status"] == "cleared" for a in al)
        )
        shifts = [a for a in alerts if _shift(a)]
        assert [a["status"] for a in shifts] == ["open", "cleared"], shifts
        assert shifts[1]["alert_id"] == opened["alert_id"]

        meters.running.clear()  # the feed stops: 100 readings a second became none
        alerts = await _wait_alerts(kafka_bootstrap, topic, lambda al: any(a["check"] == "silence" for a in al))
        [silence] = [a for a in alerts if a["check"] == "silence"]
        assert silence["status"] == "open" and silence["seen"] == 0 and silence["monitor"] == "freshness"
    finally:
        meters.stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
