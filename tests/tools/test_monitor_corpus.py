"""The monitors' replay corpus is what it claims: sorted, valid, on time, rhythmic, across both 2026 DST days, and
each injected fault changes what it says from its start and nothing before it.

The streams are short (a DST day of meters, eight days of observations, a week of invoices) and built once per
session: enough for every claim, under two seconds in all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import pairwise
from typing import Any

import pytest

from inlet.contracts.base import Contract
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.contracts.erp_invoice import InvoiceV1
from tools.monitor_corpus import (
    BERLIN,
    HUB_LATENCY,
    POLL,
    Stream,
    category_swap,
    currency_switch,
    delay,
    field_null,
    invoice_stream,
    meter_stream,
    observation_stream,
    stall,
    unit_x1000,
    volume_drop,
)

SPRING, AUTUMN = date(2026, 3, 29), date(2026, 10, 25)
# Meters from the DST day's Berlin midnight into the next day.
METERS_FROM = {SPRING: datetime(2026, 3, 29, tzinfo=BERLIN), AUTUMN: datetime(2026, 10, 25, tzinfo=BERLIN)}
# Observations from the Monday before to the Tuesday after each DST Sunday, Berlin midnight.
WARD_FROM = {SPRING: datetime(2026, 3, 23, tzinfo=BERLIN), AUTUMN: datetime(2026, 10, 19, tzinfo=BERLIN)}
OFFICE_FROM = datetime(2026, 10, 19, tzinfo=BERLIN)  # a Monday; the week ends on the autumn DST Sunday


@lru_cache
def meters(day: date) -> Stream:
    return meter_stream(METERS_FROM[day], 1.1 / 7)


@lru_cache
def observations(day: date) -> Stream:
    return observation_stream(WARD_FROM[day], 8 / 7)


@lru_cache
def invoices() -> Stream:
    return invoice_stream(OFFICE_FROM, 1)


def _models(stream: Stream) -> list[Any]:
    return [m for _, models in stream for m in models]


def _timed(stream: Stream) -> list[tuple[float, Any]]:
    return [(t, m) for t, models in stream for m in models]


def _local(t: float) -> datetime:
    return datetime.fromtimestamp(t, BERLIN)


def _split(stream: Stream, at: datetime) -> tuple[Stream, Stream]:
    return [a for a in stream if a[0] < at.timestamp()], [a for a in stream if a[0] >= at.timestamp()]


def _unchanged_before(clean: Stream, faulty: Stream, at: datetime) -> Stream:
    """The faulty stream's part from ``at`` on, after checking its part before ``at`` is the clean one."""
    before, after = _split(faulty, at)
    assert before == _split(clean, at)[0]
    return after


# -- the clean streams -----------------------------------------------------------------------------------------------
# How late an event may arrive: the hub's second; the longest lab lag and a poll, plus the second the sources cut.
STREAMS = [
    pytest.param(lambda: meters(SPRING), 2.0, id="meters-spring"),
    pytest.param(lambda: meters(AUTUMN), 2.0, id="meters-autumn"),
    pytest.param(lambda: observations(SPRING), 3600 + POLL + 1, id="observations-spring"),
    pytest.param(lambda: observations(AUTUMN), 3600 + POLL + 1, id="observations-autumn"),
    pytest.param(invoices, POLL + 1, id="invoices"),
]


@pytest.mark.parametrize(("build", "late"), STREAMS)
def test_arrivals_are_sorted_valid_and_after_their_events(build: Any, late: float) -> None:
    stream: Stream = build()
    assert stream and all(models for _, models in stream)
    assert all(a[0] < b[0] for a, b in pairwise(stream))
    for t, models in stream[::10]:  # a tenth is plenty to catch a systematic fault, at a tenth of the cost
        for m in models:
            assert type(m).model_validate(m.model_dump()).model_dump() == m.model_dump()
            occurred = m.occurred_at()
            assert occurred is not None and 0 <= t - occurred.timestamp() <= late


