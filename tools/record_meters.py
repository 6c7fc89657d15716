"""Record the meter plugins' fixtures from a local Mosquitto carrying generated traffic.

For Stadtwerke Nord (``municipal_traffic``: Tasmota + Shelly) and Netz Ost (``grid_traffic``: Sparkplug B):
starts a private Mosquitto, creates the plugin's persistent session, publishes the generated traffic
(``connectors.mqtt_meter.synth``) at QoS 1 (the broker queues it for the session), then
records the integration with ``core.fixtures.record`` — what ``inlet record`` does against the real hub —
which drains the queue and stops after a quiet second.

    .venv/bin/python -m tools.record_meters
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from inlet.connectors.mqtt_meter.synth import Message, grid_traffic, municipal_traffic
from inlet.core.config import load_config
from inlet.core.fixtures import record
from inlet.core.mqtt import create_session
from tools.services import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "customers"


def publish(url: str, messages: list[Message]) -> None:
    """Publish at QoS 1 and wait for every PUBACK (the broker has them all, in order)."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="inlet-fixture-publisher")
    client.max_inflight_messages_set(20)
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def record_integration(key: str, messages: list[Message]) -> int:
    """Record integration ``key`` of examples/customers from ``messages``; the number of golden events."""
    _, loaded = load_config(CONFIG, only=[key])  # only this one: no other customer's secret needed
    item = next(i for i in loaded if i.config.key == key)
    with Mosquitto() as broker:
        mqtt_settings = item.settings.mqtt.model_copy(update={"url": broker.url})  # type: ignore[attr-defined]
        live = replace(item, settings=item.settings.model_copy(update={"mqtt": mqtt_settings}))
        client_id = mqtt_settings.client_id or f"inlet-{item.config.customer}-{item.config.integration}"
        create_session(mqtt_settings, client_id)
        publish(broker.url, messages)
        return record(live, ROOT / "fixtures" / key, replay_as=item, idle_seconds=1.0)


if __name__ == "__main__":
    for key, traffic in (("stadtwerke-nord/meters", municipal_traffic()), ("netz-ost/substations", grid_traffic())):
        count = record_integration(key, traffic)
        print(f"recorded fixtures/{key}: {count} golden events")
