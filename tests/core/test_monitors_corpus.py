"""The monitors on replayed project fixtures (tools/monitor_corpus.py): weeks of meter readings, clinical
observations and ERP invoices, through the real plugins' decode and map, across both DST days of 2026.

The clean corpora raise no alert at all (false alarms are counted over every clean stream and must be zero);
each injected fault is caught within one window, naming the right check, field and series, and nothing else
alerts. A restart in the middle (the state through JSON, as a position store keeps it) keeps the baselines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
import pytest

from inlet.contracts.inlet_data_alert import DataAlertV1
from inlet.core.config import MonitorSettings
from inlet.core.monitors import Monitors
from tools.monitor_corpus import (
    BERLIN,
    Stream,
    category_swap,
    currency_switch,
    field_null,
    invoice_stream,
    meter_stream,
    observation_stream,
    stall,
    unit_x1000,
    volume_drop,
)

HOUR = 3600.0
METERS = ("hh-0101", "pv-0201", "shellyem3-8CAAB500")
# Windows: an hour for the meter hub (480 readings an hour, steady); three hours for the hospital, whose feed comes
# in encounters of ~10 observations (an hourly 90 % drop there is within its own noise, docs/monitors.md); a day
# for the ERP, which books a few invoices an hour in office hours.
SETTINGS = {
    "meters": MonitorSettings(),
    "observations": MonitorSettings(window_seconds=3 * HOUR),
    "invoices": MonitorSettings(window_seconds=24 * HOUR),
}


@cache
def clean(family: str, season: str) -> Stream:
    """A week of learning, then the DST day of ``season`` (2026-03-29 or 2026-10-25) and days after it."""
    march = season == "march"
    if family == "meters":
        start = datetime(2026, 3, 20, tzinfo=BERLIN) if march else datetime(2026, 10, 16, tzinfo=BERLIN)
        return meter_stream(start, 1.5, devices=METERS)
    start = datetime(2026, 3, 16, tzinfo=BERLIN) if march else datetime(2026, 10, 12, tzinfo=BERLIN)
    if family == "observations":
        return observation_stream(start, 2.5)
    return invoice_stream(start, 3)


def replay(
    family: str, stream: Iterable[tuple[float, list[Any]]], monitors: Monitors | None = None, *, until: float = 0.0
) -> list[DataAlertV1]:
    """Batches as they arrived, the supervisor's tick a minute after each, and every ten minutes through silences
    (also after the last batch, up to ``until``: a stalled feed sends nothing more)."""
    m = monitors or Monitors("corpus", family, SETTINGS[family], zone="Europe/Berlin")
    alerts: list[DataAlertV1] = []
    last: float | None = None
    for t, models in stream:
        while last is not None and t - last > 600:  # ticks go on while nothing arrives
            last += 600
            alerts += m.tick(last)
        alerts += m.observe(models, t)
        alerts += m.tick(t + 60)
        last = t
    while last is not None and last < until:
        last += 600
        alerts += m.tick(last)
    return alerts


def _end(stream: Stream) -> float:
    return stream[-1][0]


@pytest.mark.parametrize("season", ["march", "october"])
@pytest.mark.parametrize("family", ["meters", "observations", "invoices"])
def test_the_clean_corpus_raises_no_alert_across_dst(family: str, season: str) -> None:
    stream = clean(family, season)
    alerts = replay(family, stream)
    false_alarms = [(a.check, a.field, a.series, a.detail, a.window_start.isoformat()) for a in alerts]
    assert false_alarms == []
    dst_day = datetime(2026, 3, 29, tzinfo=UTC) if season == "march" else datetime(2026, 10, 25, tzinfo=UTC)
    assert stream[0][0] + 7 * 86400 < dst_day.timestamp() < _end(stream) - 86400  # judged, not learnt


def _fault_at(family: str) -> datetime:
    """Mid-morning of a weekday after the week of learning (the hospital and the ERP are busy then)."""
    return (
        datetime(2026, 10, 21, 9, 20, tzinfo=BERLIN)
        if family != "meters"
        else datetime(2026, 10, 24, 10, 20, tzinfo=BERLIN)
    )


def _within_one_window(alert: DataAlertV1, fault: datetime, family: str) -> None:
    """Opened at the end of the window the fault began in, or of the next one (a fault in a window's last minutes
    may not yet dominate it)."""
    size = SETTINGS[family].window_seconds
    assert alert.window_start.timestamp() <= fault.timestamp() + size, (alert.window_start, fault)
    assert alert.observed_at.timestamp() <= fault.timestamp() + 2 * size + 3600


FAULTS: dict[str, tuple[str, Callable[[Stream, datetime], Stream], list[tuple[str, str | None, str | None]]]] = {
    # name: (family, injector, [(check, field, series prefix)] expected)
    "unit x1000 on two meters": (
        "meters",
        lambda s, at: unit_x1000(s, at, {"hh-0101", "pv-0201"}),
        [("level_shift", "quantity", "hh-0101/energy"), ("level_shift", "quantity", "pv-0201/energy")],
    ),
    # The wound-care case: every vital sign (a third of the observations) filed as wound care. A smaller swap is
    # caught too, a window later: a hospital's category shares move by 20 points within a day on their own.
    "a category swap on a share of observations": (
        "observations",
        lambda s, at: category_swap(s, at, from_cat="vital-signs", to_cat="wound-care"),
        [("share_change", "category[]", "vital-signs"), ("share_change", "category[]", "wound-care")],
    ),
    "a 90 % volume drop of the meters": (
        "meters",
        lambda s, at: volume_drop(s, at, keep=0.1),
        [("volume_drop", None, None)],
    ),
    "a 90 % volume drop of the hospital": (
        "observations",
        lambda s, at: volume_drop(s, at, keep=0.1),
        [("volume_drop", None, None)],
    ),
    "a stalled meter hub": ("meters", stall, [("silence", None, None)]),
    "a stalled hospital feed": ("observations", stall, [("silence", None, None)]),
    "observation values going null": (
        "observations",
        lambda s, at: field_null(s, at, "value"),
        [("null_rate", "value", None)],
    ),
    "an ERP switching currency": (
        "invoices",
        lambda s, at: currency_switch(s, at, "CHF"),
        [("share_change", "currency", "CHF"), ("share_change", "currency", "EUR")],
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_injected_fault_is_caught_within_one_window_naming_field_and_series(name: str) -> None:
    family, inject, wanted = FAULTS[name]
    fault = _fault_at(family)
    original = clean(family, "october")
    stream = inject(original, fault)
    alerts = [a for a in replay(family, stream, until=_end(original)) if a.status == "open"]
    assert alerts, f"{name}: not caught"
    for check, field, series in wanted:
        found = [
            a for a in alerts if a.check == check and a.field == field and (a.series or "").startswith(series or "")
        ]
        assert found, (name, check, field, series, [(a.check, a.field, a.series) for a in alerts])
        _within_one_window(found[0], fault, family)
    # Nothing unrelated alerts: every alert is one of the wanted kinds (a stall is also a volume drop, and a feed
    # thinned by 90 % falls silent for hours).
    related = {"silence": {"volume_drop"}, "volume_drop": {"silence"}}.get(wanted[0][0], set())
    kinds = {w[0] for w in wanted} | related
    assert {a.check for a in alerts} <= kinds, [(a.check, a.field, a.series, a.detail) for a in alerts]
    assert all(a.contract is None or a.contract.startswith(("energy.", "clinical.", "erp.")) for a in alerts)


def test_a_restart_in_the_middle_keeps_the_baselines() -> None:
    """Stopped and started again (state through JSON) two hours before a fault: the fault is still caught in its
    window, the clean days after the restart raise nothing, and a monitor learning from scratch would have caught
    nothing at all."""
    fault = _fault_at("meters")
    stream = unit_x1000(clean("meters", "october"), fault, {"hh-0101"})
    cut = fault.timestamp() - 2 * HOUR
    first = Monitors("corpus", "meters", SETTINGS["meters"], zone="Europe/Berlin")
    assert replay("meters", [b for b in stream if b[0] < cut], first) == []
    state = orjson.loads(orjson.dumps(first.saved))
    after = [b for b in stream if b[0] >= cut + 600]  # ten minutes down
    again = Monitors("corpus", "meters", SETTINGS["meters"], zone="Europe/Berlin", state=state, clock=lambda: cut + 600)
    alerts = replay("meters", after, again)
    assert {(a.check, (a.series or "").split("/")[0]) for a in alerts} == {("level_shift", "hh-0101")}
    fresh = Monitors("corpus", "meters", SETTINGS["meters"], zone="Europe/Berlin", clock=lambda: cut + 600)
    assert replay("meters", after, fresh) == []  # it would still be learning: the baselines came with the state


def test_the_corpus_spans_what_the_monitors_must_learn() -> None:
    """The fault instants fall after the week of learning, inside the streams."""
    for family in SETTINGS:
        stream = clean(family, "october")
        at = _fault_at(family).timestamp()
        assert stream[0][0] + 7 * 86400 < at < _end(stream) - timedelta(days=1).total_seconds()