@pytest.mark.parametrize(("day", "hours"), [(SPRING, 23), (AUTUMN, 25)])
def test_meters_tick_every_five_minutes_through_the_dst_day(day: date, hours: int) -> None:
    stream = meters(day)
    assert sum(_local(t).date() == day for t, _ in stream) == hours * 12
    tasmota = [
        (t, m)
        for t, m in _timed(stream)
        if m.device_id == "hh-0101" and m.metric == "energy" and m.kind == "cumulative"
    ]
    # Naive Tasmota wall times, the repeated autumn hour included, are read as the instant they were taken.
    assert all(m.measured_at.timestamp() == t - HUB_LATENCY and m.time_source == "device" for t, m in tasmota)
    assert {_local(t).utcoffset() for t, _ in stream if _local(t).date() == day} == {
        timedelta(hours=1),
        timedelta(hours=2),
    }
    assert {m.device_id for m in _models(stream)} == {
        "hh-0101",
        "hh-0102",
        "pv-0201",
        "shellyem3-8CAAB500",
        "shellyem3-8CAAB501",
        "shellyem3-8CAAB502",
        "shellypro3em-a0b1c2",
    }
    # 40 a tick but Today at a local midnight (an empty interval): the duplicate and cut frames add none.
    midnights = sum(_local(t - HUB_LATENCY).time() == datetime.min.time() for t, _ in stream)
    assert len(_models(stream)) == 40 * len(stream) - 2 * midnights and midnights == 2


def test_counters_only_grow_and_today_starts_at_local_midnight() -> None:
    series: dict[tuple[Any, ...], list[MeterReadingV1]] = defaultdict(list)
    for m in _models(meters(AUTUMN)):
        series[(m.device_id, m.metric, m.kind, m.phase, m.direction)].append(m)
    for key, readings in series.items():
        if key[2] == "cumulative":
            for a, b in pairwise(readings):
                assert b.quantity >= a.quantity or "counter_reset" in b.quality, key
        if key[2] == "interval":  # Tasmota's Today: from the local midnight, growing through the day
            for a, b in pairwise(readings):
                assert b.interval_start == datetime.combine(
                    b.measured_at.astimezone(BERLIN).date(), datetime.min.time(), BERLIN
                )
                assert b.quantity >= a.quantity if a.interval_start == b.interval_start else b.quantity < 1.5, key
    assert sum("counter_reset" in m.quality for m in _models(meters(AUTUMN))) == 1  # the generator's replaced meter


def test_pv_exports_only_in_daylight() -> None:
    pv = [m for m in _models(meters(SPRING)) if m.device_id == "pv-0201" and m.metric == "power"]
    exporting = {m.measured_at.astimezone(BERLIN).hour for m in pv if m.direction == "export"}
    assert exporting and min(exporting) >= 6 and max(exporting) <= 19
    assert any(m.direction == "import" for m in pv)


@pytest.mark.parametrize("day", [SPRING, AUTUMN])
def test_observations_follow_the_wards_day_and_week(day: date) -> None:
    stream = observations(day)
    per_hour: Counter[tuple[date, int]] = Counter()
    for t, models in stream:
        per_hour[(_local(t).date(), _local(t).hour)] += len(models)
    weekdays = [d for d in {d for d, _ in per_hour} if d.weekday() < 5]
    day_rate = sum(per_hour[(d, h)] for d in weekdays for h in range(9, 13)) / (4 * len(weekdays))
    night_rate = sum(per_hour[(d, h)] for d in weekdays for h in range(1, 5)) / (4 * len(weekdays))
    assert day_rate > 4 * night_rate
    per_day = Counter(d for d, _ in per_hour.elements())
    assert per_day[day] < 0.6 * sum(per_day[d] for d in weekdays) / len(weekdays)  # the DST day is a Sunday
    assert {_local(t).utcoffset() for t, _ in stream if _local(t).date() == day} == {
        timedelta(hours=1),
        timedelta(hours=2),
    }


def test_observations_have_codes_categories_and_numbers_a_monitor_can_watch() -> None:
    models = _models(observations(SPRING))
    assert all(isinstance(m, ObservationV2) for m in models)
    categories = Counter(c for m in models for c in m.category)
    assert set(categories) == {"vital-signs", "laboratory", "survey", "social-history", "wound-care"}
    numeric = Counter(m.code[0].code for m in models if m.value is not None and m.value.type == "quantity")
    assert len(numeric) > 20 and numeric.most_common(1)[0][1] > 200
    lab = [m for m in models if "laboratory" in m.category]
    assert {m.code[0].system for m in lab} == {"http://loinc.org"}  # the hospital's local codes mapped by its plugin
    assert any(len(m.code) == 2 for m in lab)


