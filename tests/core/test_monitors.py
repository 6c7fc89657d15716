"""core.monitors on synthetic streams with simulated time: each check opens within one window, clears when the data
returns to normal, never repeats while open, stays quiet while learning, and keeps its baselines across a restart.

The replayed project fixtures with injected faults are tests/core/test_monitors_corpus.py; these pin each rule."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import pytest
from pydantic import Field

from inlet.contracts.base import Contract, Monitoring
from inlet.contracts.inlet_data_alert import DataAlertV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import MonitorFields, MonitorSettings
from inlet.core.monitors import MAX_CATEGORIES, Monitors, default_monitoring, state_key, store_state

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
START = datetime(2026, 9, 7, tzinfo=UTC).timestamp()  # a Monday; 2026-10-25 (Berlin's fall-back) is 7 weeks on


class Reading(Contract):
    """A test contract: one device's reading with a code and a category."""

    contract_name: ClassVar[str] = "test.reading"
    contract_version: ClassVar[str] = "1.0"
    monitoring: ClassVar[Monitoring | None] = Monitoring(
        numeric=("value",), series=("device",), categories=("category",), nulls=("note",)
    )

    device: str
    value: float | None = None
    category: str = "vital"
    note: str | None = Field(default="ok")
    at: datetime

    def entity_key(self) -> str:
        return self.device

    def occurred_at(self) -> datetime | None:
        return self.at


Fault = Callable[[float, int, dict[str, Any]], dict[str, Any] | None]
"""(arrival time, device index, the reading's fields) -> the fields to publish, or None to drop the reading."""


def stream(weeks: float, *, start: float = START, step: float = 300.0, devices: int = 6, fault: Fault | None = None,
           seed: int = 7, night_share: float = 1.0) -> Iterator[tuple[float, list[Reading]]]:  # fmt: skip
    """Every ``step`` seconds one reading per device (a value around 100 + 10 * device); ``night_share`` of the
    devices report between 22:00 and 06:00 UTC (a daily rhythm)."""
    rng = random.Random(seed)
    t = start
    while t < start + weeks * WEEK:
        hour = datetime.fromtimestamp(t, UTC).hour
        active = devices if 6 <= hour < 22 else max(1, round(devices * night_share))
        batch = []
        for d in range(active):
            fields: dict[str, Any] | None = {
                "device": f"d{d}",
                "value": rng.gauss(100 + 10 * d, 3),
                "category": "vital" if rng.random() < 0.7 else "lab",
                "at": datetime.fromtimestamp(t - rng.uniform(0, 30), UTC),
            }
            if fault is not None:
                fields = fault(t, d, fields)  # type: ignore[arg-type]
            if fields is not None:
                batch.append(Reading.model_validate(fields))
        yield t, batch
        t += step


def replay(monitors: Monitors, batches: Iterator[tuple[float, list[Reading]]]) -> list[DataAlertV1]:
    """Feed batches as if they arrived at their times, ticking between them like the supervisor does."""
    alerts: list[DataAlertV1] = []
    for t, batch in batches:
        if batch:
            alerts += monitors.observe(batch, t)
        alerts += monitors.tick(t + 60)
    return alerts


def settings(**kw: Any) -> MonitorSettings:
    return MonitorSettings.model_validate({"learn_seconds": WEEK, **kw})


def opened(alerts: list[DataAlertV1], check: str) -> list[DataAlertV1]:
    return [a for a in alerts if a.check == check and a.status == "open"]


FAULT_AT = START + WEEK + 2 * DAY + 10.5 * HOUR  # a Wednesday, mid-morning, after a week of learning


def test_a_clean_stream_over_three_weeks_raises_nothing() -> None:
    alerts = replay(Monitors("c", "i", settings(), zone="Europe/Berlin"), stream(3, night_share=0.3))
    assert alerts == []


