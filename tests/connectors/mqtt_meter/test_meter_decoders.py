"""Tasmota, Shelly and SenML meter decoders against the real third-party captures (read in place)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inlet.connectors.mqtt_meter.decoders._common import DeviceContext
from inlet.connectors.mqtt_meter.decoders.senml import decode_senml, resolve_senml
from inlet.connectors.mqtt_meter.decoders.shelly import decode_shelly
from inlet.connectors.mqtt_meter.decoders.tasmota import decode_tasmota
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.core.errors import DecodeError, MappingError, TimestampError

RECEIVED = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
BERLIN = DeviceContext("meter-1", "Europe/Berlin", RECEIVED)


def _by(readings: list[MeterReadingV1]) -> dict[tuple[str, str | None, str | None, str], MeterReadingV1]:
    out: dict[tuple[str, str | None, str | None, str], MeterReadingV1] = {
        (r.metric, r.phase, r.direction, r.kind): r for r in readings
    }
    assert len(out) == len(readings), "two readings share metric/phase/direction/kind"
    return out


def _jsonl(sample_data: Path, name: str) -> list[dict[str, Any]]:
    path = sample_data / "iot" / "koestler-go-mqtt-to-influx" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _raw(message: dict[str, Any]) -> bytes:
    """The bytes on the wire: JSON payloads re-serialised, raw ones as their text."""
    if message["payload_kind"] == "raw":
        return str(message["payload"]).encode()
    return orjson.dumps(message["payload"])


def _evcc(sample_data: Path, name: str) -> list[dict[str, Any]]:
    responses: list[dict[str, Any]] = json.loads((sample_data / "iot" / "evcc-device-responses" / name).read_text())
    return responses


# --- Tasmota ---------------------------------------------------------------------------------------------


def test_tasmota_energy_block_scalar(sample_data: Path) -> None:
    status = _evcc(sample_data, "tasmota-http-status-responses.json")[0]["payload"]
    got = _by(decode_tasmota("tele/plug/SENSOR", orjson.dumps(status), BERLIN))
    measured = datetime(2023, 2, 5, 19, 31, 48, tzinfo=UTC)  # 20:31:48 CET
    total = got["energy", None, "import", "cumulative"]
    assert (total.quantity, total.unit, total.measured_at, total.time_source) == (1290.396, "kWh", measured, "device")
    assert total.measured_at_precision == "second"
    assert total.counter_started_at == datetime(2023, 2, 5, 10, 4, 13, tzinfo=UTC)
    today = got["energy", None, "import", "interval"]
    assert today.quantity == 0.173 and today.interval_start == datetime(2023, 2, 4, 23, 0, tzinfo=UTC)
    assert got["power", None, "import", "instantaneous"].quantity == 47.11
    assert got["voltage", None, None, "instantaneous"].unit == "V"
    assert got["current", None, None, "instantaneous"].unit == "A"
    assert {r.metric for r in got.values()} == {"energy", "power", "voltage", "current"}  # Factor etc. dropped


def test_tasmota_array_channels_become_phases(sample_data: Path) -> None:
    status = _evcc(sample_data, "tasmota-http-status-responses.json")[1]["payload"]
    got = _by(decode_tasmota("stat/plug/STATUS10", orjson.dumps(status), BERLIN))
    assert got["power", "L1", "import", "instantaneous"].quantity == 8.15
    assert got["power", "L2", "import", "instantaneous"].quantity == 0
    assert got["current", "L2", None, "instantaneous"].quantity == 0.0
    assert got["voltage", None, None, "instantaneous"].quantity == 237
    assert got["frequency", None, None, "instantaneous"].unit == "Hz"


def test_tasmota_sml_meters(sample_data: Path) -> None:
    responses = _evcc(sample_data, "tasmota-http-status-responses.json")
    simple = _by(decode_tasmota("tele/sml/SENSOR", orjson.dumps(responses[2]["payload"]), BERLIN))
    assert simple["energy", None, "import", "cumulative"].quantity == 34507.4761
    assert simple["energy", None, "export", "cumulative"].quantity == 14737.1422
    power = simple["power", "total", "export", "instantaneous"]  # Power_curr -894: export, positive
    assert power.quantity == 894 and power.measured_at == datetime(2022, 7, 7, 11, 1, 11, tzinfo=UTC)
    assert len(simple) == 3  # HTU21 temperature and the Gas counter are not electrical readings

    three = _by(decode_tasmota("tele/sml/SENSOR", orjson.dumps(responses[3]["payload"]), BERLIN))
    assert three["power", "L2", "export", "instantaneous"].quantity == 111
    assert three["power", "L1", "import", "instantaneous"].quantity == 60
    assert three["voltage", "L3", None, "instantaneous"].quantity == 235.7
    assert three["current", "L1", None, "instantaneous"].quantity == 0.98
    assert three["frequency", None, None, "instantaneous"].quantity == 49.9
    assert three["power", "total", "export", "instantaneous"].quantity == 36


def test_tasmota_negative_power_is_export() -> None:
    payload = b'{"Time":"2024-03-31T01:30:00","ENERGY":{"Power":-1520.5,"Total":3.2}}'
    got = _by(decode_tasmota("tele/pv/SENSOR", payload, BERLIN))
    power = got["power", None, "export", "instantaneous"]
    assert power.quantity == 1520.5 and power.measured_at == datetime(2024, 3, 31, 0, 30, tzinfo=UTC)


def test_tasmota_naive_time_in_device_zone_and_dst() -> None:
    summer = b'{"Time":"2024-07-01T14:00:00","ENERGY":{"Power":1}}'
    assert decode_tasmota("tele/x/SENSOR", summer, BERLIN)[0].measured_at == datetime(2024, 7, 1, 12, tzinfo=UTC)
    zurich = DeviceContext("m", "UTC", RECEIVED)
    assert decode_tasmota("tele/x/SENSOR", summer, zurich)[0].measured_at == datetime(2024, 7, 1, 14, tzinfo=UTC)
    with pytest.raises(TimestampError):  # naive time and no zone: never a guess
        decode_tasmota("tele/x/SENSOR", summer, DeviceContext("m", None, RECEIVED))


def test_tasmota_unsynced_clock_uses_receive_time() -> None:
    payload = b'{"Time":"1970-01-01T00:00:12","ENERGY":{"Power":5,"Today":0.0}}'
    (power,) = decode_tasmota("tele/x/SENSOR", payload, BERLIN)  # no Today: its day is the device's
    assert power.measured_at == RECEIVED and power.time_source == "receive" and power.quality == ["clock_suspect"]


def test_tasmota_recorded_messages(sample_data: Path) -> None:
    """Every Tasmota message in the koestler capture: sensors give no readings, broken ones fail as records."""
    for message in _jsonl(sample_data, "recorded-mqtt-messages-from-tests.jsonl"):
        if "tasmota" not in message["source_file"]:
            continue
        topic, payload = message["topic"], _raw(message)
        time = message["payload"].get("Time", "") if isinstance(message["payload"], dict) else ""
        if topic == "invalid" or message["payload_kind"] == "raw":
            with pytest.raises(DecodeError, match=r"topic 'invalid'|not JSON"):
                decode_tasmota(topic, payload, BERLIN)
        elif "invalid" in time or time.endswith("qq"):  # "2019-01-10T22:16:04qq", "invalid2019-..."
            with pytest.raises(TimestampError, match=topic):
                decode_tasmota(topic, payload, BERLIN)
        else:
            assert decode_tasmota(topic, payload, BERLIN) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"invalid",
        b"",
        b"[1,2]",
        b'{"ENERGY":[1]}',
        b'{"ENERGY":{"Power":"12"}}',
        b'{"ENERGY":{"Power":true}}',
        b'{"Time":5}',
        b'{"ENERGY":{"Power":[]}}',
    ],
)
def test_tasmota_broken_payloads(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="tele/x/SENSOR"):
        decode_tasmota("tele/x/SENSOR", payload, BERLIN)


# --- Shelly ----------------------------------------------------------------------------------------------


def test_shelly_gen1_capture(sample_data: Path) -> None:
    readings = []
    for message in _jsonl(sample_data, "shelly-gen1-gen2-mqtt-capture.jsonl"):
        if "/emeter/" in message["topic"] or not message["topic"].startswith("shellies/plus1pm"):
            readings += decode_shelly(message["topic"], _raw(message), BERLIN)
    em3 = [r for r in readings if r.time_source == "receive" and r.measured_at == RECEIVED]
    assert len(em3) == len(readings) == 15  # 3 phases x (total, total_returned, voltage, current, power)
    got = _by(readings)
    assert got["voltage", "L1", None, "instantaneous"].quantity == 230.35
    assert got["energy", "L3", "export", "cumulative"].unit == "Wh"


def test_shelly_gen1_watt_minutes() -> None:
    (energy,) = decode_shelly("shellies/shelly1pm/relay/0/energy", b"6472513", BERLIN)
    assert (energy.unit, energy.quantity, energy.kind) == ("Wh", 6472513 / 60, "cumulative")
    (power,) = decode_shelly("shellies/shelly1pm/relay/0/power", b"4711.12", BERLIN)
    assert (power.quantity, power.unit, power.phase, power.time_source) == (4711.12, "W", None, "receive")
    (returned,) = decode_shelly("shellies/em/emeter/1/returned_energy", b"120", BERLIN)
    assert (returned.quantity, returned.direction, returned.phase) == (2.0, "export", "L2")
    (export,) = decode_shelly("shellies/em/emeter/0/power", b"-620.34", BERLIN)
    assert (export.quantity, export.direction) == (620.34, "export")


def test_shelly_gen2_capture(sample_data: Path) -> None:
    by_line = {m["line"]: m for m in _jsonl(sample_data, "shelly-gen1-gen2-mqtt-capture.jsonl")}
    (voltage,) = decode_shelly(by_line[33]["topic"], _raw(by_line[33]), BERLIN)
    assert voltage.measured_at == datetime.fromtimestamp(1661517385.44, UTC) and voltage.time_source == "device"
    assert decode_shelly(by_line[30]["topic"], _raw(by_line[30]), BERLIN) == []  # ts 1.61, mqtt only
    (energy,) = decode_shelly(by_line[39]["topic"], _raw(by_line[39]), BERLIN)
    assert (energy.unit, energy.kind, energy.quantity) == ("Wh", "cumulative", 0.0)
    status = _by(decode_shelly(by_line[34]["topic"], _raw(by_line[34]), BERLIN))
    assert status["voltage", None, None, "instantaneous"].quantity == 232.7
    assert status["energy", None, "import", "cumulative"].time_source == "receive"


def test_shelly_gen2_status_frames_from_evcc(sample_data: Path) -> None:
    frames = {
        e["line"]: e["payload"]
        for e in _evcc(sample_data, "shelly-gen1-gen2-http-responses.json")
        if e["source_file"].endswith("gen2_test.go")
    }
    reverse = _by(decode_shelly("shellypro/status/switch:0", orjson.dumps(frames[104]), BERLIN))
    assert reverse["power", None, "export", "instantaneous"].quantity == 350
    assert reverse["energy", None, "export", "cumulative"].quantity == 4000
    em1 = _by(decode_shelly("shellypro/status/em1:0", orjson.dumps(frames[34]), BERLIN))
    assert em1["power", None, "export", "instantaneous"].quantity == 332.2
    assert em1["frequency", None, None, "instantaneous"].quantity == 50
    data = _by(decode_shelly("shellypro/status/em1data:0", orjson.dumps(frames[44]), BERLIN))
    assert data["energy", None, "export", "cumulative"].quantity == 144792.28


def test_shelly_gen2_seconds_since_boot_is_receive_time() -> None:
    frame = {
        "src": "shellyplus1pm-x",
        "method": "NotifyStatus",
        "params": {"ts": 12.5, "switch:0": {"apower": 10.0, "aenergy": {"total": 5.0}}},
    }
    readings = decode_shelly("shellyplus1pm-x/events/rpc", orjson.dumps(frame), BERLIN)
    assert len(readings) == 2 and all(r.time_source == "receive" and r.measured_at == RECEIVED for r in readings)
    frame["params"]["ts"] = 1_700_000_000.25  # type: ignore[index]
    readings = decode_shelly("shellyplus1pm-x/events/rpc", orjson.dumps(frame), BERLIN)
    assert all(r.time_source == "device" for r in readings)
    assert readings[0].measured_at == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("shellies/s/relay/0/power", b"on"),
        ("shellies/s/relay/0/energy", b'"12"'),
        ("shellies/s/events/rpc", b'{"method":"NotifyStatus","params":{"ts":"x"}}'),
        ("shellies/s/events/rpc", b'{"method":"NotifyStatus","params":[]}'),
        ("shellies/s/status/switch:0", b'{"apower":null}'),
        ("shellies/s/emeter/7/power", b"1"),
    ],
)
def test_shelly_broken_payloads(topic: str, payload: bytes) -> None:
    with pytest.raises(DecodeError, match=topic):
        decode_shelly(topic, payload, BERLIN)


# --- SenML -----------------------------------------------------------------------------------------------


def _senml_examples(sample_data: Path) -> list[tuple[str, Path, Path]]:
    folder = sample_data / "iot" / "senml-rfc8428"
    pairs = [
        (p.name, p, folder / p.name.replace(".gen.resolved.json", ".gen.json"))
        for p in sorted(folder.glob("ex*.gen.resolved.json"))
    ]
    assert len(pairs) >= 10
    return pairs


def test_senml_resolution_equals_resolved_examples(sample_data: Path) -> None:
    for name, resolved_path, source_path in _senml_examples(sample_data):
        expected = json.loads(resolved_path.read_text())
        source = json.loads(source_path.read_text())
        now = max(r["t"] for r in expected)  # the generator's clock, for records without a time
        got = resolve_senml(source, now=now)
        if name == "ex7.gen.resolved.json":  # the spec generator omits the vd (data) record; RFC 8428 keeps it
            assert got[-1] == {"n": "urn:dev:ow:10e2073a01080063:nfv-reader", "t": now, "vd": "aGkgCg"}
            got = got[:-1]
        assert got == expected, name


def test_senml_decode_meter_values(sample_data: Path) -> None:
    source = (sample_data / "iot" / "senml-rfc8428" / "ex3.gen.json").read_bytes()
    readings = decode_senml("senml/dev", source, BERLIN)
    assert [r.metric for r in readings] == ["voltage"] + ["current"] * 6
    assert readings[1].measured_at == datetime(2010, 6, 8, 18, 1, 11, 1000, tzinfo=UTC)
    assert all(r.time_source == "device" for r in readings)
    with pytest.raises(MappingError, match="'Cel'"):
        decode_senml("senml/dev", (sample_data / "iot" / "senml-rfc8428" / "ex1.gen.json").read_bytes(), BERLIN)


def test_senml_energy_power_and_relative_time() -> None:
    pack = [
        {"bn": "urn:dev:mac:0024befffe804ff1:", "n": "power-L2", "u": "W", "v": -400},
        {"n": "energy", "u": "kWh", "v": 12.5, "t": -60},
        {"n": "total", "u": "Wh", "s": 900},
    ]
    got = decode_senml("senml/m", orjson.dumps(pack), BERLIN)
    assert (got[0].direction, got[0].quantity, got[0].phase, got[0].time_source) == ("export", 400, "L2", "receive")
    assert got[0].measured_at == RECEIVED
    assert got[1].kind == "cumulative" and got[1].unit == "kWh"
    assert abs((RECEIVED - got[1].measured_at).total_seconds() - 60) < 1e-3
    assert (got[2].quantity, got[2].unit) == (900, "Wh")


@pytest.mark.parametrize(
    "payload",
    [
        b"{}",
        b"[1]",
        b'[{"n":"a","v":"1","u":"W"}]',
        b'[{"n":" a","v":1}]',
        b'[{"n":"a"}]',
        b'[{"n":"a","v":1,"vs":"x"}]',
        b'[{"n":"a","v":1,"x_":1}]',
        b'[{"bver":11,"n":"a","v":1}]',
        b"not json",
    ],
)
def test_senml_broken_payloads(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="senml/x"):
        decode_senml("senml/x", payload, BERLIN)


# --- robustness ------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Time",
                    "ENERGY",
                    "Power",
                    "Total",
                    "Today",
                    "TotalStartTime",
                    "SML",
                    "Total_in",
                    "power_l1",
                    "method",
                    "params",
                    "ts",
                    "switch:0",
                    "em:0",
                    "apower",
                    "aenergy",
                    "total",
                    "bn",
                    "bt",
                    "n",
                    "t",
                    "u",
                    "v",
                    "s",
                    "bu",
                    "bver",
                    "vs",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
_TOPICS = [
    "tele/x/SENSOR",
    "shellies/x/relay/0/energy",
    "shellies/x/emeter/2/power",
    "x/events/rpc",
    "x/status/em:0",
    "senml/x",
]


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(_TOPICS), payload=st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_decoders_raise_only_record_errors(topic: str, payload: bytes) -> None:
    for decoder in (decode_tasmota, decode_shelly, decode_senml):
        try:
            readings = decoder(topic, payload, BERLIN)
        except (DecodeError, MappingError):
            continue
        assert all(isinstance(r, MeterReadingV1) for r in readings)
