"""Three replicas of a fleet drain one hub's backlog through the slots of one integration; one replica dies."""

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

from inlet.core.config import load_config
from inlet.core.mqtt import MqttSettings, create_session, share_group
from tests.helpers import consume, owners_when, start_supervisor, supervisor_log
from tools.fleet_config import fleet_roots, write_fleet_config

pytestmark = [pytest.mark.kafka, pytest.mark.mqtt, pytest.mark.slow]

BACKLOG = 50_000


def _meters(url: str, prefix: str) -> dict[str, Any]:
    return {
        "customer": "acme",
        "integration": "hub",
        "plugin": "mqtt_meter",
        "slots": 3,
        "weight": 5,
        "settings": {
            "mqtt": {
                "url": url,
                "topics": ["meters/+/power"],
                "client_id": f"inlet-{prefix}",
                "batch_max": 500,
                "batch_linger_seconds": 0.01,
            },
            "routes": [{"topic": "meters/+/power", "decoder": "json", "device_level": 1}],
        },
    }


def _payload(i: int) -> bytes:
    return orjson.dumps({"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i})


async def test_three_replicas_drain_a_shared_backlog_and_a_killed_ones_slot_moves(
    tmp_path: Path, kafka_bootstrap: str, mosquitto_factory: Any, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    broker = mosquitto_factory()
    prefix = f"slots-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}group"
    topic = f"{prefix}energy.meter_reading.v1"
    doc = _meters(broker.url, prefix)
    settings = MqttSettings.model_validate(doc["settings"]["mqtt"])
    # The slots' sessions exist before the backlog is published (as a deployment's first start would leave them).
    create_session(settings, f"inlet-{prefix}", slots=3, group=share_group(settings, "acme", "hub"))
    in_flight = threading.BoundedSemaphore(50)
    client = mqtt_clients(broker.url, on_publish=lambda *args: in_flight.release())
    for i in range(BACKLOG):
        in_flight.acquire()
        client.publish(f"meters/dev{i % 50}/power", _payload(i), qos=1)
    for _ in range(50):  # every PUBACK is in: the broker holds the whole backlog
        in_flight.acquire()
    roots = fleet_roots(tmp_path, 3, kafka=kafka_bootstrap, prefix=prefix, group=group, integrations=[doc])
    procs = [start_supervisor(root, log_level="info") for root in roots]
    try:
        cfg = load_config(roots[0])[0]
        seen = await owners_when(cfg, lambda seen: len(set(seen.values())) == 3, 90)
        assert sorted(seen) == ["acme/hub#0", "acme/hub#1", "acme/hub#2"] and len(set(seen.values())) == 3, seen
        # Mid-drain: some readings are in Kafka, far from all.
        await consume(kafka_bootstrap, [topic], expect=5000, timeout=90)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=10)
        seen = await owners_when(cfg, lambda seen: len(seen) == 3 and "r1" not in seen.values(), 60)
        assert len(seen) == 3 and "r1" not in seen.values(), (seen, supervisor_log(roots[0]))

        def complete(records: list[Any]) -> bool:
            return len({orjson.loads(r.value)["quantity"] for r in records}) >= BACKLOG

        records = await consume(kafka_bootstrap, [topic], timeout=240, until=complete)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
    ids: dict[float, set[str]] = {}
    for r in records:
        ids.setdefault(orjson.loads(r.value)["quantity"], set()).add(dict(r.headers)["ce_id"].decode())
    assert set(ids) == {float(i) for i in range(BACKLOG)}, f"missing {BACKLOG - len(ids)} readings"
    assert all(len(v) == 1 for v in ids.values()), "a redelivered reading keeps its event id"
    assert len(records) < BACKLOG * 1.05, f"{len(records) - BACKLOG} duplicates: more than the killed slot held"


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_a_crash_between_commit_and_puback(
    tmp_path: Path,
    kafka_bootstrap: str,
    mosquitto_factory: Any,
    mqtt_clients: Callable[..., mqtt.Client],
    delivery: str,
) -> None:
    """The supervisor dies (failpoint) after a batch is committed and before its PUBACKs; the broker redelivers the
    batch to the restarted one. At-least-once: its readings reach Kafka twice, with the same event ids.
    Exactly-once: the position committed with the batch names its messages, the redelivered ones are filtered,
    and a read_committed consumer sees every reading once."""
    broker = mosquitto_factory()
    prefix = f"eosmqtt-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}energy.meter_reading.v1"
    doc = _meters(broker.url, prefix) | {"slots": 1, "delivery": delivery}
    doc["settings"]["mqtt"]["batch_max"] = 100
    settings = MqttSettings.model_validate(doc["settings"]["mqtt"])
    create_session(settings, f"inlet-{prefix}")
    n = 2000
    in_flight = threading.BoundedSemaphore(50)
    client = mqtt_clients(broker.url, on_publish=lambda *args: in_flight.release())
    for i in range(n):
        in_flight.acquire()
        client.publish(f"meters/dev{i % 50}/power", _payload(i), qos=1)
    for _ in range(50):
        in_flight.acquire()
    root = write_fleet_config(
        tmp_path / "r0", kafka=kafka_bootstrap, prefix=prefix, group=f"{prefix}group", replica="r0", integrations=[doc]
    )
    proc = start_supervisor(root, log_level="info", env={"INLET_FAILPOINT": "pipeline.after_commit:3"})
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL, supervisor_log(root)
        assert "pipeline.after_commit reached (3)" in (root / "supervisor.log").read_text()
        proc = start_supervisor(root, log_level="info")

        def complete(records: list[Any]) -> bool:
            return len({orjson.loads(r.value)["quantity"] for r in records}) >= n

        records = await consume(
            kafka_bootstrap, [topic], timeout=120, until=complete, idle=2.0, isolation_level="read_committed"
        )
        time.sleep(2.0)  # anything committed late would show now
        records = await consume(kafka_bootstrap, [topic], idle=2.0, isolation_level="read_committed")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    ids: dict[float, set[str]] = {}
    copies: dict[str, int] = {}
    for r in records:
        eid = dict(r.headers)["ce_id"].decode()
        ids.setdefault(orjson.loads(r.value)["quantity"], set()).add(eid)
        copies[eid] = copies.get(eid, 0) + 1
    assert set(ids) == {float(i) for i in range(n)}
    assert all(len(v) == 1 for v in ids.values()), "a redelivered reading keeps its event id"
    doubled = sum(1 for c in copies.values() if c > 1)
    if delivery == "exactly_once":
        assert doubled == 0, f"{doubled} readings committed twice"
    else:
        assert doubled > 0, "the failpoint did not land between commit and PUBACK"