def test_nothing_alerts_while_learning() -> None:
    def drop(t: float, d: int, f: dict[str, Any]) -> dict[str, Any] | None:
        return None if t >= START + 3 * DAY and d > 0 else {**f, "value": f["value"] * 1000}

    alerts = replay(Monitors("c", "i", settings()), stream(0.9, fault=drop))
    assert alerts == []


def test_a_unit_change_on_one_device_opens_one_alert_naming_it_within_one_window() -> None:
    def wh(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * 1000} if t >= FAULT_AT and d == 2 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=wh))
    [alert] = alerts
    assert (alert.check, alert.monitor, alert.contract, alert.field, alert.series) == (
        "level_shift", "numeric", "test.reading", "value", "d2"
    )  # fmt: skip
    assert alert.window_start.timestamp() <= FAULT_AT < alert.window_end.timestamp()
    assert 110 < alert.expected < 130 and alert.seen > 100_000
    assert alert.measure == "value" and alert.status == "open"


@pytest.mark.parametrize("factor", [0.001, -1.0])
def test_a_series_divided_by_1000_or_flipped_is_a_level_shift(factor: float) -> None:
    def change(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * factor} if t >= FAULT_AT and d == 0 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=change))
    assert [(a.check, a.series) for a in opened(alerts, "level_shift")] == [("level_shift", "d0")]


def test_a_shift_clears_when_the_values_return_and_is_not_repeated_while_open() -> None:
    back = FAULT_AT + 6 * HOUR

    def shift(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * 1000} if FAULT_AT <= t < back and d == 1 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=shift))
    assert [a.status for a in alerts] == ["open", "cleared"]  # six anomalous windows, one alert
    assert alerts[0].alert_id == alerts[1].alert_id
    assert back < alerts[1].window_end.timestamp() <= back + 2 * HOUR  # the first window wholly normal again


def test_a_90_percent_volume_drop_is_caught_within_one_window_and_clears() -> None:
    rng = random.Random(3)
    back = FAULT_AT + 3 * HOUR

    def thin(t: float, d: int, f: dict[str, Any]) -> dict[str, Any] | None:
        return None if FAULT_AT <= t < back and rng.random() < 0.9 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, devices=10, fault=thin))
    drops = [a for a in alerts if a.check == "volume_drop"]
    assert [a.status for a in drops] == ["open", "cleared"]
    assert drops[0].window_start.timestamp() <= FAULT_AT + HOUR  # the first whole window of the drop at the latest
    assert drops[0].seen < 0.3 * drops[0].expected and drops[0].measure == "events"
    assert all(a.check == "volume_drop" for a in alerts)


def test_volume_knows_the_hour_of_the_week() -> None:
    """Quiet Sunday nights are learnt; the same quiet night on a Wednesday is a drop."""

    def weekly(t: float, d: int, f: dict[str, Any]) -> dict[str, Any] | None:
        when = datetime.fromtimestamp(t, UTC)
        quiet = when.weekday() == 6 and when.hour < 6  # Sunday night: one device reports
        wednesday = t >= START + 2 * WEEK and when.weekday() == 2 and when.hour < 6
        return None if (quiet or wednesday) and d > 0 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2.5, devices=10, fault=weekly))
    drops = opened(alerts, "volume_drop")
    assert drops, "the quiet Wednesday night went unnoticed"
    assert {datetime.fromtimestamp(a.window_start.timestamp(), UTC).weekday() for a in drops} == {2}


def test_a_stalled_feed_is_silence_within_one_window_and_clears_when_events_return() -> None:
    back = FAULT_AT + 5 * HOUR

    def stall(t: float, d: int, f: dict[str, Any]) -> dict[str, Any] | None:
        return None if FAULT_AT <= t < back else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=stall))
    silence = [a for a in alerts if a.check == "silence"]
    assert [a.status for a in silence] == ["open", "cleared"]
    assert silence[0].observed_at.timestamp() - FAULT_AT <= HOUR
    assert silence[0].seen == 0 and silence[0].expected >= 20
    assert back <= silence[1].observed_at.timestamp() <= back + 300


