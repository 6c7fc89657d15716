"""Cross-message reading hygiene: duplicates filtered with a reason, counter resets and late readings flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from inlet.connectors.mqtt_meter.hygiene import Hygiene
from inlet.contracts.energy_meter_reading import MeterReadingV1

T0 = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def reading(minutes: int, quantity: float, **kw: Any) -> MeterReadingV1:
    fields: dict[str, Any] = {
        "device_id": "m1",
        "metric": "energy",
        "quantity": quantity,
        "unit": "kWh",
        "direction": "import",
        "kind": "cumulative",
        "time_source": "device",
        "measured_at": T0 + timedelta(minutes=minutes),
    }
    return MeterReadingV1.model_validate({**fields, **kw})


def test_same_series_and_time_is_a_duplicate_other_series_are_not() -> None:
    h = Hygiene()
    first = h.apply(
        [reading(0, 10.0), reading(0, 230.0, metric="voltage", unit="V", kind="instantaneous", direction=None)]
    )
    assert (len(first.kept), first.duplicates) == (2, 0)
    again = h.apply([reading(0, 10.0), reading(5, 10.2)])
    assert [r.measured_at for r in again.kept] == [T0 + timedelta(minutes=5)] and again.duplicates == 1
    assert h.dropped_duplicates == 1  # dropped from a message that still had something new
    nothing = h.apply([reading(0, 10.0)])
    assert (nothing.kept, nothing.duplicates) == ([], 1)
    assert h.dropped_duplicates == 1  # a wholly duplicate message is the connector's filter, not a drop


def test_counter_going_down_is_flagged_not_negative_and_units_compare() -> None:
    h = Hygiene()
    h.apply([reading(0, 1500.0)])
    [after] = h.apply([reading(5, 1.2)]).kept
    assert after.quality == ["counter_reset"] and after.quantity == 1.2
    [wh] = h.apply([reading(10, 1300.0, unit="Wh")]).kept  # 1.3 kWh: counting up from the new meter
    assert wh.quality == []


def test_late_reading_is_flagged_and_does_not_look_like_a_reset() -> None:
    h = Hygiene()
    h.apply([reading(10, 20.0)])
    [late] = h.apply([reading(5, 19.0)]).kept
    assert late.quality == ["out_of_order"]
    [nxt] = h.apply([reading(15, 20.5)]).kept
    assert nxt.quality == []


def test_memory_is_bounded() -> None:
    h = Hygiene(max_series=10, max_stamps=20)
    for i in range(100):
        h.apply([reading(i, float(i), device_id=f"m{i}")])
    assert len(h._newest) <= 10 and len(h._stamps) <= 20


async def test_the_connector_states_why_a_message_yields_nothing(tmp_path: Any) -> None:
    import orjson

    from inlet.connectors.customers.stadtwerke_nord import StadtwerkeNordMeters, StadtwerkeNordSettings
    from inlet.connectors.mqtt_meter.synth import municipal_traffic
    from inlet.core.connector import Batch, IntegrationContext
    from inlet.core.envelope import Enveloper
    from inlet.core.mqtt import MqttMessage
    from inlet.core.pipeline import process_batch
    from inlet.core.recording import ReplaySource, message_doc

    traffic = municipal_traffic()
    messages = [MqttMessage(t, p, 1, False, i + 1, T0) for i, (t, p) in enumerate(traffic)]
    messages.append(MqttMessage("tele/hh-0101/LWT", b"Online", 1, True, 999, T0))
    path = tmp_path / "mqtt.jsonl"
    path.write_bytes(b"".join(orjson.dumps(message_doc(m)) + b"\n" for m in messages))
    ctx = IntegrationContext("stadtwerke-nord", "meters", message_source=ReplaySource(path))
    settings = StadtwerkeNordSettings.model_validate({"mqtt": {"topics": ["#"]}})
    async with StadtwerkeNordMeters(ctx, settings) as connector:
        events, counts = process_batch(connector, Enveloper("stadtwerke-nord", "meters"), Batch(messages, {}))
    assert counts.records_in == len(messages) == counts.records_mapped + counts.dlq.total() + counts.filtered.total()
    assert counts.filtered == {
        "duplicate readings (same device, metric, time and value as readings already sent)": 1,  # resent frame
        "no meter value in this message (status, announce or non-energy sensor)": 3,  # STATE frames
        "no route for this topic": 1,  # the LWT
    }
    assert counts.dlq == {"decode": 1}  # the truncated frame
    resets = [e for e in events if b"counter_reset" in e.value]
    assert len(resets) == 1 and orjson.loads(resets[0].value)["device_id"] == "hh-0102"


def test_receive_time_readings_are_never_duplicates_by_time() -> None:
    h = Hygiene()
    verdict = h.apply([reading(0, 5.0, time_source="receive"), reading(0, 5.1, time_source="receive")])
    assert (len(verdict.kept), verdict.duplicates, verdict.conflicts) == (2, 0, 0)


def test_a_different_value_at_a_seen_device_time_is_a_flagged_conflict_not_a_duplicate() -> None:
    # A meter whose clock repeats (reset after a power cut): every reading is new, the clock is suspect.
    h = Hygiene()
    first = [reading(i, 100.0 + i) for i in range(10)]
    assert len(h.apply(first).kept) == 10
    repeated = h.apply([reading(i, 200.0 + i) for i in range(10)])  # same times, new values
    assert len(repeated.kept) == 10 and repeated.duplicates == 0 and repeated.conflicts == 10
    assert all("clock_suspect" in r.quality for r in repeated.kept)
    resent = h.apply([reading(3, 103.0), reading(3, 203.0)])  # either value again: a true duplicate
    assert resent.kept == [] and resent.duplicates == 2


def test_the_committed_memory_survives_a_snapshot_round_trip_bounded() -> None:
    import orjson

    h = Hygiene()
    for i in range(5):
        h.note(reading(i, 10.0 + i))
    restored = Hygiene(max_series=10, max_stamps=3)
    restored.restore(orjson.loads(orjson.dumps(h.snapshot())))
    assert len(restored._stamps) == 3  # the most recent three
    assert restored.apply([reading(4, 14.0)]).duplicates == 1  # the same reading after a restart
    [late] = restored.apply([reading(2, 99.0, device_id="m1")]).kept
    assert "out_of_order" in late.quality  # the newest per series came back too
    [reset] = restored.apply([reading(6, 1.0)]).kept
    assert "counter_reset" in reset.quality
