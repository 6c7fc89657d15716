"""Meter readings as the device meant them: the repeated autumn hour is read by the receive time, a repeated
device clock is a flagged conflict (never a "duplicate"), and hygiene memory survives a restart without
hiding a message whose first delivery never reached the sink. Traffic is generated here, shaped like Tasmota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from inlet.connectors.customers.stadtwerke_nord import StadtwerkeNordMeters, StadtwerkeNordSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.mqtt import MqttMessage
from inlet.core.pipeline import process_batch
from inlet.core.recording import ReplaySource, message_doc

BERLIN_FALL_BACK = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST; at 01:00 UTC clocks go 03:00 -> 02:00


def _frame(device: str, wall: str, total: float) -> tuple[str, bytes]:
    body = {
        "Time": wall,
        "ENERGY": {"TotalStartTime": "2024-01-08T11:21:04", "Total": total, "Power": 300, "Voltage": 230},
    }
    return f"tele/{device}/SENSOR", orjson.dumps(body)


def _messages(frames: list[tuple[tuple[str, bytes], datetime]], first_mid: int = 1) -> list[MqttMessage]:
    return [
        MqttMessage(topic, payload, 1, False, first_mid + i, received)
        for i, ((topic, payload), received) in enumerate(frames)
    ]


async def _run(
    tmp_path: Path, messages: list[MqttMessage], *, state: Path | None = None, ack: bool = True, **settings: Any
) -> tuple[list[dict[str, Any]], Any]:
    """Decode, map and envelope ``messages`` as one batch through the Stadtwerke Nord plugin (Europe/Berlin
    Tasmota routes); with ``ack`` the batch is acknowledged as after the sink."""
    path = tmp_path / f"mqtt-{messages[0].mid}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(message_doc(m)) + b"\n" for m in messages))
    ctx = IntegrationContext("stadtwerke-nord", "meters", message_source=ReplaySource(path), state_dir=state)
    config = StadtwerkeNordSettings.model_validate({"mqtt": {"topics": ["#"]}, **settings})
    async with StadtwerkeNordMeters(ctx, config) as connector:
        batch = Batch(messages, {"mids": [m.mid for m in messages]})
        events, counts = process_batch(connector, Enveloper("stadtwerke-nord", "meters"), batch)
        if ack:
            await connector.acknowledge(batch.position)
    values = [orjson.loads(e.value) for e in events if not e.topic.startswith("inlet.dlq.")]
    return [v for v in values if v.get("metric") == "energy"], counts


async def test_device_times_in_the_repeated_autumn_hour_are_read_by_the_receive_time(tmp_path: Path) -> None:
    # An hour of a Tasmota meter every 10 minutes across the fall-back: 02:00..02:50 local happens twice.
    frames = []
    for step in range(18):  # 00:00Z .. 02:50Z: 02:00-02:50 CEST, then 02:00-02:50 CET, then 03:xx CET
        received = BERLIN_FALL_BACK + timedelta(minutes=10 * step, seconds=2)
        wall = (received - timedelta(seconds=2)).astimezone(ZoneInfo("Europe/Berlin"))
        frames.append((_frame("hh-0301", wall.replace(tzinfo=None).isoformat(), 100.0 + step), received))
    energy, counts = await _run(tmp_path, _messages(frames))
    assert counts.dlq.total() == 0, counts.dlq  # before: the repeated hour's six frames went to the DLQ
    measured = [datetime.fromisoformat(e["measured_at"]) for e in energy]
    assert measured == [BERLIN_FALL_BACK + timedelta(minutes=10 * s) for s in range(18)]
    assert all(e["quality"] == [] for e in energy)  # distinct instants: no conflict, no duplicate


async def test_a_repeating_device_clock_is_a_flagged_conflict_never_a_duplicate(tmp_path: Path) -> None:
    # A clock reset after a power cut: the meter re-lives 01:00-01:50 with counters that kept counting.
    received = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    walls = [f"2026-06-01T01:{m:02d}:00" for m in range(0, 60, 10)]
    frames = [(_frame("hh-0302", w, 500.0 + i), received + timedelta(minutes=10 * i)) for i, w in enumerate(walls)]
    frames += [
        (_frame("hh-0302", w, 506.0 + i), received + timedelta(hours=1, minutes=10 * i)) for i, w in enumerate(walls)
    ]
    frames.append(frames[-1])  # and one frame really resent: that one is a duplicate
    energy, counts = await _run(tmp_path, _messages(frames))
    assert len(energy) == 12 and counts.dlq.total() == 0
    assert sum(counts.filtered.values()) == 1  # only the resent frame (before: half the stream was "duplicate")
    conflicts = [e for e in energy if "clock_suspect" in e["quality"]]
    assert [e["quantity"] for e in conflicts] == [506.0 + i for i in range(6)]
    dlq_events, dlq_counts = await _run(tmp_path, _messages(frames, first_mid=100), time_conflicts="dlq")
    assert dlq_counts.dlq == {"map": 6} and len(dlq_events) == 6  # the conflicting messages, with the reason


async def test_hygiene_memory_survives_a_restart_for_what_the_sink_has(tmp_path: Path) -> None:
    state = tmp_path / "state"
    t0 = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
    first = [(_frame("hh-0303", f"2026-06-02T10:0{i}:00", 9000.0 + i), t0 + timedelta(minutes=i)) for i in range(3)]
    await _run(tmp_path, _messages(first), state=state)
    saved = state / "hygiene" / "stadtwerke-nord.meters.json"
    assert saved.is_file()
    # After the restart: the counter dropped (a meter swap) and an old frame is resent — both recognised.
    later = [(_frame("hh-0303", "2026-06-02T10:05:00", 12.0), t0 + timedelta(minutes=5)), first[2]]
    energy, counts = await _run(tmp_path, _messages(later, first_mid=10), state=state)
    assert [e["quality"] for e in energy] == [["counter_reset"]]
    assert sum(counts.filtered.values()) == 1


async def test_a_message_the_sink_never_acknowledged_is_not_a_duplicate_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    t0 = datetime(2026, 6, 3, 8, 0, tzinfo=UTC)
    frames = [(_frame("hh-0304", f"2026-06-03T10:0{i}:00", 70.0 + i), t0 + timedelta(minutes=i)) for i in range(3)]
    await _run(tmp_path, _messages(frames), state=state, ack=True)
    unacked = [(_frame("hh-0304", "2026-06-03T10:09:00", 80.0), t0 + timedelta(minutes=9))]
    await _run(tmp_path, _messages(unacked, first_mid=20), state=state, ack=False)  # crash before the sink
    redelivered, counts = await _run(tmp_path, _messages(unacked, first_mid=30), state=state)
    assert [e["quantity"] for e in redelivered] == [80.0] and sum(counts.filtered.values()) == 0


@pytest.mark.parametrize("policy", ["flag", "dlq"])
def test_the_conflict_policy_is_validated(policy: str) -> None:
    settings = StadtwerkeNordSettings.model_validate({"mqtt": {"topics": ["#"]}, "time_conflicts": policy})
    assert settings.time_conflicts == policy
    with pytest.raises(ValueError, match="time_conflicts"):
        StadtwerkeNordSettings.model_validate({"mqtt": {"topics": ["#"]}, "time_conflicts": "drop"})


@pytest.mark.mqtt
def test_run_once_on_a_meter_hub_ends_when_the_session_has_gone_quiet(tmp_path: Path, mqtt_url: str) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from inlet.connectors.mqtt_meter.synth import municipal_traffic
    from inlet.core.mqtt import MqttSettings, create_session
    from inlet.core.sinks.outbox import read_outbox
    from tools.record_meters import publish

    client_id = f"inlet-once-{os.getpid()}"
    topics = ["tele/+/SENSOR", "tele/+/STATE", "shellies/+/emeter/#", "swn/+/events/rpc"]
    root = tmp_path / "cfg"
    (root / "integrations").mkdir(parents=True)
    (root / "inlet.yaml").write_text("state_dir: state\n")
    (root / "integrations" / "meters.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "stadtwerke-nord",
                "integration": "meters",
                "plugin": "stadtwerke_nord.meters",
                "settings": {
                    "mqtt": {"url": mqtt_url, "topics": topics, "client_id": client_id, "once_idle_seconds": 1.0}
                },
            }
        )
    )
    create_session(MqttSettings(url=mqtt_url, topics=topics), client_id)
    publish(mqtt_url, municipal_traffic(steps=4, seed=5))
    env = {k: v for k, v in os.environ.items() if k not in ("INLET_KAFKA_BOOTSTRAP", "INLET_STATE_DIR")}
    result = subprocess.run(
        [sys.executable, "-m", "inlet", "run", "--config", str(root), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]  # before: --once never returned for a push source
    assert "stadtwerke-nord/meters" in result.stdout and "yes" in result.stdout  # books balanced
    rows = read_outbox(root / "state" / "outbox.sqlite", limit=10_000)
    assert sum(1 for r in rows if r.topic == "energy.meter_reading.v1") > 20
