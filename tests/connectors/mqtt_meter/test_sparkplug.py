"""Sparkplug B: the hand-rolled protobuf codec, topics and the session tracker, against the shared vectors.

The UMH test vectors, the spec's chapter 6 examples and the UMH production capture report are read in place
from the shared sample data (``sample_data`` fixture). Independent oracles: the vectors' stated metric
counts and bytes, the spec's array examples, and hand-written protobuf bytes.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inlet.connectors.mqtt_meter.sparkplug import (
    DataType,
    Metric,
    Payload,
    SparkplugSessions,
    SparkplugTopic,
    decode_payload,
    encode_payload,
    parse_topic,
)
from inlet.core.errors import DecodeError

NODE = parse_topic("spBv1.0/grid/NBIRTH/edge-1")


def _topic(kind: str, device: str | None = None, node: str = "edge-1") -> SparkplugTopic:
    return parse_topic(f"spBv1.0/grid/{kind}/{node}" + (f"/{device}" if device else ""))


def _vectors(sample_data: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((sample_data / "iot" / "sparkplug-b" / "umh-test-vectors.json").read_text())
    return {v["name"]: v for v in doc}


def _bytes(vector: dict[str, Any]) -> bytes:
    return base64.b64decode(vector["base64"])


@pytest.fixture
def vectors(sample_data: Path) -> dict[str, Payload]:
    return {name: decode_payload(_bytes(v)) for name, v in _vectors(sample_data).items()}


def _with_seq(payload: Payload, seq: int, timestamp_ms: int | None = None) -> Payload:
    return replace(payload, seq=seq, timestamp_ms=payload.timestamp_ms if timestamp_ms is None else timestamp_ms)


def _data(seq: int, ts: int | None, *metrics: Metric) -> Payload:
    return Payload(ts, seq, None, list(metrics))


def _m(name: str | None, alias: int | None, datatype: DataType, value: Any, **kw: Any) -> Metric:
    return Metric(name, alias, None, datatype, value is None, value, **kw)


# --- the UMH vectors decode ----------------------------------------------------------------------------


def test_every_vector_decodes_with_its_metric_count_and_types(sample_data: Path) -> None:
    vectors = _vectors(sample_data)
    assert len(vectors) == 7
    python_type = {DataType.Double: float, DataType.Boolean: bool, DataType.UInt64: int}
    for name, vector in vectors.items():
        data = _bytes(vector)
        payload = decode_payload(data)
        assert len(payload.metrics) == vector["metric_count"], name
        assert payload.timestamp_ms is not None and payload.seq is not None, name
        for metric in payload.metrics:
            assert type(metric.value) is python_type[metric.datatype], (name, metric)
            assert not metric.is_null
        births = vector["message_type"] in ("NBIRTH", "NDEATH")
        assert all((m.name is not None) == births for m in payload.metrics), name
        if births:
            assert payload.metrics[0].name == "bdSeq"
            assert payload.metrics[0].datatype is DataType.UInt64
        # the writer produces exactly the bytes of the reference encoder
        assert encode_payload(payload) == data, name


def test_vector_values(vectors: dict[str, Payload]) -> None:
    birth = vectors["NBIRTH_V1"]
    assert [(m.name, m.alias, m.value) for m in birth.metrics] == [
        ("bdSeq", 1, 88),
        ("Node Control/Rebirth", 2, False),
        ("Temperature", 100, 21.5),
    ]
    assert birth.seq == 0  # not 1: these vectors start a session at seq 0, as the older 3.0 text demands
    assert [m.value for m in vectors["NBIRTH_LARGE"].metrics[2:]] == [1.5 * i for i in range(1, 101)]
    assert [
        (vectors[n].seq, vectors[n].metrics[0].value)
        for n in ("NDATA_V1", "NDATA_GAP", "NDATA_BEFORE_BIRTH", "NDATA_WRAPAROUND")
    ] == [(1, 22.5), (5, 27.0), (1, 25.0), (0, 30.0)]


# --- sequence scenarios from the vectors ----------------------------------------------------------------


def test_birth_then_data_is_ok_and_resolves_the_alias(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    birth = sessions.observe(NODE, vectors["NBIRTH_V1"])
    assert birth.verdict == "birth" and birth.node_online and birth.bd_seq == 88
    seen = sessions.observe(_topic("NDATA"), vectors["NDATA_V1"])
    assert seen.verdict == "ok" and seen.expected_seq == 1 and seen.missing == 0
    assert [(m.name, m.value) for m in seen.metrics] == [("Temperature", 22.5)]
    assert seen.unresolved_aliases == () and seen.problems == ()


def test_gap_from_1_to_5_misses_3(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "ok"
    gap = sessions.observe(_topic("NDATA"), vectors["NDATA_GAP"])
    assert (gap.verdict, gap.expected_seq, gap.missing) == ("gap", 2, 3)
    assert [(m.name, m.value) for m in gap.metrics] == [("Temperature", 27.0)]  # data is kept
    after = sessions.observe(_topic("NDATA"), _with_seq(vectors["NDATA_V1"], 6))
    assert (after.verdict, after.expected_seq) == ("ok", 6)


def test_wrap_from_255_to_0_is_not_a_gap(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    verdicts = {sessions.observe(_topic("NDATA"), _with_seq(vectors["NDATA_V1"], s)).verdict for s in range(1, 256)}
    assert verdicts == {"ok"}
    wrapped = sessions.observe(_topic("NDATA"), vectors["NDATA_WRAPAROUND"])
    assert (wrapped.verdict, wrapped.expected_seq, wrapped.missing) == ("ok", 0, 0)
    assert wrapped.metrics[0].value == 30.0
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "ok"  # 0 -> 1 on the next lap


def test_duplicate_is_detected_and_changes_nothing(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    sessions.observe(_topic("NDATA"), vectors["NDATA_V1"])
    again = sessions.observe(_topic("NDATA"), vectors["NDATA_V1"])  # a QoS 1 redelivery
    assert again.verdict == "duplicate" and again.missing == 0
    assert [m.name for m in again.metrics] == ["Temperature"]  # still resolved, for the caller's DLQ/filter
    assert sessions.observe(_topic("NDATA"), _with_seq(vectors["NDATA_V1"], 2)).verdict == "ok"
    # an older message redelivered after newer ones is a duplicate too, not a gap of 254
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "duplicate"


def test_same_seq_with_a_new_timestamp_is_a_full_lap_not_a_duplicate(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    first = vectors["NDATA_V1"]
    sessions.observe(_topic("NDATA"), first)
    lap = sessions.observe(_topic("NDATA"), _with_seq(first, 1, (first.timestamp_ms or 0) + 60_000))
    assert (lap.verdict, lap.expected_seq, lap.missing) == ("gap", 2, 255)
    assert lap.metrics[0].value == 22.5  # never dropped as a duplicate (the ENG-3720 data loss)


def test_data_before_birth_reports_the_unresolved_aliases(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    early = sessions.observe(_topic("NDATA"), vectors["NDATA_BEFORE_BIRTH"])
    assert early.verdict == "before_birth" and not early.node_online
    assert early.unresolved_aliases == (100,) and early.metrics == ()
    assert any("100" in p and "NBIRTH" in p for p in early.problems)
    assert len(sessions) == 0  # nothing is remembered about a node that never announced itself
    dbirth = _data(1, 5, _m("Inputs/A", 7, DataType.Boolean, False))
    assert sessions.observe(_topic("DBIRTH", "meter-9"), dbirth).verdict == "before_birth"
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    late = sessions.observe(_topic("NDATA"), vectors["NDATA_BEFORE_BIRTH"])
    assert late.verdict == "ok" and [(m.name, m.value) for m in late.metrics] == [("Temperature", 25.0)]


def test_named_metrics_resolve_before_birth() -> None:
    sessions = SparkplugSessions()
    seen = sessions.observe(_topic("NDATA"), _data(3, 9, _m("Supply Voltage", None, DataType.Float, 12.5)))
    assert seen.verdict == "before_birth" and seen.unresolved_aliases == ()
    assert [(m.name, m.value) for m in seen.metrics] == [("Supply Voltage", 12.5)]


def test_stale_ndeath_is_ignored(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])  # bdSeq 88
    stale = sessions.observe(_topic("NDEATH"), vectors["NDEATH_V1"])  # bdSeq 0: an older session's will
    assert stale.verdict == "stale_death" and stale.node_online and stale.bd_seq == 0
    assert sessions.node_online("grid", "edge-1")
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "ok"


def test_ndeath_marks_node_and_devices_offline(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    sessions.observe(_topic("DBIRTH", "meter-9"), _data(1, 5, _m("Energy", 500, DataType.UInt32, 7)))
    assert sessions.device_online("grid", "edge-1", "meter-9")
    death = replace(vectors["NDEATH_V1"], metrics=[replace(vectors["NDEATH_V1"].metrics[0], value=88)])
    dead = sessions.observe(_topic("NDEATH"), death)
    assert dead.verdict == "death" and not dead.node_online and dead.bd_seq == 88
    assert not sessions.node_online("grid", "edge-1")
    assert not sessions.device_online("grid", "edge-1", "meter-9")
    # the will message after an explicit NDEATH repeats its bdSeq: ignored (spec 5.x)
    assert sessions.observe(_topic("NDEATH"), death).verdict == "duplicate"
    after = sessions.observe(_topic("NDATA"), _with_seq(vectors["NDATA_V1"], 2))
    assert after.verdict == "before_birth" and after.unresolved_aliases == (100,)
    assert sessions.observe(NODE, vectors["NBIRTH_V1"]).verdict == "rebirth"
    assert sessions.node_online("grid", "edge-1")


def test_rebirth_resets_seq_and_aliases(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    sessions.observe(_topic("NDATA"), vectors["NDATA_V1"])
    sessions.observe(_topic("NDATA"), vectors["NDATA_GAP"])
    assert sessions.observe(NODE, vectors["NBIRTH_V1"]).verdict == "duplicate"  # redelivered: no reset
    large = sessions.observe(NODE, vectors["NBIRTH_LARGE"])
    assert large.verdict == "rebirth" and len(large.metrics) == 102
    # the vector reuses aliases 1 and 2 (bdSeq, Rebirth vs Metric_1, Metric_2): reported, later one wins
    assert sum("alias" in p and "names both" in p for p in large.problems) == 2
    seen = sessions.observe(_topic("NDATA"), vectors["NDATA_V1"])  # seq 1 follows the new birth's 0
    assert seen.verdict == "ok"
    assert [(m.name, m.value) for m in seen.metrics] == [("Metric_100", 22.5)]


def test_devices_commands_and_untyped_data() -> None:
    sessions = SparkplugSessions()
    birth = Payload(1000, 0, None, [_m("bdSeq", None, DataType.UInt64, 3)])
    sessions.observe(NODE, birth)
    dbirth = _data(
        1,
        1001,
        _m("Power", 10, DataType.Int16, 0, properties={"engUnit": "W"}),
        _m("Serial", 11, DataType.String, "A-1"),
    )
    seen = sessions.observe(_topic("DBIRTH", "meter-9"), dbirth)
    assert seen.verdict == "ok" and seen.device_online is True
    assert seen.metrics[0].properties["engUnit"] == "W"
    # DDATA omits the datatype (spec: SHOULD NOT include it); -5 arrives as the uint32 0xFFFFFFFB
    wire = decode_payload(encode_payload(_data(2, 1002, _m(None, 10, DataType.Unknown, 0xFFFFFFFB))))
    assert wire.metrics[0].value == 0xFFFFFFFB
    data = sessions.observe(_topic("DDATA", "meter-9"), wire)
    assert data.verdict == "ok"
    assert [(m.name, m.datatype, m.value) for m in data.metrics] == [("Power", DataType.Int16, -5)]
    # a value that cannot be the birth's datatype is a problem, not an exception
    bad = sessions.observe(_topic("DDATA", "meter-9"), _data(3, 1003, _m(None, 11, DataType.Unknown, 7)))
    assert bad.verdict == "ok" and any("Serial" in p for p in bad.problems)
    unknown = sessions.observe(_topic("DDATA", "meter-7"), _data(4, 1004, _m(None, 10, DataType.Unknown, 1)))
    assert unknown.unresolved_aliases == (10,) and unknown.device_online is None
    command = sessions.observe(
        _topic("DCMD", "meter-9"), Payload(1005, None, None, [_m(None, 10, DataType.Unknown, 1)])
    )
    assert command.verdict == "unsequenced" and command.metrics[0].name == "Power"
    gone = sessions.observe(_topic("DDEATH", "meter-9"), _data(5, 1006))
    assert gone.verdict == "ok" and gone.device_online is False
    assert not sessions.device_online("grid", "edge-1", "meter-9")
    after = sessions.observe(_topic("DDATA", "meter-9"), _data(6, 1007, _m(None, 10, DataType.Unknown, 1)))
    assert after.unresolved_aliases == (10,)


def test_missing_or_out_of_range_seq_is_unsequenced(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions()
    sessions.observe(NODE, vectors["NBIRTH_V1"])
    for seq in (None, 256):
        seen = sessions.observe(_topic("NDATA"), replace(vectors["NDATA_V1"], seq=seq))
        assert seen.verdict == "unsequenced" and seen.problems
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "ok"


def test_absent_seq_is_zero_only_where_zero_is_due(vectors: dict[str, Payload]) -> None:
    """proto3-style encoders omit zero fields: an NBIRTH or the message after 255 may carry no seq."""
    sessions = SparkplugSessions()
    birth = sessions.observe(NODE, replace(vectors["NBIRTH_V1"], seq=None))
    assert birth.verdict == "birth" and any("without seq" in p for p in birth.problems)
    assert sessions.observe(_topic("NDATA"), vectors["NDATA_V1"]).verdict == "ok"  # 0 -> 1
    for seq in range(2, 256):
        sessions.observe(_topic("NDATA"), _with_seq(vectors["NDATA_V1"], seq))
    zero = sessions.observe(_topic("NDATA"), replace(vectors["NDATA_WRAPAROUND"], seq=None))
    assert (zero.verdict, zero.expected_seq) == ("ok", 0) and zero.problems
    assert sessions.observe(_topic("NDATA"), replace(vectors["NDATA_GAP"], seq=None)).verdict == "unsequenced"


def test_birth_without_bdseq_is_reported() -> None:
    sessions = SparkplugSessions()
    seen = sessions.observe(NODE, Payload(1, 0, None, [_m("Voltage", 1, DataType.Float, 230.0)]))
    assert seen.verdict == "birth" and seen.bd_seq is None
    assert any("bdSeq" in p for p in seen.problems)
    # without a bdSeq to compare, any NDEATH ends the session
    assert sessions.observe(_topic("NDEATH"), Payload(None, None, None, [])).verdict == "death"


def test_tracker_is_bounded(vectors: dict[str, Payload]) -> None:
    sessions = SparkplugSessions(max_nodes=2, max_devices=1)
    for node in ("a", "b", "c"):
        sessions.observe(_topic("NBIRTH", node=node), vectors["NBIRTH_V1"])
    assert len(sessions) == 2
    assert sessions.observe(_topic("NDATA", node="a"), vectors["NDATA_V1"]).verdict == "before_birth"
    assert sessions.observe(_topic("NDATA", node="c"), vectors["NDATA_V1"]).verdict == "ok"
    sessions.observe(_topic("DBIRTH", "d1", node="c"), _data(2, 1))
    sessions.observe(_topic("DBIRTH", "d2", node="c"), _data(3, 1))
    assert not sessions.device_online("grid", "c", "d1") and sessions.device_online("grid", "c", "d2")
    with pytest.raises(ValueError):
        SparkplugSessions(max_nodes=0)


def test_production_capture_duplicates_are_wraps(sample_data: Path) -> None:
    """The UMH capture report counts 76 "duplicate" seqs on node 702; in order they are laps of 0-255.

    The capture has seqs and payload timestamps but no payload bytes, so each row becomes a metric-less
    payload with them; node 702 gets an NBIRTH just before its first row (the capture starts mid-session).
    """
    path = sample_data / "iot" / "sparkplug-b" / "umh-production-pcap-sanitized" / "pcap_patterns.csv"
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    sessions = SparkplugSessions()
    verdicts: list[tuple[str, int]] = []
    wraps: list[str] = []
    invalid_topics = 0
    for row in rows:
        try:
            topic = parse_topic(row["topic"])
        except DecodeError:
            invalid_topics += 1  # NDATA with a device level: the sanitised capture has such topics
            continue
        if topic.edge_node_id != "702":
            continue
        seq = int(row["seq"]) if row["seq"] else None  # absent in the capture's payload
        ts = int(row["payload_timestamp"]) if row["payload_timestamp"] else None
        if not sessions.node_online("org_A", "702"):
            assert seq is not None and ts is not None
            sessions.observe(parse_topic("spBv1.0/org_A/NBIRTH/702"), Payload(ts - 1, (seq - 1) % 256, None, []))
        seen = sessions.observe(topic, Payload(ts, seq, None, []))
        verdicts.append((seen.verdict, seen.missing))
        if seq is None and seen.verdict == "ok":
            wraps.append(row["frame"])
    assert invalid_topics == 10
    assert len(verdicts) == 509
    assert {v for v, _ in verdicts} == {"ok", "gap", "unsequenced"}  # no duplicate, no reset
    # seq 0 never appears: an encoder omits zero fields, and the two NDATA without seq sit between 255 and 1
    assert wraps == ["355", "671"]
    # five DDATA without seq, timestamp or metrics cannot be placed
    assert sum(v == "unsequenced" for v, _ in verdicts) == 5
    gaps = [missing for verdict, missing in verdicts if verdict == "gap"]
    assert (len(gaps), sum(gaps)) == (14, 16)  # frames absent from the capture


# --- topics -------------------------------------------------------------------------------------------


def test_topics_of_the_spec_examples(sample_data: Path) -> None:
    folder = sample_data / "iot" / "sparkplug-b" / "spec-examples-json"
    topics = [json.loads(p.read_text())["topic"] for p in sorted(folder.glob("ch6_*.json"))]
    parsed = [parse_topic(t) for t in topics if t]
    assert len(parsed) == 8
    assert parsed[1] == SparkplugTopic("spBv1.0", "Sparkplug B Devices", "DBIRTH", "Raspberry Pi", "Pibrella")
    assert {p.message_type for p in parsed} == {
        "NBIRTH",
        "DBIRTH",
        "NDATA",
        "DDATA",
        "NCMD",
        "DCMD",
        "NDEATH",
        "DDEATH",
    }
    assert all((p.device_id is None) == p.message_type.startswith("N") for p in parsed)
    assert parse_topic("spBv1.0/STATE/scada-1") == SparkplugTopic("spBv1.0", "", "STATE", "scada-1")


@pytest.mark.parametrize(
    "topic",
    [
        "spAv1.0/g/NDATA/n",
        "spBv1.0/g/NDATA",
        "spBv1.0/g/NDATA/n/d",
        "spBv1.0/g/DDATA/n",
        "spBv1.0/g/XDATA/n",
        "spBv1.0//NDATA/n",
        "spBv1.0/g/NDATA/+",
        "spBv1.0/g/DDATA/n/#",
        "spBv1.0/g/STATE/n",
        "spBv1.0/STATE",
        "spBv1.0/g/DDATA/n/d/x",
        "",
    ],
)
def test_bad_topics_raise_decode_error(topic: str) -> None:
    with pytest.raises(DecodeError, match="topic"):
        parse_topic(topic)


# --- spec examples round trip ------------------------------------------------------------------------------


def _float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def _from_json(doc: dict[str, Any]) -> Payload:
    metrics = [
        Metric(m.get("name"), m.get("alias"), m.get("timestamp"), DataType[m["dataType"]], False, m["value"])
        for m in doc.get("metrics", [])
    ]
    return Payload(doc.get("timestamp"), doc.get("seq"), doc.get("uuid"), metrics)


def test_spec_examples_round_trip(sample_data: Path) -> None:
    folder = sample_data / "iot" / "sparkplug-b" / "spec-examples-json"
    paths = sorted(folder.glob("ch6_*.json"))
    assert len(paths) == 9
    for path in paths:
        doc = json.loads(path.read_text())["payload"]
        payload = _from_json(doc)
        back = decode_payload(encode_payload(payload))
        expected = replace(
            payload,
            metrics=[
                replace(m, value=_float32(m.value)) if m.datatype is DataType.Float else m for m in payload.metrics
            ],
        )
        assert back == expected, path.name
        for metric, source in zip(back.metrics, doc.get("metrics", []), strict=True):
            if isinstance(source["value"], float):  # Float is 32-bit: 12.1 comes back as 12.100000381...
                assert math.isclose(metric.value, source["value"], rel_tol=1e-6), path.name
            else:
                assert metric.value == source["value"], path.name


# --- datatypes against the spec's rules and examples ----------------------------------------------------


def _one_metric(datatype: int, value_field: bytes) -> bytes:
    """A payload with one metric ``{datatype, <value_field>}``, written by hand (independent of the writer)."""
    body = bytes([0x20, datatype]) + value_field
    return bytes([0x12, len(body)]) + body


@pytest.mark.parametrize(
    ("datatype", "value_field", "expected"),
    [
        (DataType.Int8, b"\x50\xff\x01", -1),  # 8-bit pattern 0xFF
        (DataType.Int8, b"\x50\xff\xff\xff\xff\x0f", -1),  # sign-extended to 32 bits (Tahu)
        (DataType.Int8, b"\x50\x7f", 127),
        (DataType.Int16, b"\x50\x88\xaa\xff\xff\x0f", -11_000),
        (DataType.Int32, b"\x50\xff\xff\xff\xff\x0f", -1),
        (DataType.Int32, b"\x58" + b"\xff" * 9 + b"\x01", -1),  # in long_value, sign-extended to 64 bits
        (DataType.Int64, b"\x58" + b"\xfe" + b"\xff" * 8 + b"\x01", -2),
        (DataType.UInt32, b"\x50\xff\xff\xff\xff\x0f", 4_294_967_295),
        (DataType.UInt64, b"\x58" + b"\xff" * 9 + b"\x01", 2**64 - 1),
        (DataType.DateTime, b"\x58\xc7\xa1\xc3\xac\xc7\x24", 1_256_102_875_335),
        (DataType.Float, b"\x65" + struct.pack("<f", 1.5), 1.5),
        (DataType.Boolean, b"\x70\x01", True),
        (DataType.UUID, b"\x7a\x03abc", "abc"),
        (DataType.Bytes, b"\x82\x01\x02\x00\xff", b"\x00\xff"),
        # the spec's array examples (6.4.17); its Int8Array and Float/DoubleArray examples contradict its text
        (DataType.Int16Array, b"\x82\x01\x04\xd0\x8a\x30\x75", [-30000, 30000]),
        (DataType.Int32Array, b"\x82\x01\x08\xff\xff\xff\xff\xfa\xaf\xcb\x12", [-1, 315338746]),
        (DataType.UInt32Array, b"\x82\x01\x08\x34\x00\x00\x00\x49\xfb\x55\xc4", [52, 3293969225]),
        (
            DataType.BooleanArray,
            b"\x82\x01\x06\x0c\x00\x00\x00\x34\xd0",
            [False, False, True, True, False, True, False, False, True, True, False, True],
        ),
        (DataType.StringArray, b"\x82\x01\x0aABC\x00hello\x00", ["ABC", "hello"]),
        (
            DataType.DateTimeArray,
            b"\x82\x01\x10\xc7\xd0\x90\x75\x24\x01\x00\x00\xb8\xba\xb8\x97\x81\x01\x00\x00",
            [1256102875335, 1656107875000],
        ),
    ],
)
def test_datatypes(datatype: DataType, value_field: bytes, expected: Any) -> None:
    metric = decode_payload(_one_metric(datatype, value_field)).metrics[0]
    assert metric.datatype is datatype and metric.value == expected
    assert decode_payload(encode_payload(Payload(None, None, None, [metric]))).metrics[0] == metric


@pytest.mark.parametrize(
    ("datatype", "value_field", "message"),
    [
        (DataType.Int8, b"\x50\xff\x03", "signed 8-bit"),
        (DataType.UInt8, b"\x50\x80\x02", "unsigned 8-bit"),
        (DataType.Double, b"\x70\x01", "expected a float"),
        (DataType.Int16Array, b"\x82\x01\x03\x01\x02\x03", "multiple of 2"),
        (DataType.BooleanArray, b"\x82\x01\x05\x09\x00\x00\x00\x01", "needs 2 bytes"),
        (DataType.StringArray, b"\x82\x01\x02ab", "NUL"),
        (DataType.String, b"\x7a\x02\xc3\x28", "invalid UTF-8"),
    ],
)
def test_values_that_do_not_fit_their_datatype(datatype: DataType, value_field: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_payload(_one_metric(datatype, value_field))


def test_errors_name_offset_and_field() -> None:
    with pytest.raises(DecodeError, match=r"invalid UTF-8 \(.*\) at byte 6 \(Payload\.metrics\[0\]\.name\)"):
        decode_payload(b"\x08\x01\x12\x03\x0a\x01\xff")
    with pytest.raises(DecodeError, match=r"unknown datatype 99 at byte 4 \(Payload\.metrics\[0\]\.datatype\)"):
        decode_payload(b"\x18\x00\x12\x02\x20\x63")
    with pytest.raises(
        DecodeError,
        match=r"expected a length-delimited field, got varint at byte 0 "
        r"\(Payload\.metrics\)",
    ):
        decode_payload(b"\x10\x01")
    with pytest.raises(DecodeError, match=r"truncated length-delimited .* at byte 2 \(Payload\.metrics\[0\]"):
        decode_payload(b"\x12\x04\x0a\x05ab")


def test_unknown_fields_are_skipped() -> None:
    # field 99 of each wire type in Payload, and field 40 (varint) inside a metric
    unknown = b"\x98\x06\x07\x99\x06" + b"\x00" * 8 + b"\x9a\x06\x02hi\x9d\x06" + b"\x00" * 4
    data = unknown + b"\x12\x06\x0a\x01x\xc0\x02\x05\x18\x2a"
    payload = decode_payload(data)
    assert payload.seq == 42 and [m.name for m in payload.metrics] == ["x"]


def test_property_set_written_by_hand() -> None:
    """``engUnit`` in a PropertySet (keys ["engUnit", "q"], values [String "kWh", Int32 -3])."""
    props = b"\x0a\x07engUnit\x0a\x01q\x12\x07\x08\x0c\x42\x03kWh\x12\x08\x08\x03\x18\xfd\xff\xff\xff\x0f"
    metric = b"\x0a\x01E\x20\x0a\x4a" + bytes([len(props)]) + props + b"\x69" + struct.pack("<d", 12.5)
    payload = decode_payload(b"\x12" + bytes([len(metric)]) + metric)
    assert payload.metrics[0].properties == {"engUnit": "kWh", "q": -3}
    assert payload.metrics[0].value == 12.5
    with pytest.raises(DecodeError, match="2 keys but 1 values"):
        decode_payload(b"\x12\x12\x4a\x10\x0a\x07engUnit\x0a\x01q\x12\x02\x08\x0c")  # one value for two keys


# --- round trip, truncation, fuzz ---------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
_U64 = st.integers(0, 2**64 - 1)

_VALUES: dict[DataType, st.SearchStrategy[Any]] = {
    DataType.Int8: st.integers(-(2**7), 2**7 - 1),
    DataType.Int16: st.integers(-(2**15), 2**15 - 1),
    DataType.Int32: st.integers(-(2**31), 2**31 - 1),
    DataType.Int64: st.integers(-(2**63), 2**63 - 1),
    DataType.UInt8: st.integers(0, 255),
    DataType.UInt16: st.integers(0, 2**16 - 1),
    DataType.UInt32: st.integers(0, 2**32 - 1),
    DataType.UInt64: _U64,
    DataType.DateTime: _U64,
    DataType.Float: st.floats(width=32, allow_nan=False),
    DataType.Double: st.floats(allow_nan=False),
    DataType.Boolean: st.booleans(),
    DataType.String: _TEXT,
    DataType.Text: _TEXT,
    DataType.UUID: st.uuids().map(str),
    DataType.Bytes: st.binary(max_size=16),
    DataType.File: st.binary(max_size=16),
    DataType.Unknown: st.one_of(_U64, st.floats(allow_nan=False), st.booleans(), _TEXT),
    DataType.Int16Array: st.lists(st.integers(-(2**15), 2**15 - 1), max_size=5),
    DataType.UInt64Array: st.lists(_U64, max_size=3),
    DataType.FloatArray: st.lists(st.floats(width=32, allow_nan=False), max_size=4),
    DataType.BooleanArray: st.lists(st.booleans(), max_size=19),
    DataType.StringArray: st.lists(_TEXT, max_size=4),
}

_PROPERTY: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | _TEXT,
    lambda inner: (
        st.dictionaries(_TEXT, inner, max_size=3)
        | st.lists(st.dictionaries(_TEXT, inner, max_size=2), min_size=1, max_size=2)
    ),
    max_leaves=6,
)


@st.composite
def _metrics(draw: st.DrawFn) -> Metric:
    datatype = draw(st.sampled_from(sorted(_VALUES)))
    is_null = draw(st.booleans())
    value = None if is_null else draw(_VALUES[datatype])
    return Metric(
        draw(st.none() | _TEXT),
        draw(st.none() | _U64),
        draw(st.none() | _U64),
        datatype,
        is_null,
        value,
        draw(st.dictionaries(_TEXT, _PROPERTY, max_size=2)),
        draw(st.booleans()),
        draw(st.booleans()),
    )


_PAYLOADS = st.builds(Payload, st.none() | _U64, st.none() | _U64, st.none() | _TEXT, st.lists(_metrics(), max_size=4))


@settings(max_examples=200, deadline=None)
@given(_PAYLOADS)
def test_round_trip(payload: Payload) -> None:
    assert decode_payload(encode_payload(payload)) == payload


def _top_level_fields(payload: Payload) -> int:
    return len(payload.metrics) + sum(x is not None for x in (payload.timestamp_ms, payload.seq, payload.uuid))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PAYLOADS)
def test_every_cut_raises_decode_error_or_is_a_field_boundary(payload: Payload) -> None:
    _check_cuts(encode_payload(payload))


def test_every_cut_of_the_vectors(sample_data: Path) -> None:
    for vector in _vectors(sample_data).values():
        _check_cuts(_bytes(vector))


def _check_cuts(data: bytes) -> None:
    """A protobuf message cut between two top-level fields is a valid shorter message; any other cut fails.

    So each strict prefix either raises DecodeError or decodes to exactly those bytes again, and the second
    happens once per top-level field (the cut before it).
    """
    whole = decode_payload(data)
    valid = 0
    for cut in range(len(data)):
        try:
            shorter = decode_payload(data[:cut])
        except DecodeError:
            continue
        assert encode_payload(shorter) == data[:cut]
        valid += 1
    assert valid == _top_level_fields(whole)


def _decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        decode_payload(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=200, deadline=None)
@given(_PAYLOADS, st.data())
def test_fuzz_mutated_payloads(payload: Payload, data: st.DataObject) -> None:
    """Flip bytes of valid payloads: reaches the nested readers that random bytes rarely get into."""
    raw = bytearray(encode_payload(payload))
    if not raw:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decode_or_decode_error(bytes(raw))


def test_deep_property_nesting_is_refused() -> None:
    pset = b"\x0a\x01k\x12\x00"  # PropertySet{keys: ["k"], values: [PropertyValue{}]}
    for _ in range(40):  # wrapped: PropertySet{keys: ["k"], values: [PropertyValue{propertyset_value: pset}]}
        pset = b"\x0a\x01k\x12" + _len(b"\x4a" + _len(pset))
    metric = b"\x4a" + _len(pset)
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_payload(b"\x12" + _len(metric))


def _len(content: bytes) -> bytes:
    out = bytearray()
    n = len(content)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + content
