"""Data-quality monitors: an integration's events watched for volume, freshness, value and category drift.

Shape drift (``core.drift``) catches a renamed field; these catch the values: a meter that switched from kWh to Wh,
a nursing system filing wound care as medication, a feed that stopped and looks like a quiet night. One
:class:`Monitors` per running integration (per slot) sees every mapped event of every batch (:meth:`observe`, a
few attribute reads and counts per event) and is ticked between batches (:meth:`tick`), so a silent feed is
noticed without events. Time is cut into windows of ``window_seconds`` aligned to the epoch; when a window ends it
is judged against baselines learnt from earlier windows (``core.monitor_stats`` has the checks and their reasons):

- volume: the window's event count against the hourly rates learnt per local hour of the week, in the feed's
  bursts (a hospital sends an encounter's observations at once);
- freshness: silence for longer than the baseline's rates allow (or ``max_silence_seconds``), and the window's
  median lag (arrival minus event time) against its baseline;
- numeric: per contract field and series (a meter's metric, a lab code) the window's quantiles against a band;
- categorical: each code's share of a field; nulls: each watched field's share of missing values.

What is watched comes from the contract (``Contract.monitoring``) unless the integration's ``monitors.fields``
says otherwise; contracts without hints get their ``Literal`` fields as categories and optional scalar fields as
null-watched, but no numeric series (without a series key a median mixes unlike things).

An alert is an ``inlet.data_alert`` event, a log line and a metric when it opens and again when it clears; while
it stays open nothing repeats. Anomalous windows do not feed the baselines, so a drift that persists stays open
until the data returns to normal. Nothing alerts while the integration learns (``learn_seconds`` from its first
run), and a numeric series or a field learns its first windows on its own.

State: :meth:`state` is a JSON-able dict of the baselines, open alerts and learning clock, refreshed at each
window's end and each alert change (:attr:`saved`); :func:`store_state` writes it to the integration's position
store under its own key (:func:`state_key`: ``name@monitors``) when it changed — after a batch's commit, and from
the supervisor's tick — so it survives restarts, kill -9 (as of the last window end) and moves with the
integration inside a fleet, at the cost of one write per window, not one per batch (the state of a meter hub's
4,000 series is ~300 KB). Bounded: at most ``max_series`` numeric series (a new one beyond evicts a tenth of them,
those unseen longest) and :data:`MAX_CATEGORIES` codes per field (the rest counted as ``(other)``). After a restart
the monitors judge from the restart on: the window in progress and the time the supervisor was down are not judged
as a silence or a drop.
"""

from __future__ import annotations

import contextlib
import operator
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import NoneType, UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo

import orjson
import structlog
from prometheus_client import Counter, Gauge

from inlet.contracts.base import Contract, Monitoring
from inlet.contracts.inlet_data_alert import DataAlertV1
from inlet.core import monitor_view
from inlet.core.config import MonitorSettings
from inlet.core.monitor_stats import (
    WINDOW_SAMPLE,
    Band,
    count_moved,
    ewma,
    getter,
    hour_slots,
    index_of_dispersion,
    level_shift,
    quantiles,
    share_dispersion,
    share_moved,
    widened,
)
from inlet.core.positions import PositionStore

__all__ = [
    "ALERTS_OPEN",
    "ALERTS_TOTAL",
    "MAX_CATEGORIES",
    "STATE_SUFFIX",
    "Monitors",
    "default_monitoring",
    "series_name",
    "state_key",
    "store_state",
]

log = structlog.get_logger("inlet.monitors")

ALERTS_OPEN = Gauge("inlet_data_alerts_open", "Data-quality alerts open now", ["customer", "integration", "monitor"])
ALERTS_TOTAL = Counter(
    "inlet_data_alerts_total", "Data-quality alerts opened", ["customer", "integration", "monitor", "check"]
)

STATE_SUFFIX: Final = "@monitors"
"""The monitors' state is stored beside the integration's position, under its name plus this (no slug has ``@``)."""
STATE_FORMAT: Final = 1
MAX_CATEGORIES: Final = 50
"""Distinct codes counted per field and window; more are counted together as ``(other)``."""
OTHER: Final = "(other)"
NONE: Final = "(none)"
LAG_SAMPLE: Final = 256
PARTS: Final = 12
"""A window's count is also kept per twelfth of it, to learn the feed's burstiness within the first week."""
MAX_CATCH_UP_WINDOWS: Final = 24 * 7
"""After a gap longer than this many windows (a stopped process), the windows in between are not judged one by one."""

