"""The meter decoders' fast paths make exactly what their checked paths make, byte for byte.

The fast paths (``decoders._common.checked_paths`` turns them off): readings built without validating again after
the decoder's own checks, Tasmota's device time read without ``core.time``'s general path, ``TotalStartTime`` and
local midnights cached. Both paths run the same messages through the connector and ``process_batch``; the
enveloped events (topic, key, headers, value, id), the DLQ records with their reasons and the counts must be
equal — over generated Tasmota traffic (DST transitions, unsynced clocks, broken values, empty device ids,
unknown zones) and over the real Tasmota, Shelly and SenML captures of the shared sample data.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings, Route
from inlet.connectors.mqtt_meter.decoders._common import DeviceContext, checked_paths, fast_paths
from inlet.connectors.mqtt_meter.decoders.tasmota import decode_tasmota
from inlet.connectors.mqtt_meter.hygiene import Hygiene
from inlet.connectors.mqtt_meter.synth import tasmota_sensor
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.mqtt import MqttMessage, MqttSettings
from inlet.core.pipeline import process_batch
from tests.helpers import python_envelopes
from tools.no_broker import no_broker

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham", "UTC"]


def _connector(zone: str | None) -> MqttMeterConnector:
    settings = MqttMeterSettings(
        mqtt=MqttSettings(topics=["#"]),
        routes=[
            Route(topic="t/#", decoder="tasmota", device_level=2),
            Route(topic="s/#", decoder="shelly", device_level=2),
            Route(topic="m/#", decoder="senml", device_level=1),
        ],
    )
    ctx = IntegrationContext("cust", "meters", zone=zone, message_source=no_broker)
    return MqttMeterConnector(ctx, settings)


async def _pass(messages: list[MqttMessage], zone: str | None) -> tuple[Any, ...]:
    """Everything one pass makes of the messages: events and DLQ records as bytes, counts, committed memory."""
    connector = _connector(zone)
    await connector.start()
    try:
        batch = Batch(messages, {"mids": [m.mid for m in messages if m.qos > 0]})
        events, counts = process_batch(connector, Enveloper("cust", "meters"), batch)
        await connector.acknowledge(batch.position)
        memory = (connector.hygiene.snapshot(), connector._committed.snapshot())
    finally:
        await connector.stop()
    made = [(e.topic, e.key, e.headers, e.value, e.id) for e in events]
    tally = (counts.records_in, counts.records_mapped, counts.events_out, counts.filtered, counts.dlq, counts.reasons)
    return made, tally, memory


def _both_equal(messages: list[MqttMessage], zone: str | None) -> tuple[Any, ...]:
    assert fast_paths()
    fast = asyncio.run(_pass(messages, zone))
    with checked_paths(), python_envelopes():
        assert not fast_paths()
        checked = asyncio.run(_pass(messages, zone))
    assert fast[0] == checked[0]  # key, headers, value bytes of every event and DLQ record
    assert fast[1:] == checked[1:]
    return fast


# --- generated Tasmota traffic ---------------------------------------------------------------------------

_NUMBERS = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 3))
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, -0.0, 0.0, 2**53, 1e16, 9007199254740993])
)
_VALUES = _NUMBERS | st.lists(_NUMBERS, min_size=0, max_size=4) | st.sampled_from([True, "12", None, {"a": 1}])


@st.composite
def _wall_times(draw: st.DrawFn) -> object:
    """Tasmota ``Time``: mostly local wall times near DST transitions, and every kind of wrong."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["1970-01-01T00:00:12", "2015-12-31T23:59:59", "2024-13-01T00:00:00", 5, None]))
    if kind == 1:
        return draw(
            st.sampled_from(
                [
                    "2024-02-29T24:00:00",
                    "2024-06-30T23:59:60",
                    "2024-06-01T12:00:00Z",
                    "2024-06-01T12:00:00+02:00",
                    "2024-06-01 12:00:00",
                    "2024-06-01T12:00:00.5",
                    "2024-06-01T12:00",
                    "2024-06-01T12:00:0x",
                    "\uff12024-06-01T12:00:00"  # a fullwidth digit,
                    "9999-12-31T23:59:59",
                    "2024-06-01T12:00:00qq",
                ]
            )
        )
    # Around the transitions of the zones above (spring gaps, repeated autumn hours, Lord Howe's half hour).
    base = draw(
        st.sampled_from(
            [
                datetime(2026, 3, 29, 1, 0),
                datetime(2026, 10, 25, 1, 0),
                datetime(2026, 3, 8, 7, 0),
                datetime(2026, 11, 1, 6, 0),
                datetime(2026, 4, 4, 15, 0),
                datetime(2026, 10, 3, 15, 0),
                datetime(2026, 4, 4, 13, 45),
                datetime(2026, 9, 26, 14, 0),
                datetime(2026, 6, 1, 0, 0),
                datetime(2026, 12, 31, 23, 0),
            ]
        )
    )
    moment = base + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))
    wall = moment.replace(tzinfo=UTC).astimezone(_zone(draw(st.sampled_from(ZONES)))).replace(tzinfo=None)
    if kind == 2:  # a wall time in the gap or the repeated hour, made by shifting a real one by an hour
        wall += timedelta(hours=draw(st.sampled_from([-1, 1])))
    return wall.isoformat(timespec="seconds")


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@st.composite
def _tasmota(draw: st.DrawFn) -> tuple[str, bytes]:
    energy: dict[str, Any] = {}
    for key in ("Total", "ExportActive", "Today", "Yesterday", "Power", "Voltage", "Current", "Frequency", "Factor"):
        if draw(st.booleans()):
            energy[key] = draw(_VALUES)
    if draw(st.booleans()):
        energy["TotalStartTime"] = draw(_wall_times() | st.sampled_from(["2026-10-25T02:30:00", "2019-01-10"]))
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        body["Time"] = draw(_wall_times())
    if draw(st.integers(0, 5)):
        body["ENERGY"] = energy
    if draw(st.integers(0, 4)) == 0:
        body["SML"] = {"Total_in": draw(_VALUES), "Power_curr": draw(_VALUES), "voltage_l2": draw(_VALUES)}
    if draw(st.integers(0, 5)) == 0:
        body = {"StatusSNS": body}
    device = draw(st.sampled_from(["plug-1", "meter_2", "", "dev 3"]))
    kind = draw(st.sampled_from(["SENSOR", "SENSOR", "STATE", "STATUS10", "LWT"]))
    return f"t/tele/{device}/{kind}", orjson.dumps(body)


