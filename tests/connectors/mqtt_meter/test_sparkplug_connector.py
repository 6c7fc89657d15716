"""Sparkplug B through the MQTT meter connector: what each protocol situation becomes (events, DLQ, filtered)."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from inlet.connectors.customers.netz_ost import NetzOstSettings, NetzOstSubstations
from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings
from inlet.connectors.mqtt_meter.sparkplug import decode_payload
from inlet.connectors.mqtt_meter.synth import grid_traffic
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.metrics import BatchCounts
from inlet.core.mqtt import MqttMessage
from inlet.core.pipeline import process_batch
from inlet.core.recording import ReplaySource

T0 = datetime(2026, 10, 25, 3, 0, tzinfo=UTC)


async def run(
    tmp_path: Path, cls: type[MqttMeterConnector], settings: MqttMeterSettings, traffic: Sequence[tuple[str, bytes]]
) -> tuple[list[dict[str, Any]], BatchCounts]:
    """Every message through the connector's real decode/filter/map and the pipeline's accounting."""
    messages = [MqttMessage(t, p, 1, False, i + 1, T0) for i, (t, p) in enumerate(traffic)]
    (tmp_path / "none.jsonl").write_bytes(b"")
    ctx = IntegrationContext("netz-ost", "substations", message_source=ReplaySource(tmp_path / "none.jsonl"))
    async with cls(ctx, settings) as connector:
        events, counts = process_batch(connector, Enveloper("netz-ost", "substations"), Batch(messages, {}))
    assert counts.records_in == len(messages) == counts.records_mapped + counts.dlq.total() + counts.filtered.total()
    docs = []
    for e in events:
        headers = {k: v.decode() for k, v in e.headers}
        body = {"error": headers["dlq_error_message"]} if headers["ce_type"] == "inlet.dlq" else orjson.loads(e.value)
        docs.append({"type": headers["ce_type"], **body})
    return docs, counts


async def test_grid_operator_traffic(tmp_path: Path) -> None:
    traffic = grid_traffic()
    settings = NetzOstSettings.model_validate({"mqtt": {"topics": ["spBv1.0/netz-ost/#"]}})
    docs, counts = await run(tmp_path, NetzOstSubstations, settings, traffic)
    assert counts.filtered == {"duplicate Sparkplug message (seq 28 repeated with the same timestamp)": 1}
    assert counts.dlq == {"map": 1}
    [dlq] = [d for d in docs if d["type"] == "inlet.dlq"]
    assert "before the node's NBIRTH: aliases [10, 11, 12, 13, 14]" in dlq["error"]
    [gap] = [d for d in docs if d["type"] == "energy.data_quality"]
    assert (gap["device_id"], gap["expected_seq"], gap["received_seq"], gap["missing"]) == (
        "netz-ost/uw-baden",
        40,
        42,
        2,
    )
    # uw-winterthur's seq ran through 255 -> 0 and that was not reported as a gap.
    seqs = [decode_payload(p).seq for t, p in traffic if t == "spBv1.0/netz-ost/NDATA/uw-winterthur"]
    assert any(a == 255 and b == 0 for a, b in itertools.pairwise(seqs))
    status = [(d["device_id"], d["online"], d["reason"]) for d in docs if d["type"] == "energy.device_status"]
    assert status == [
        ("netz-ost/uw-winterthur", True, "announce"),
        ("netz-ost/uw-baden", True, "announce"),
        ("netz-ost/uw-winterthur/zaehler-3", True, "announce"),
        ("netz-ost/uw-baden", False, "lwt"),
        ("netz-ost/uw-baden", True, "announce"),
    ]
    readings = [d for d in docs if d["type"] == "energy.meter_reading"]
    winterthur = [
        r["quantity"]
        for r in readings
        if r["device_id"] == "netz-ost/uw-winterthur" and r["metric"] == "energy" and r["direction"] == "import"
    ]
    assert len(winterthur) == 262 and winterthur == sorted(winterthur)  # alias 10 resolved in every NDATA
    power = [r for r in readings if r["metric"] == "power"]
    assert {r["unit"] for r in power} == {"kW"} and {r["direction"] for r in power} == {"import", "export"}
    assert all(r["quantity"] >= 0 for r in power)  # negative feeder power is export, as a magnitude
    assert not any(r["metric"].startswith("temp") for r in readings)  # not a meter value: not emitted
    device = [r for r in readings if r["device_id"] == "netz-ost/uw-winterthur/zaehler-3"]
    assert [r["quantity"] for r in device] == [1200.5, 1206.5, 1207.5]  # DBIRTH value, then DDATA by alias
    assert {r["time_source"] for r in readings} == {"device"}


async def test_the_sparkplug_test_vectors_through_the_connector(tmp_path: Path, sample_data: Path) -> None:
    vectors = {
        v["name"]: base64.b64decode(v["base64"])
        for v in json.loads((sample_data / "iot/sparkplug-b/umh-test-vectors.json").read_text())
    }
    node = "spBv1.0/plant/{}/edge-1"
    traffic = [
        (node.format("NBIRTH"), vectors["NBIRTH_V1"]),
        (node.format("NDATA"), vectors["NDATA_V1"]),
        (node.format("NDATA"), vectors["NDATA_GAP"]),
        (node.format("NDATA"), vectors["NDATA_GAP"]),
        (node.format("NDEATH"), vectors["NDEATH_V1"]),  # bdSeq 0, the birth said 88: stale
        ("spBv1.0/plant/NDATA/edge-2", vectors["NDATA_BEFORE_BIRTH"]),
        ("spBv1.0/plant/NCMD/edge-1", vectors["NDATA_V1"]),
    ]
    settings = MqttMeterSettings.model_validate(
        {"mqtt": {"topics": ["spBv1.0/#"]}, "routes": [{"topic": "spBv1.0/#", "decoder": "sparkplug"}]}
    )  # Temperature is not a meter value
    docs, counts = await run(tmp_path, MqttMeterConnector, settings, traffic)
    assert [d["type"] for d in docs] == ["energy.device_status", "energy.data_quality", "inlet.dlq"]
    assert (docs[0]["device_id"], docs[0]["online"]) == ("plant/edge-1", True)
    gap = docs[1]
    assert (gap["expected_seq"], gap["received_seq"], gap["missing"]) == (2, 5, 3)
    assert counts.filtered == {
        "no meter value in this message (status, announce or non-energy sensor)": 1,
        "duplicate Sparkplug message (seq 5 repeated with the same timestamp)": 1,
        "stale NDEATH (its bdSeq belongs to an earlier session of the node)": 1,
        "Sparkplug command or host state (no readings)": 1,
    }
    assert "aliases [100] cannot be resolved" in docs[-1]["error"]