_ALPHA_SLOT, _ALPHA_RATE, _ALPHA_SERIES, _ALPHA_SHARE, _ALPHA_LAG = 0.3, 0.05, 0.2, 0.1, 0.1
_SLOT_WEEKS = 6  # about the weight of all weeks in an hour's weighted mean at _ALPHA_SLOT
"""Baseline weights: an hour of the week is seen once a week, so it moves fast; the rest drift slowly."""

Check = Literal["volume_drop", "volume_spike", "silence", "lag", "level_shift", "share_change", "null_rate"]
_MONITOR_OF: Final[dict[str, Literal["volume", "freshness", "numeric", "categorical", "nulls"]]] = {
    "volume_drop": "volume",
    "volume_spike": "volume",
    "silence": "freshness",
    "lag": "freshness",
    "level_shift": "numeric",
    "share_change": "categorical",
    "null_rate": "nulls",
}


def state_key(name: str) -> str:
    """The position-store name of an integration's (or slot's) monitor state: ``meters@monitors``."""
    return name + STATE_SUFFIX


async def store_state(monitors: Monitors, store: PositionStore, customer: str, name: str) -> None:
    """Write the monitors' state to ``store`` if it changed since it was last written (once per window at most,
    plus alert changes): durable when this returns."""
    saved = monitors.saved
    if saved is not monitors.stored:
        await store.save(customer, state_key(name), saved)
        monitors.stored = saved


def _scalar(annotation: Any) -> tuple[bool, bool]:
    """(is a ``Literal``, is optional) of a field annotation: what the derived defaults need."""
    args = get_args(annotation)
    optional = get_origin(annotation) in (Union, UnionType) and NoneType in args
    inner = [a for a in args if a is not NoneType] if optional else [annotation]
    return (len(inner) == 1 and get_origin(inner[0]) is Literal), optional


def default_monitoring(model: type[Contract]) -> Monitoring:
    """What the monitors watch on ``model`` without hints: ``Literal`` fields as categories, optional scalar fields
    (default None) as nulls; no numeric series (a series key is the contract author's knowledge)."""
    if model.monitoring is not None:
        return model.monitoring
    categories, nulls = [], []
    for name, info in model.model_fields.items():
        literal, optional = _scalar(info.annotation)
        if literal:
            categories.append(name)
        if optional and info.default is None:
            nulls.append(name)
    return Monitoring(categories=tuple(categories), nulls=tuple(nulls))


@dataclass(slots=True)
class _Series:
    window: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLE))
    band: Band | None = None
    windows: int = 0
    seen: int = 0