def test_invoices_arrive_in_office_hours_on_weekdays() -> None:
    stream = invoices()
    models = _models(stream)
    assert all(isinstance(m, InvoiceV1) for m in models)
    assert 250 < len(models) < 400
    for m in models:
        local = m.last_modified.astimezone(BERLIN)
        assert local.weekday() < 5 and 8 <= local.hour < 18
        assert m.issue_date == local.date()
    assert {m.currency for m in models} == {"EUR", "USD"}
    assert {m.status for m in models} == {"open", "paid", "draft", "void"}
    assert not any(m.invoice_number.startswith("WS-") for m in models)  # webshop drafts: filtered by the plugin
    assert 0 < sum(m.due_date is None for m in models) < len(models) / 5


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    assert invoice_stream(OFFICE_FROM, 1) == invoices()
    assert invoice_stream(OFFICE_FROM, 1, seed=53) != invoices()
    hour = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    one = meter_stream(hour, 1 / 84, devices=["hh-0101", "pv-0201"])
    assert meter_stream(hour, 1 / 84, devices=["hh-0101", "pv-0201"]) == one
    assert meter_stream(hour, 1 / 84, seed=8, devices=["hh-0101", "pv-0201"]) != one
    assert {m.device_id for m in _models(one)} == {"hh-0101", "pv-0201"} and len(one) == 24


async def test_a_stream_can_be_built_inside_an_event_loop() -> None:
    stream = meter_stream(datetime(2026, 3, 29, tzinfo=UTC), 1 / 168, devices=["hh-0101"])
    assert len(stream) == 12