_RECEIVED = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(_tasmota(), min_size=1, max_size=12),
    zone=st.sampled_from([*ZONES, None, "Not/AZone"]),
    received=st.integers(-400 * 24, 400 * 24),
    resend=st.booleans(),
)
def test_generated_tasmota_traffic_is_enveloped_alike_on_both_paths(
    frames: list[tuple[str, bytes]], zone: str | None, received: int, resend: bool
) -> None:
    at = _RECEIVED + timedelta(hours=received)
    if resend:  # duplicates and time conflicts for hygiene
        frames = frames + frames[:2]
    messages = [MqttMessage(t, p, 1, False, i + 1, at + timedelta(seconds=i)) for i, (t, p) in enumerate(frames)]
    _both_equal(messages, zone)


def test_a_steady_berlin_stream_takes_the_fast_paths_and_stays_equal() -> None:
    """Three days of the benchmark's traffic shape: the fast paths are taken (not just fallen back from)."""

    messages = []
    start = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # across the spring-forward night
    for i in range(600):
        topic, payload = tasmota_sensor(i % 13, 42 * i, start=start)
        received = start + timedelta(seconds=420 * i + 1)
        messages.append(MqttMessage("t/" + topic, payload, 1, False, i + 1, received))
    _, tally, _ = _both_equal(messages, "Europe/Berlin")
    assert tally[1] == len(messages) and not tally[4], tally  # every reading mapped, none in the DLQ