def test_max_silence_seconds_alerts_a_feed_that_never_pauses() -> None:
    m = Monitors("c", "i", settings(learn_seconds=0, max_silence_seconds=120))
    t = START
    m.observe([Reading(device="a", value=1.0, at=datetime.fromtimestamp(t, UTC))], t)
    assert m.tick(t + 100) == []
    [alert] = m.tick(t + 130)
    assert alert.check == "silence" and alert.window_start.timestamp() == t


def test_a_category_swap_opens_alerts_naming_the_codes() -> None:
    def swap(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "category": "medication"} if t >= FAULT_AT and f["category"] == "lab" else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, devices=10, fault=swap))
    moved = opened(alerts, "share_change")
    assert {(a.field, a.series) for a in moved} == {("category", "lab"), ("category", "medication")}
    new = next(a for a in moved if a.series == "medication")
    assert new.expected < 0.05 and new.seen > 0.15 and new.monitor == "categorical"
    assert new.window_start.timestamp() <= FAULT_AT + HOUR  # the first whole window of the swap at the latest


def test_a_field_going_null_raises_the_null_rate() -> None:
    def null(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "note": None} if t >= FAULT_AT and d < 4 else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=null))
    [alert] = alerts
    assert (alert.check, alert.field, alert.expected) == ("null_rate", "note", 0.0)
    assert alert.seen > 0.25  # the fault began half-way through the window


def test_lagging_source_timestamps_open_a_lag_alert() -> None:
    def late(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "at": datetime.fromtimestamp(t - 4 * HOUR, UTC)} if t >= FAULT_AT else f

    alerts = replay(Monitors("c", "i", settings()), stream(2, fault=late))
    [alert] = opened(alerts, "lag")
    assert alert.measure == "seconds" and alert.seen > 3 * HOUR and alert.expected < 60


def test_a_restart_keeps_baselines_open_alerts_and_the_learning_clock() -> None:
    def wh(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * 1000} if t >= FAULT_AT and d == 2 else f

    batches = list(stream(2, fault=wh))
    first = Monitors("c", "i", settings())
    half = [b for b in batches if b[0] < FAULT_AT + 2 * HOUR]
    assert len(replay(first, iter(half))) == 1
    state = orjson.loads(orjson.dumps(first.saved))  # as a position store keeps it

    clock = [FAULT_AT + 2 * HOUR]
    again = Monitors("c", "i", settings(), state=state, clock=lambda: clock[0])
    assert again.started_at == first.started_at and set(again.open) == set(first.open)
    rest = [b for b in batches if b[0] >= FAULT_AT + 2 * HOUR]
    assert replay(again, iter(rest)) == []  # still open: not opened again, nothing re-learnt as normal
    # A fresh monitor would still be learning here: the baselines came back with the state.
    assert Monitors("c", "i", settings(), clock=lambda: clock[0]).describe()["learning"] is True
    assert again.describe(FAULT_AT + 3 * HOUR)["learning"] is False


def test_a_restart_does_not_take_the_downtime_for_silence_or_a_drop() -> None:
    batches = list(stream(2))
    first = Monitors("c", "i", settings())
    replay(first, (b for b in batches if b[0] < FAULT_AT))
    resumed = FAULT_AT + 3 * HOUR  # the supervisor was down for three hours
    later = Monitors("c", "i", settings(), state=orjson.loads(orjson.dumps(first.saved)), clock=lambda: resumed)
    assert replay(later, (b for b in batches if b[0] >= resumed)) == []


def test_series_are_capped_evicting_the_one_unseen_longest() -> None:
    m = Monitors("c", "i", settings(max_series=3, learn_seconds=0))
    t = START
    for device in ("a", "b", "c", "a", "d"):  # "b" is then the one seen longest ago
        m.observe([Reading(device=device, value=1.0, at=datetime.fromtimestamp(t, UTC)) for _ in range(5)], t)
        t += HOUR
    m.tick(t)
    assert sorted(m.numeric["test.reading|value"]) == ["a", "c", "d"]