def test_naive_starts_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        invoice_stream(datetime(2026, 3, 1), 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        stall(invoices(), datetime(2026, 3, 1))


# -- faults ----------------------------------------------------------------------------------------------------------
FAULT_AT = datetime(2026, 10, 25, 12, tzinfo=UTC)  # the autumn DST Sunday, midway through the meters' stream
WARD_FAULT_AT = datetime(2026, 10, 22, 12, tzinfo=UTC)  # a Thursday, midway through the observations
OFFICE_FAULT_AT = datetime(2026, 10, 21, 12, tzinfo=UTC)  # a Wednesday, midway through the invoices


def test_unit_x1000_scales_the_energy_of_the_named_devices() -> None:
    clean = meters(AUTUMN)
    after = _unchanged_before(clean, unit_x1000(clean, FAULT_AT, ["hh-0101", "shellypro3em-a0b1c2"]), FAULT_AT)
    changed = 0
    for (t, old), (u, new) in zip(_split(clean, FAULT_AT)[1], after, strict=True):
        assert t == u
        for a, b in zip(_models([(t, old)]), _models([(u, new)]), strict=True):
            if a.device_id in ("hh-0101", "shellypro3em-a0b1c2") and a.metric == "energy":
                assert b.quantity == a.quantity * 1000 and b.unit == a.unit
                changed += 1
            else:
                assert b == a
    assert changed > 500
    everything = unit_x1000(clean, FAULT_AT, ["hh-0101"], metrics=None)
    assert {m.metric for m, n in zip(_models(clean), _models(everything), strict=True) if m != n} == {
        "energy",
        "power",
        "voltage",
        "current",
    }


def test_category_swap_refiles_a_share_of_one_category() -> None:
    clean = observations(AUTUMN)
    faulty = category_swap(clean, WARD_FAULT_AT, from_cat="vital-signs", to_cat="laboratory", share=0.5)
    after = _unchanged_before(clean, faulty, WARD_FAULT_AT)
    pairs = list(zip(_models(_split(clean, WARD_FAULT_AT)[1]), _models(after), strict=True))
    vitals = [(a, b) for a, b in pairs if "vital-signs" in a.category]
    swapped = [b for a, b in vitals if b.category == ["laboratory"]]
    assert 0.4 < len(swapped) / len(vitals) < 0.6
    assert all(a == b for a, b in pairs if "vital-signs" not in a.category)
    assert all(b.model_dump(exclude={"category"}) == a.model_dump(exclude={"category"}) for a, b in vitals)


@pytest.mark.parametrize("per", ["models", "arrivals"])
def test_volume_drop_keeps_a_tenth(per: Any) -> None:
    clean = observations(AUTUMN)
    after = _unchanged_before(clean, volume_drop(clean, WARD_FAULT_AT, per=per), WARD_FAULT_AT)
    kept, was = len(_models(after)), len(_models(_split(clean, WARD_FAULT_AT)[1]))
    assert 0.06 < kept / was < 0.14


def test_stall_stops_arrivals_for_ever_or_delivers_the_backlog_at_its_end() -> None:
    clean = meters(AUTUMN)
    assert _unchanged_before(clean, stall(clean, FAULT_AT), FAULT_AT) == []
    two_hours = timedelta(hours=2)
    after = _unchanged_before(clean, stall(clean, FAULT_AT, two_hours, catch_up=True), FAULT_AT)
    held = [m for t, ms in clean if FAULT_AT.timestamp() <= t < (FAULT_AT + two_hours).timestamp() for m in ms]
    assert after[0] == ((FAULT_AT + two_hours).timestamp(), held) and len(held) == 24 * 40
    assert after[1:] == _split(clean, FAULT_AT + two_hours)[1]
    dropped = _unchanged_before(clean, stall(clean, FAULT_AT, two_hours), FAULT_AT)
    assert dropped == after[1:]


def test_delay_shifts_arrivals_not_events() -> None:
    clean = invoices()
    after = _unchanged_before(clean, delay(clean, OFFICE_FAULT_AT, timedelta(hours=3)), OFFICE_FAULT_AT)
    assert after == [(t + 3 * 3600, ms) for t, ms in _split(clean, OFFICE_FAULT_AT)[1]]


def test_field_null_empties_an_optional_field_and_refuses_a_required_one() -> None:
    clean = observations(AUTUMN)
    after = _unchanged_before(clean, field_null(clean, WARD_FAULT_AT, "value"), WARD_FAULT_AT)
    assert after and all(m.value is None for m in _models(after))
    half = field_null(meters(AUTUMN), FAULT_AT, "measured_at_precision", share=0.5)
    after = _unchanged_before(meters(AUTUMN), half, FAULT_AT)
    pairs = zip(_models(_split(meters(AUTUMN), FAULT_AT)[1]), _models(after), strict=True)
    nulled = [b.measured_at_precision is None for a, b in pairs if a.measured_at_precision is not None]
    assert 0.45 < sum(nulled) / len(nulled) < 0.55  # Shelly Gen1 readings (receive time) have none anyway
    with pytest.raises(ValueError, match=r"quantity is required in energy.meter_reading 1.0; optional fields: .*phase"):
        field_null(meters(AUTUMN), FAULT_AT, "quantity")
    with pytest.raises(ValueError, match="no model in the stream has a field 'currency'"):
        field_null(meters(AUTUMN), FAULT_AT, "currency")


def _adds_up(m: InvoiceV1) -> bool:
    net = sum((Decimal(line.line_amount) for line in m.lines), Decimal(0))
    tax = sum((Decimal(line.tax_amount or 0) for line in m.lines), Decimal(0))
    return Decimal(m.net_amount) == net and Decimal(m.tax_amount) == tax and net + tax == Decimal(m.gross_amount)


def test_currency_switch_bills_in_the_new_currency() -> None:
    clean = invoices()
    after = _unchanged_before(clean, currency_switch(clean, OFFICE_FAULT_AT, "USD"), OFFICE_FAULT_AT)
    pairs: list[tuple[Contract, Contract]] = list(
        zip(_models(_split(clean, OFFICE_FAULT_AT)[1]), _models(after), strict=True)
    )
    assert {b.currency for _, b in pairs} == {"USD"}  # type: ignore[attr-defined]
    for a, b in pairs:
        assert isinstance(a, InvoiceV1) and isinstance(b, InvoiceV1)
        if a.currency == "USD":
            assert b == a
            continue
        assert _adds_up(b) and b.invoice_id == a.invoice_id and b.status == a.status
        assert abs(Decimal(b.gross_amount) - Decimal("1.08") * Decimal(a.gross_amount)) <= Decimal("0.05") * len(
            a.lines
        )
        assert b.amount_due is None or Decimal(b.amount_due) in (Decimal(0), Decimal(b.gross_amount))
    relabelled = currency_switch(clean, OFFICE_FAULT_AT, "USD", rate=1)
    for a, b in zip(_models(clean), _models(relabelled), strict=True):
        assert b.model_dump(exclude={"currency"}) == a.model_dump(exclude={"currency"})
