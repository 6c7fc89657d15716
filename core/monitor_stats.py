"""The statistics behind the data-quality monitors (``core.monitors``): pure functions, no state of their own.

Why no library: the monitors judge *windows* against baselines, so all an event costs is appending a number to a
bounded list or counting a code; the statistics run once per window and series. Measured on this project's
machine: an Apache DataSketches KLL update costs 1.2 µs per value against 0.06 µs for a list append, and its
frequent-items sketch 0.17 µs against 0.12 µs for a dict count; a KLL sketch serialises to ~2.4 KB per series
where a baseline here is five numbers, which matters because baselines ride with the positions. With at most
:data:`WINDOW_SAMPLE` values per series and window the quantiles are exact, so a sketch's error bound buys nothing.

The checks, with their reasons (docs/monitors.md):

- volume (:func:`count_moved`): the expected count of a window is the sum, over the real hours it covers, of the
  learnt hourly rate of that hour *of the local week* (:func:`hour_slots`): a Sunday night expects a Sunday night;
  a 23- or 25-hour local day is 23 or 25 real hours, each judged against its own local hour, so DST days are no
  anomaly. Counts are judged in the feed's bursts (:func:`index_of_dispersion`), so a hospital that sends an
  encounter's observations at once is not held to a meter hub's regularity;
- numeric (:func:`level_shift`): a window's median against a baseline band (medians, 5th and 95th percentiles of
  earlier windows, exponentially weighted): a unit x1000 moves the median by three orders of magnitude and its
  middle half out of the band; a sign flip or a move across zero moves it by a multiple of the baseline's magnitude;
- shares (:func:`share_moved`): a code's (or null's) share of a window against its baseline share, alerting only
  when the move is both large (``share_change``) and far beyond chance at the window's count (``share_sigmas``
  standard errors), so small windows do not cry wolf.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = [
    "WINDOW_SAMPLE",
    "Band",
    "count_moved",
    "ewma",
    "getter",
    "hour_slots",
    "index_of_dispersion",
    "level_shift",
    "quantiles",
    "share_dispersion",
    "share_moved",
    "widened",
]

WINDOW_SAMPLE: Final = 64
"""Values kept per numeric series and window (the last ones: a shift that starts mid-window shows at its end)."""

_HOUR: Final = 3600

Band = tuple[float, float, float]
"""A numeric baseline: (median, 5th percentile, 95th percentile), exponentially weighted over windows."""


def ewma(old: float | None, new: float, alpha: float) -> float:
    """Exponentially weighted mean; the first value is taken as it is."""
    return new if old is None else old + alpha * (new - old)


def quantiles(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """5th, 25th, 50th, 75th and 95th percentiles (nearest rank on the sorted values; ``values`` not empty)."""
    s = sorted(values)
    n = len(s) - 1
    return s[round(0.05 * n)], s[round(0.25 * n)], s[round(0.5 * n)], s[round(0.75 * n)], s[round(0.95 * n)]


def level_shift(window: tuple[float, float, float, float, float], band: Band, ratio: float, scale: float) -> bool:
    """Whether a window's quantiles left a series' baseline band.

    Either the median moved by ``ratio`` or more (same sign; a unit x1000 or /1000) *and* the window's middle half
    lies wholly outside the baseline's 5th-95th percentile band (a series that naturally spans decades, standby
    watts and full load, keeps its middle half inside); or the middle half took the other sign of a series that
    never changed sign (import booked as export); or the median moved by ``scale`` times the baseline's magnitude
    or more (a jump across zero, where a ratio means nothing)."""
    _, p25, median, p75, _ = window
    base, lo, hi = band
    magnitude = max(abs(lo), abs(hi), hi - lo)
    if magnitude == 0.0:
        return median != base and p25 == p75  # a constant series that settled on another constant
    if abs(median - base) >= scale * magnitude:
        return True
    if (lo > 0.0 and p75 < 0.0) or (hi < 0.0 and p25 > 0.0):  # a sign flip of a one-signed series
        return True
    if base == 0.0 or median == 0.0 or (base > 0) != (median > 0):
        return False
    moved = abs(math.log10(abs(median) / abs(base))) >= math.log10(ratio)
    return moved and (p25 > hi or p75 < lo)


def count_moved(
    seen: float, expected: float, dispersion: float, settings: Any, learnt: float = float("inf")
) -> tuple[bool, bool]:
    """(a drop, a spike): a window's count against its expected count. Both need the ratio (``volume_low_ratio``,
    ``volume_high_ratio``) *and* a move of ``volume_sigmas`` on the count's own scale: the events are taken to come
    in bursts of ``dispersion`` (variance over mean, at least 1: a Poisson feed), the bursts to be Poisson, and
    the burst counts compared through Anscombe's square-root transform (near-normal with variance 1 even for a
    handful of bursts, so a skewed right tail is not mistaken for a spike); ``learnt`` weeks of baseline add the
    expected count's own uncertainty (one week: the difference of two counts). A hospital feed sends an encounter's
    ten observations at once: its hourly counts stray ten times more than a meter hub's, and a 90 % drop of a
    steady meter hub is dozens of deviations while a quiet hour of the hospital is none."""
    s = settings
    burst = max(dispersion, 1.0)

    def z(expected: float) -> float:
        moved = math.sqrt(seen / burst + 0.375) - math.sqrt(expected / burst + 0.375)
        return 2.0 * moved / math.sqrt(1.0 + 1.0 / learnt)

    floor = s.volume_min_expected
    drop = expected >= floor and seen < expected * s.volume_low_ratio and z(expected) <= -s.volume_sigmas
    # A spike against at least ``volume_min_expected``: an hour learnt empty from one week says little.
    spike = seen >= floor and seen > expected * s.volume_high_ratio and z(max(expected, floor)) >= s.volume_sigmas
    return drop, spike


def index_of_dispersion(counts: Sequence[int]) -> float:
    """Variance over mean of counts (1 for a Poisson feed, ~10 for one that sends ten events at a time)."""
    mean = sum(counts) / len(counts)
    if mean == 0:
        return 1.0
    return sum((c - mean) ** 2 for c in counts) / (len(counts) - 1) / mean


def _share_var(base: float, count: int) -> float:
    """A binomial share's variance at ``count`` events, the share held away from 0 and 1 by one event (a code
    never seen that appears once in a small window is chance; in a large window it is a finding)."""
    p = min(max(base, 1.0 / count), 1.0 - 1.0 / count) if count > 1 else 0.5
    return p * (1.0 - p) / count


def share_moved(seen: float, count: int, base: float, change: float, sigmas: float, dispersion: float | None) -> bool:
    """Whether a share seen in ``count`` events moved from its baseline by ``change`` or more *and* by ``sigmas``
    standard errors: of a binomial share times the field's learnt ``dispersion`` (a lab sends a panel's five
    results at once, so shares of a hospital feed stray more than independent events would)."""
    delta = abs(seen - base)
    if delta < change:
        return False
    return delta >= sigmas * math.sqrt(max(dispersion or 1.0, 1.0) * _share_var(base, count))


def share_dispersion(seen: dict[str, float], base: dict[str, float], count: int) -> float:
    """How far a normal window's shares strayed from the baseline, in binomial variances (mean over the codes):
    what :func:`share_moved` scales its standard errors by."""
    codes = set(seen) | set(base)
    if not codes:
        return 1.0
    return sum((seen.get(c, 0.0) - base.get(c, 0.0)) ** 2 / _share_var(base.get(c, 0.0), count) for c in codes) / len(
        codes
    )


def widened(band: Band | None, window: tuple[float, float, float, float, float], alpha: float) -> Band:
    """A series' band after a normal window: the median follows (weight ``alpha``); the 5th-95th percentile band
    widens as fast (towards a window's lower p05 or higher p95) and narrows ten times slower, so it spans what the
    series does over days (a solar inverter at noon and at dusk), not just the last hours. Not at once: a window
    half of which already drifted must not stretch the band over the drift."""
    p05, _, median, _, p95 = window
    if band is None:
        return (median, p05, p95)
    base, lo, hi = band
    return (
        ewma(base, median, alpha),
        ewma(lo, p05, alpha if p05 < lo else alpha / 10),
        ewma(hi, p95, alpha if p95 > hi else alpha / 10),
    )


def hour_slots(start: float, end: float, zone: ZoneInfo, cache: dict[int, int]) -> list[tuple[int, int, float]]:
    """The real hours ``[start, end)`` covers, as ``(hour, slot, seconds)``: hour = Unix seconds // 3600, slot =
    weekday * 24 + hour in ``zone`` (Monday 0). Real hours are walked, so a DST day yields 23 or 25 of them. ``cache``
    maps an hour to its slot: zone conversions are paid once per hour, not per window or event."""
    out: list[tuple[int, int, float]] = []
    t = start
    while t < end:
        hour = int(t // _HOUR)
        slot = cache.get(hour)
        if slot is None:
            local = datetime.fromtimestamp(hour * _HOUR, UTC).astimezone(zone)
            slot = cache[hour] = local.weekday() * 24 + local.hour
        nxt = min(end, (hour + 1) * _HOUR)
        out.append((hour, slot, nxt - t))
        t = nxt
    return out


def getter(path: str, model: Any = None) -> Callable[[Any], Any]:
    """A function reading ``path`` from a model: dotted attributes, ``name[0]`` a list's first item, ``name[]``
    every item (a list back). A missing attribute or item reads as None: the field is absent on that event.
    A declared field of ``model`` (a pydantic class) is read in C: it is always there."""
    if model is not None and path in getattr(model, "model_fields", ()):
        return operator.attrgetter(path)
    parts = path.split(".")
    if all("[" not in p for p in parts):
        read = operator.attrgetter(path)

        def plain(model: Any) -> Any:
            try:
                return read(model)
            except AttributeError:  # an optional part left out (``value`` None) or another member of a union
                return None

        return plain
    if "[]" not in path:  # attributes and fixed indexes: a chain of C getters (``code[0].code``)
        ops: list[Callable[[Any], Any]] = []
        for part in parts:
            name, _, index = part.partition("[")
            ops.append(operator.attrgetter(name))
            if index:
                ops.append(operator.itemgetter(int(index.rstrip("]"))))

        def chain(model: Any) -> Any:
            value = model
            try:
                for op in ops:
                    value = op(value)
            except (AttributeError, IndexError, TypeError):  # a missing part, an empty list, a None on the way
                return None
            return value

        return chain
    steps: list[tuple[str, str | None]] = []
    for part in parts:
        name, _, index = part.partition("[")
        steps.append((name, index.rstrip("]") if index else None))

    def walk(model: Any) -> Any:
        values: list[Any] = [model]
        many = False
        for name, index in steps:
            nxt: list[Any] = []
            for v in values:
                item = getattr(v, name, None)
                if item is None:
                    continue
                if index is None:
                    nxt.append(item)
                elif index == "":
                    many = True
                    nxt.extend(item)
                elif len(item) > int(index):
                    nxt.append(item[int(index)])
            values = nxt
        if many:
            return values
        return values[0] if values else None

    return walk