def test_distinct_codes_per_field_are_capped() -> None:
    m = Monitors("c", "i", settings())
    at = datetime.fromtimestamp(START, UTC)
    m.observe([Reading(device="x", category=f"code{i}", at=at) for i in range(MAX_CATEGORIES + 10)], START)
    counts = m.shares["categorical|test.reading|category"].counts
    assert len(counts) == MAX_CATEGORIES + 1 and counts["(other)"] == 10


def test_integration_fields_override_the_contract_hints() -> None:
    s = settings(fields={"test.reading": MonitorFields(numeric=[], categories=["device"])})
    m = Monitors("c", "i", s)
    m.observe([Reading(device="x", value=3.0, at=datetime.fromtimestamp(START, UTC))], START)
    assert m.numeric == {} and "categorical|test.reading|device" in m.shares
    assert "categorical|test.reading|category" not in m.shares


def test_contracts_without_hints_get_literal_categories_and_optional_nulls() -> None:
    class Plain(Contract):
        contract_name: ClassVar[str] = "test.plain"
        contract_version: ClassVar[str] = "1.0"
        kind: Literal["a", "b"]
        amount: float
        comment: str | None = None

    hints = default_monitoring(Plain)
    assert (hints.categories, hints.nulls, hints.numeric) == (("kind",), ("comment",), ())


def test_alerts_are_valid_events_of_their_contract() -> None:
    def wh(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * 1000} if t >= FAULT_AT and d == 2 else f

    [alert] = replay(Monitors("c", "i", settings()), stream(2, fault=wh))
    again = DataAlertV1.model_validate_json(alert.model_dump_json())
    assert again == alert and alert.entity_key() == "c/i"
    assert alert.window_end.timestamp() - alert.window_start.timestamp() == HOUR


def test_an_operator_reset_clears_open_alerts_and_learns_again() -> None:
    def wh(t: float, d: int, f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "value": f["value"] * 1000} if t >= FAULT_AT and d == 2 else f

    m = Monitors("c", "i", settings())
    batches = list(stream(2, fault=wh))
    [opened_] = replay(m, (b for b in batches if b[0] < FAULT_AT + 2 * HOUR))
    [cleared] = m.reset(FAULT_AT + 2 * HOUR)
    assert (cleared.alert_id, cleared.status) == (opened_.alert_id, "cleared")
    assert "reset by an operator" in cleared.detail and m.open == {}
    assert m.describe(FAULT_AT + 3 * HOUR)["learning"] is True  # a week of learning again: x1000 is the new normal
    assert replay(m, (b for b in batches if b[0] >= FAULT_AT + 2 * HOUR)) == []


async def test_the_state_is_stored_beside_the_position_only_when_a_window_end_changed_it(tmp_path: Path) -> None:
    """One write per window, not one per batch: a meter hub's state is hundreds of kilobytes."""

    class Counting(CheckpointStore):
        writes = 0

        async def save(self, customer: str, integration: str, position: dict[str, Any]) -> None:
            type(self).writes += 1
            await super().save(customer, integration, position)

    store = Counting(tmp_path / "checkpoints.sqlite")
    m = Monitors("c", "i", settings())
    try:
        for t, batch in stream(0.1):  # 16.8 hours, a batch every five minutes: 202 batches, 16 window ends
            m.observe(batch, t)
            await store_state(m, store, "c", "i")
        assert Counting.writes == 17  # the first state, then one per window that ended
        assert store.load_sync("c", state_key("i")) == orjson.loads(orjson.dumps(m.saved))
        assert store.load_sync("c", "i") is None  # the position itself is the pipeline's, untouched
    finally:
        store.close()