@dataclass
class _Shares:
    """Per contract field: the window's counts by code (or null / present) and the baseline shares."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    base: dict[str, float] = field(default_factory=dict)
    windows: int = 0
    dispersion: float | None = None  # how much more shares stray than independent events would (>= 1 used)


@dataclass
class _Plan:
    """What to read from the events of one contract class (built once per class)."""

    contract: str
    series: Callable[[Any], str]
    numeric: list[tuple[Callable[[Any], Any], dict[str, _Series]]]
    categories: list[tuple[Callable[[Any], Any], _Shares]]
    nulls: list[tuple[Callable[[Any], Any], _Shares]]


def _series_of(model: type[Contract], paths: Sequence[str]) -> Callable[[Any], Any]:
    """The series key of an event: the values of ``paths`` (one value, or a tuple of several), kept as they are on
    the hot path (a tuple of fields is cheaper than a string); :func:`series_name` writes it for people."""
    if not paths:
        return lambda model: None
    if all(p in model.model_fields for p in paths):  # declared fields: always present, read in C
        return operator.attrgetter(*paths)
    reads = [getter(p) for p in paths]
    if len(reads) == 1:
        return reads[0]
    return lambda model: tuple(r(model) for r in reads)


def series_name(key: Any) -> str:
    """A series key as people read it: ``m1/energy_total/-/import`` (``-`` for a missing part; ``*``: the one
    series of a field watched without a series key)."""
    if key is None:
        return "*"
    if type(key) is tuple:
        return "/".join("-" if v is None else str(v) for v in key)
    return str(key)


def _key_json(key: Any) -> str:
    return orjson.dumps(list(key) if type(key) is tuple else [key]).decode()


def _key_from_json(text: str) -> Any:
    values = orjson.loads(text)
    return values[0] if len(values) == 1 else tuple(values)


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Monitors:
    """The monitors of one running integration (or slot). Not thread-safe: the integration's task owns it."""

    def __init__(
        self,
        customer: str,
        integration: str,
        settings: MonitorSettings,
        *,
        zone: str | None = None,
        state: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.customer, self.integration, self.settings, self.clock = customer, integration, settings, clock
        self.zone = ZoneInfo(zone or "UTC")
        self._namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"inlet:monitors:{customer}/{integration}")
        self._slots: dict[int, int] = {}
        self._plans: dict[type, _Plan] = {}
        self.numeric: dict[str, dict[Any, _Series]] = {}  # "contract|field" -> series key -> series
        self.series_count = 0
        self.shares: dict[str, _Shares] = {}  # "categorical|contract|field" or "nulls|contract|field"
        self.started_at: float | None = None
        self.window: int | None = None
        self.partial: int | None = None  # a window not watched from its start: its volume is not judged
        self.count = 0
        self.last_event_at: float | None = None
        self.slot_rate: dict[int, float] = {}
        self.slot_n: dict[int, int] = {}  # weeks learnt per hour of the week (capped: the rate is a weighted mean)
        self.rate: float | None = None
        self.burst: float | None = None  # variance / mean of the counts of a window's twelfths (1: Poisson)
        self.parts = [0] * PARTS
        self.hourly: dict[int, int] = {}  # the window's events per real hour (Unix seconds // 3600)
        self.lags: deque[float] = deque(maxlen=LAG_SAMPLE)
        self.lag_base: float | None = None
        self.open: dict[str, DataAlertV1] = {}
        self._out: list[DataAlertV1] = []
        if state is not None:
            self._restore(state)
        self.saved: dict[str, Any] = self.state()
        """The state as of the last window end or alert change (a new dict each time: :func:`store_state`)."""
        self.stored: dict[str, Any] | None = self.saved if state is not None else None
        """The ``saved`` last written to the position store."""

    # --- the hot path ---------------------------------------------------------------------------------------------

    def observe(self, models: Sequence[Contract], now: float | None = None) -> list[DataAlertV1]:
        """Count a batch's mapped events (primary majors only); the alerts a window ending now opened or cleared."""
        now = self.clock() if now is None else now
        self._roll(now)
        if not models:
            return self._drain()
        self.count += len(models)
        hour = int(now // 3600)
        self.hourly[hour] = self.hourly.get(hour, 0) + len(models)
        if self.window is not None:  # which twelfth of the window: how bursty the feed is within it
            self.parts[min(PARTS - 1, int((now / self.settings.window_seconds - self.window) * PARTS))] += len(models)
        self.last_event_at = now
        if "silence" in self.open:
            self._judge("silence", False, 0.0, float(len(models)), now, now, now, "events came again")
        plans, lags = self._plans, self.lags
        for model in models:
            plan = plans.get(type(model)) or self._plan(type(model))
            when = model.occurred_at()
            if when is not None:
                lags.append(now - when.timestamp())
            if plan.numeric:
                key = plan.series(model)
                for read, series in plan.numeric:
                    value = read(model)
                    if value is None or value is True or value is False:
                        continue
                    try:
                        x = float(value)
                    except (TypeError, ValueError):  # a string value where numbers are watched: not a number
                        continue
                    s = series.get(key)
                    if s is None:
                        s = self._new_series(series, key)
                    s.window.append(x)
            for read, shares in plan.categories:
                value = read(model)
                counts = shares.counts
                if type(value) is str and value in counts:  # the common case, inline
                    counts[value] += 1
                    shares.total += 1
                elif type(value) is list:
                    for v in value or (NONE,):
                        self._count(shares, v)
                else:
                    self._count(shares, NONE if value is None else value)
            for read, shares in plan.nulls:
                value = read(model)
                shares.total += 1
                if value is None or (type(value) is list and not value):
                    shares.counts["null"] = shares.counts.get("null", 0) + 1
        return self._drain()

    @staticmethod
    def _count(shares: _Shares, value: Any) -> None:
        code = value if type(value) is str else str(value)
        counts = shares.counts
        if code not in counts and len(counts) >= MAX_CATEGORIES:
            code = OTHER
        counts[code] = counts.get(code, 0) + 1
        shares.total += 1

    def tick(self, now: float | None = None) -> list[DataAlertV1]:
        """Between batches: end the windows that are over and judge silence; the alerts that opened or cleared."""
        now = self.clock() if now is None else now
        self._roll(now)
        self._silence(now)
        return self._drain()

    # --- plans ----------------------------------------------------------------------------------------------------

    def _plan(self, model: type[Contract]) -> _Plan:
        name = model.contract_name
        hints = default_monitoring(model)
        override = self.settings.fields.get(name)
        s = self.settings

        def pick(default: tuple[str, ...], given: list[str] | None) -> tuple[str, ...]:
            return tuple(given) if given is not None else default

        numeric = pick(hints.numeric, override.numeric if override else None) if s.numeric else ()
        series = pick(hints.series, override.series if override else None)
        categories = pick(hints.categories, override.categories if override else None) if s.categorical else ()
        nulls = pick(hints.nulls, override.nulls if override else None) if s.nulls else ()
        plan = _Plan(
            contract=name,
            series=_series_of(model, series),
            numeric=[(getter(f, model), self.numeric.setdefault(f"{name}|{f}", {})) for f in numeric],
            categories=[
                (getter(f, model), self.shares.setdefault(f"categorical|{name}|{f}", _Shares())) for f in categories
            ],
            nulls=[(getter(f, model), self.shares.setdefault(f"nulls|{name}|{f}", _Shares())) for f in nulls],
        )
        self._plans[model] = plan
        return plan

    def _new_series(self, series: dict[str, _Series], key: str) -> _Series:
        if self.series_count >= self.settings.max_series:
            self._evict()
        self.series_count += 1
        s = series[key] = _Series(seen=self.window or 0)
        return s

    def _evict(self) -> None:
        """Drop the tenth of the series unseen longest: one sort per tenth of the cap, not a scan per new series."""
        kept = [(one.seen, i, m, k) for i, m in enumerate(self.numeric.values()) for k, one in m.items()]
        kept.sort(key=lambda entry: (entry[0], entry[1]))
        for _, _, m, k in kept[: max(1, self.settings.max_series // 10)]:
            del m[k]
        self.series_count = sum(len(m) for m in self.numeric.values())

    # --- windows --------------------------------------------------------------------------------------------------

    def _roll(self, now: float) -> None:
        size = self.settings.window_seconds
        index = int(now // size)
        if self.started_at is None:
            self.started_at = now
        if self.window is None:
            self.window = index
            self.partial = index
            return
        if index - self.window > MAX_CATCH_UP_WINDOWS:
            self.window = index - MAX_CATCH_UP_WINDOWS
        while self.window < index:
            self._close(self.window, now)
            self.window += 1
        # (the pipeline stores ``saved`` with each position; refreshed here, at most once per window)

    def _learning(self, end: float) -> bool:
        assert self.started_at is not None
        return end <= self.started_at + self.settings.learn_seconds

    def expected(self, start: float, end: float) -> float | None:
        """The events ``[start, end)`` normally brings, from the hours of the week learnt so far; None before any.
        An hour of the week never seen counts nothing: a Sunday night is only judged once a Sunday night is known."""
        if not self.slot_rate:
            return None
        rates = self.slot_rate
        return sum(
            rates.get(slot, 0.0) * seconds / 3600 for _, slot, seconds in hour_slots(start, end, self.zone, self._slots)
        )

    def _close(self, index: int, now: float) -> None:
        s = self.settings
        start = index * s.window_seconds
        end = start + s.window_seconds
        learning = self._learning(end)
        if index != self.partial:  # the rates are learnt with volume judged or not: silence needs them too
            self._volume(start, end, now, learning or not s.volume)
        if s.freshness:
            self._lag(start, end, now, learning)
        for name, series in self.numeric.items():
            contract, fname = name.split("|", 1)
            for key, one in series.items():
                if len(one.window) >= s.numeric_min_count:
                    self._numeric(contract, fname, key, one, start, end, now, learning)
                    one.seen = index
                one.window.clear()
        for name, shares in self.shares.items():
            if shares.total >= s.share_min_count:
                kind, contract, fname = name.split("|", 2)
                if kind == "nulls":
                    self._nulls(contract, fname, shares, start, end, now, learning)
                else:
                    self._categories(contract, fname, shares, start, end, now, learning)
            shares.counts, shares.total = {}, 0
        self.count, self.parts, self.hourly = 0, [0] * PARTS, {}
        self.saved = self.state()

    def _volume(self, start: float, end: float, now: float, learning: bool) -> None:
        s, seen = self.settings, float(self.count)
        slots = hour_slots(start, end, self.zone, self._slots)
        learnt = min((self.slot_n.get(slot, 0) for _, slot, _ in slots), default=0)  # weeks behind each hour of it
        known = learnt > 0
        expected = self.expected(start, end)
        low = high = False
        if expected is not None and known and not learning:
            low, high = count_moved(seen, expected, self.burst or 1.0, s, learnt)
            exp = round(expected, 1)
            detail = f"{seen:.0f} events where {exp} were expected"
            self._judge("volume_drop", low, exp, seen, start, end, now, detail)
            self._judge("volume_spike", high, exp, seen, start, end, now, detail)
        if not (low or high):
            if seen >= PARTS:  # from the first week on: a hospital sends an encounter's observations at once
                self.burst = ewma(self.burst, index_of_dispersion(self.parts), _ALPHA_RATE)
            for hour, slot, seconds in slots:  # each hour's own count: a day's window keeps its office hours
                per_hour = self.hourly.get(hour, 0) * 3600 / seconds
                self.slot_rate[slot] = ewma(self.slot_rate.get(slot), per_hour, _ALPHA_SLOT)
                self.slot_n[slot] = min(self.slot_n.get(slot, 0) + 1, _SLOT_WEEKS)
            self.rate = ewma(self.rate, seen * 3600 / s.window_seconds, _ALPHA_RATE)

    def _silence(self, now: float) -> None:
        s = self.settings
        if not s.freshness or self.started_at is None or self._learning(now):
            return
        since = self.last_event_at if self.last_event_at is not None else self.started_at
        silent = now - since
        expected = self.expected(since, now) or 0.0
        bursts = expected / max(self.burst or 1.0, 1.0)  # a bursty feed's gaps are longer
        stalled = (s.max_silence_seconds is not None and silent > s.max_silence_seconds) or (
            bursts >= s.silence_expected_events and silent >= s.window_seconds / 2
        )
        if stalled or "silence" in self.open:
            detail = f"no events for {silent:.0f} s, where {expected:.1f} were expected"
            self._judge("silence", stalled, round(expected, 1), 0.0, since, now, now, detail)

    def _lag(self, start: float, end: float, now: float, learning: bool) -> None:
        s, lags = self.settings, self.lags
        if len(lags) < s.numeric_min_count:
            lags.clear()
            return
        median = quantiles(lags)[2]
        lags.clear()
        base = self.lag_base
        late = False
        if base is not None and not learning:
            late = median > max(s.lag_factor * max(base, 0.0), base + s.lag_min_seconds)
            detail = f"events arrive a median {median:.0f} s after they happened, normally {base:.0f} s"
            self._judge("lag", late, round(base, 3), round(median, 3), start, end, now, detail)
        if not late:
            self.lag_base = ewma(base, median, _ALPHA_LAG)

    def _numeric(
        self, contract: str, fname: str, key: str, one: _Series, start: float, end: float, now: float, learning: bool
    ) -> None:
        s = self.settings
        q = quantiles(one.window)
        shifted = False
        if one.band is not None and one.windows >= 2 and not learning:
            shifted = level_shift(q, one.band, s.level_ratio, s.shift_scale)
            base, lo, hi = one.band
            detail = f"median {q[2]:.6g} where {base:.6g} (5-95 %: {lo:.6g} to {hi:.6g}) is normal"
            self._judge("level_shift", shifted, base, q[2], start, end, now, detail, contract, fname, series_name(key))
        if not shifted:
            one.band = widened(one.band, q, _ALPHA_SERIES)
            one.windows += 1

    def _categories(
        self, contract: str, fname: str, shares: _Shares, start: float, end: float, now: float, learning: bool
    ) -> None:
        s, total = self.settings, shares.total
        seen = {code: n / total for code, n in shares.counts.items()}
        moved = False
        if shares.windows and not learning:
            prefix = f"share_change|{contract}|{fname}|"
            codes = set(seen) | set(shares.base) | {k[len(prefix) :] for k in self.open if k.startswith(prefix)}
            for code in sorted(codes):
                now_share, base = seen.get(code, 0.0), shares.base.get(code, 0.0)
                bad = share_moved(now_share, total, base, s.share_change, s.share_sigmas, shares.dispersion)
                moved = moved or bad
                detail = f"{code!r} is {now_share:.1%} of {total} events where {base:.1%} is normal"
                self._judge("share_change", bad, round(base, 4), round(now_share, 4), start, end, now, detail,
                            contract, fname, code)  # fmt: skip
        if not moved:
            self._learn_shares(shares, seen, total)

    def _nulls(
        self, contract: str, fname: str, shares: _Shares, start: float, end: float, now: float, learning: bool
    ) -> None:
        s, total = self.settings, shares.total
        rate = shares.counts.get("null", 0) / total
        base = shares.base.get("null", 0.0)
        rose = False
        if shares.windows and not learning:
            rose = rate > base and share_moved(rate, total, base, s.share_change, s.share_sigmas, shares.dispersion)
            detail = f"missing in {rate:.1%} of {total} events where {base:.1%} is normal"
            self._judge("null_rate", rose, round(base, 4), round(rate, 4), start, end, now, detail, contract, fname)
        if not rose:
            self._learn_shares(shares, {"null": rate, "present": 1.0 - rate}, total)

    @staticmethod
    def _learn_shares(shares: _Shares, seen: dict[str, float], total: int) -> None:
        if not shares.windows:
            shares.base = dict(seen)
        else:
            base = shares.base
            # Clipped: a window the drift began in (not judged anomalous yet) must not widen the tolerance at once.
            sample = min(share_dispersion(seen, base, total), 4.0 * max(shares.dispersion or 1.0, 1.0))
            shares.dispersion = ewma(shares.dispersion, sample, _ALPHA_RATE)
            for code in set(base) | set(seen):
                share = ewma(base.get(code, 0.0), seen.get(code, 0.0), _ALPHA_SHARE)
                if share < 0.0005 and code not in seen:
                    del base[code]
                else:
                    base[code] = share
        shares.windows += 1

    # --- alerts ---------------------------------------------------------------------------------------------------

    def _judge(
        self,
        check: Check,
        bad: bool,
        expected: float,
        seen: float,
        start: float,
        end: float,
        now: float,
        detail: str,
        contract: str | None = None,
        fname: str | None = None,
        series: str | None = None,
    ) -> None:
        key = check if contract is None else "|".join((check, contract, fname or "", series or ""))
        current = self.open.get(key)
        if bad and current is None:
            window = "" if self.window is None else str(self.window)
            monitor = _MONITOR_OF[check]
            alert = DataAlertV1(
                alert_id=str(uuid.uuid5(self._namespace, f"{key}|{window}")),
                status="open",
                customer=self.customer,
                integration=self.integration,
                monitor=monitor,
                check=check,
                contract=contract,
                field=fname,
                series=series,
                measure=_MEASURE[check],
                expected=expected,
                seen=seen,
                window_start=_iso(start),
                window_end=_iso(end),
                observed_at=_iso(now),
                detail=detail[:1000],
            )
            self.open[key] = alert
            self._out.append(alert)
            ALERTS_TOTAL.labels(self.customer, self.integration, monitor, check).inc()
            log.warning("data alert opened", customer=self.customer, integration=self.integration,
                        **_log_fields(alert))  # fmt: skip
        elif not bad and current is not None:
            cleared = current.model_copy(
                update={
                    "status": "cleared",
                    "seen": seen,
                    "window_start": _iso(start),
                    "window_end": _iso(end),
                    "observed_at": _iso(now),
                    "detail": f"back to normal: {detail}"[:1000],
                }
            )
            del self.open[key]
            self._out.append(cleared)
            log.info("data alert cleared", customer=self.customer, integration=self.integration,
                     **_log_fields(cleared))  # fmt: skip
        else:  # still open (not repeated), or still normal
            return
        self._gauges()
        self.saved = self.state()

    def _gauges(self) -> None:
        counts = dict.fromkeys(("volume", "freshness", "numeric", "categorical", "nulls"), 0)
        for alert in self.open.values():
            counts[alert.monitor] += 1
        for monitor, n in counts.items():
            ALERTS_OPEN.labels(self.customer, self.integration, monitor).set(n)

    def reset(self, now: float | None = None) -> list[DataAlertV1]:
        """Forget every baseline and learn again from now (an operator's ``inlet monitors --reset``: the change was
        intended, a meter replaced, a new code system); the open alerts clear, saying so. Never automatic: a drift
        that persists is exactly what must not quietly become the normal."""
        now = self.clock() if now is None else now
        for alert in list(self.open.values()):
            start, why = alert.window_start.timestamp(), "baselines reset by an operator"
            self._judge(alert.check, False, alert.expected, alert.seen, start, now, now, why,
                        alert.contract, alert.field, alert.series)  # fmt: skip
        self.numeric, self.shares, self._plans, self.series_count = {}, {}, {}, 0
        self.slot_rate, self.rate, self.lag_base, self.burst = {}, None, None, None
        self.slot_n = {}
        self.lags.clear()
        self.started_at, self.window, self.count = now, None, 0
        self.saved = self.state()
        return self._drain()

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """Each monitor's baseline and current window (``core.monitor_view``)."""
        return monitor_view.describe(self, self.clock() if now is None else now)

    def forget_metrics(self) -> None:
        """Drop this integration's open-alert gauges (it stopped running here: another replica reports it)."""
        for monitor in ("volume", "freshness", "numeric", "categorical", "nulls"):
            with contextlib.suppress(KeyError):  # never set here
                ALERTS_OPEN.remove(self.customer, self.integration, monitor)

    def _drain(self) -> list[DataAlertV1]:
        out, self._out = self._out, []
        return out

    # --- state ----------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Baselines, open alerts and the learning clock as JSON-able values (no window in progress)."""
        return {
            "format": STATE_FORMAT,
            "started_at": self.started_at,
            "last_event_at": self.last_event_at,
            "slot_rate": {str(k): [round(v, 4), self.slot_n.get(k, 0)] for k, v in self.slot_rate.items()},
            "rate": self.rate,
            "burst": self.burst,
            "lag_base": self.lag_base,
            "numeric": {
                name: {
                    _key_json(k): [*one.band, one.windows, one.seen]
                    for k, one in series.items()
                    if one.band is not None
                }
                for name, series in self.numeric.items()
            },
            "shares": {name: [sh.base, sh.windows, sh.dispersion] for name, sh in self.shares.items() if sh.windows},
            "open": {key: alert.model_dump(mode="json") for key, alert in self.open.items()},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            log.warning("monitor state of another format ignored; learning again", format=state.get("format"))
            return
        self.started_at = state["started_at"]
        # The time the supervisor was down is no silence of the feed's: judged from the restart on.
        self.last_event_at = None if state["last_event_at"] is None else max(state["last_event_at"], self.clock())
        self.slot_rate = {int(k): float(v[0]) for k, v in state["slot_rate"].items()}
        self.slot_n = {int(k): int(v[1]) for k, v in state["slot_rate"].items()}
        self.rate, self.lag_base = state["rate"], state["lag_base"]
        self.burst = state["burst"]
        for name, series in state["numeric"].items():
            self.numeric[name] = {
                _key_from_json(k): _Series(band=(v[0], v[1], v[2]), windows=int(v[3]), seen=int(v[4]))
                for k, v in series.items()
            }
        for name, (base, windows, dispersion) in state["shares"].items():
            self.shares[name] = _Shares(base=dict(base), windows=int(windows), dispersion=dispersion)
        self.open = {key: DataAlertV1.model_validate(a) for key, a in state["open"].items()}
        self._gauges()
        self.series_count = sum(len(m) for m in self.numeric.values())

    # --- for people -----------------------------------------------------------------------------------------------


_MEASURE: Final[dict[str, Literal["events", "seconds", "value", "share"]]] = {
    "volume_drop": "events",
    "volume_spike": "events",
    "silence": "events",
    "lag": "seconds",
    "level_shift": "value",
    "share_change": "share",
    "null_rate": "share",
}


def _log_fields(alert: DataAlertV1) -> dict[str, Any]:
    fields = alert.model_dump(
        include={"alert_id", "monitor", "check", "contract", "field", "series", "expected", "seen", "detail"}
    )
    fields["window"] = f"{alert.window_start.isoformat()}/{alert.window_end.isoformat()}"
    return {k: v for k, v in fields.items() if v is not None}