# --- the real captures ----------------------------------------------------------------------------------


def _captured(sample_data: Path) -> list[tuple[str, bytes]]:
    """Tasmota, Shelly and SenML payloads of the shared sample data, each on a topic routed to its decoder."""
    out: list[tuple[str, bytes]] = []
    koestler = sample_data / "iot" / "koestler-go-mqtt-to-influx"
    for name in ("recorded-mqtt-messages-from-tests.jsonl", "shelly-gen1-gen2-mqtt-capture.jsonl"):
        for line in (koestler / name).read_text().splitlines():
            if not line.strip():
                continue
            m = json.loads(line)
            raw = str(m["payload"]).encode() if m["payload_kind"] == "raw" else orjson.dumps(m["payload"])
            prefix = "s/" if m["topic"].startswith("shell") else "t/"
            out.append((prefix + m["topic"], raw))
    evcc = sample_data / "iot" / "evcc-device-responses"
    for e in json.loads((evcc / "tasmota-http-status-responses.json").read_text()):
        out.append(("t/stat/evcc/STATUS10", orjson.dumps(e["payload"])))
        out.append(("t/tele/evcc/SENSOR", orjson.dumps(e["payload"])))
    for e in json.loads((evcc / "shelly-gen1-gen2-http-responses.json").read_text()):
        out.append(("s/shellypro/status/switch:0", orjson.dumps(e["payload"])))
    for path in sorted((sample_data / "iot" / "senml-rfc8428").glob("ex*.json")):
        out.append((f"m/{path.stem.split('.')[0]}", path.read_bytes()))
    return out


def test_real_captures_are_enveloped_alike_on_both_paths(sample_data: Path) -> None:
    captured = _captured(sample_data)
    assert len(captured) > 100
    for zone in ("Europe/Berlin", "America/New_York", None):
        for received in (datetime(2023, 2, 5, 19, 31, 50, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)):
            messages = [MqttMessage(t, p, 1, False, i + 1, received) for i, (t, p) in enumerate(captured)]
            _, tally, _ = _both_equal(messages, zone)
            assert tally[2] > 50, tally  # the captures do make readings (not only DLQ records)


@given(frames=st.lists(_tasmota(), min_size=1, max_size=8), zone=st.sampled_from(ZONES), data=st.data())
@settings(max_examples=100, deadline=None)
def test_real_captures_mixed_into_generated_traffic(
    sample_data: Path, frames: list[tuple[str, bytes]], zone: str, data: st.DataObject
) -> None:
    captured = _captured(sample_data)
    picked = data.draw(st.lists(st.sampled_from(captured), max_size=8))
    mixed = data.draw(st.permutations(frames + picked))
    received = datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC)
    _both_equal([MqttMessage(t, p, 1, False, i + 1, received) for i, (t, p) in enumerate(mixed)], zone)


def test_committing_noted_readings_equals_noting_each_reading() -> None:
    """The committed memory folds in what ``apply`` noted of the kept readings: as ``note`` of each reading."""
    live, noted, each = Hygiene(max_series=7, max_stamps=20), Hygiene(max_series=7, max_stamps=20), Hygiene(7, 20)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for i in range(200):
        step = 3 * (i % 17) - (i % 5)  # late, repeated and conflicting device times
        topic, payload = tasmota_sensor(i % 4, step, start=start + timedelta(seconds=i % 3))
        readings = decode_tasmota(topic, payload, DeviceContext(f"dev{i % 4}", "Europe/Berlin", start))
        verdict = live.apply(readings)
        noted.commit(verdict.noted)
        for r in verdict.kept:
            each.note(r)
    assert noted.snapshot() == each.snapshot()
