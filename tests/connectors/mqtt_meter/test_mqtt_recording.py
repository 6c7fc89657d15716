"""MQTT record → replay: `inlet record` drains a real Mosquitto into mqtt.jsonl, `inlet replay` runs offline."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from inlet.connectors.mqtt_meter.synth import municipal_traffic
from inlet.core.mqtt import MqttMessage, MqttSettings, create_session
from inlet.core.recording import ReplaySource, message_doc
from inlet.core.redact import scan_for_leaks
from tools.record_meters import publish

ROOT = Path(__file__).resolve().parents[3]
SECRET = "planted-hub-password-7731"

pytestmark = [pytest.mark.mqtt]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1,"b":[1,2]}',  # compact JSON: stored parsed, readable in a diff
        b'{"b": 1, "a": 2}',  # JSON with spaces: stored as text, bytes kept
        b"off",  # plain text
        b"\x08\xd2\xe2\x83\xb9\xfa\x32\x18\x00",  # protobuf (Sparkplug): base64
        b"",
    ],
)
def test_recorded_payloads_replay_byte_for_byte(tmp_path: Path, payload: bytes) -> None:
    msg = MqttMessage(
        "t/x",
        payload,
        1,
        True,
        7,
        datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        properties={"ContentType": "application/json"},
    )
    path = tmp_path / "mqtt.jsonl"
    path.write_bytes(orjson.dumps(message_doc(msg)) + b"\n")
    [replayed] = ReplaySource(path).messages
    assert (
        replayed.topic,
        replayed.payload,
        replayed.qos,
        replayed.retain,
        replayed.received_at,
        replayed.properties,
    ) == (msg.topic, msg.payload, msg.qos, msg.retain, msg.received_at, msg.properties)


def test_record_then_replay_round_trip_through_the_cli(tmp_path: Path, mqtt_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}
    env["HUB_PASSWORD"] = SECRET
    client_id = f"inlet-rt-{os.getpid()}"
    topics = ["tele/+/SENSOR", "tele/+/STATE", "shellies/+/emeter/#", "swn/+/events/rpc"]
    root = tmp_path / "cfg"
    (root / "integrations").mkdir(parents=True)
    (root / "inlet.yaml").write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    (root / "integrations" / "meters.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "stadtwerke-nord",
                "integration": "meters",
                "plugin": "stadtwerke_nord.meters",
                "settings": {
                    "mqtt": {
                        "url": mqtt_url,
                        "topics": topics,
                        "client_id": client_id,
                        "username": "inlet",
                        "password": {"env": "HUB_PASSWORD"},
                    }
                },
            }
        )
    )
    messages = municipal_traffic(steps=6, seed=3)
    # A device that echoes its configuration, credentials included: the recording must not keep them.
    messages.append(
        (
            "tele/hh-0101/STATE",
            orjson.dumps({"Time": "2026-03-29T03:10:00", "MqttPassword": SECRET, "Note": f"pw={SECRET}"}),
        )
    )
    create_session(MqttSettings(url=mqtt_url, topics=topics), client_id)
    publish(mqtt_url, messages)

    def inlet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inlet", *args, "--config", str(root), "--fixtures", str(tmp_path / "fx")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    recorded = inlet("record", "stadtwerke-nord/meters", "--idle", "1")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    fx = tmp_path / "fx"
    assert not (fx / "http.jsonl").exists()  # an MQTT integration makes no HTTP exchanges
    lines = [orjson.loads(line) for line in (fx / "mqtt.jsonl").read_bytes().splitlines()]
    assert [d["topic"] for d in lines] == [t for t, _ in messages]  # every message, in publish order
    assert all(d["qos"] == 1 and d["retain"] is False for d in lines)
    replayed = ReplaySource(fx / "mqtt.jsonl").messages
    assert [m.payload for m in replayed[:-1]] == [p for _, p in messages[:-1]]  # byte for byte
    # Replay is offline (the broker is not asked) and gives exactly the goldens.
    replay = inlet("replay", "stadtwerke-nord/meters")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "events equal the goldens" in replay.stdout
    golden = [orjson.loads(line) for line in (fx / "events.jsonl").read_bytes().splitlines()]
    types = [g["headers"]["ce_type"] for g in golden]
    assert types.count("inlet.dlq") == 0  # six steps: before the truncated frame of step 9
    readings = [g["value"] for g in golden if g["headers"]["ce_type"] != "inlet.dlq"]
    assert {r["device_id"] for r in readings} >= {"hh-0101", "hh-0102", "pv-0201", "shellypro3em-a0b1c2"}
    for name in ("mqtt.jsonl", "events.jsonl", "shape.json"):
        text = (fx / name).read_text()
        assert scan_for_leaks(text, secrets=[SECRET], phi_values=[]) == [], name
    echoed = lines[-1]["payload"]["json"]
    assert echoed["MqttPassword"] != SECRET and "Note" in echoed  # the field is kept, its value masked
