"""The statistics behind the data-quality monitors (``core.monitors``): pure functions, no state of their own.

Why no library: the monitors judge *windows* against baselines, so all an event costs is appending a number to a
bounded list or counting a code; the statistics run once per window and series. Measured on this project's
machine: an Apache DataSketches KLL update costs 1.2 µs per value against 0.06 µs for a list append, and its
frequent-items sketch 0.17 µs against 0.12 µs for a dict count; a KLL sketch serialises to ~2.4 KB per series
where a baseline here is five numbers, which matters because baselines ride with the positions. With at most
:data:`WINDOW_SAMPLE` values per series and window the quantiles are exact, so a sketch's error bound buys nothing.

The checks, with their reasons (docs/monitors.md):

- volume: the expected count of a window is the sum, over the real hours it covers, of the learnt hourly rate of
  that hour *of the local week* (:func:`hour_slots`): a Sunday night expects a Sunday night; a 23- or 25-hour
  local day is 23 or 25 real hours, each judged against its own local hour, so DST days are no anomaly;
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
    "ewma",
    "getter",
    "hour_slots",
    "level_shift",
    "quantiles",
    "share_moved",
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
    watts and full load, keeps its middle half inside); or the median moved by ``scale`` times the baseline's
    magnitude or more (a sign flip, a jump across zero, where a ratio means nothing)."""
    _, p25, median, p75, _ = window
    base, lo, hi = band
    magnitude = max(abs(lo), abs(hi), hi - lo)
    if magnitude == 0.0:
        return median != base and p25 == p75  # a constant series that settled on another constant
    if abs(median - base) >= scale * magnitude:
        return True
    if base == 0.0 or median == 0.0 or (base > 0) != (median > 0):
        return False
    moved = abs(math.log10(abs(median) / abs(base))) >= math.log10(ratio)
    return moved and (p25 > hi or p75 < lo)


def share_moved(seen: float, count: int, base: float, change: float, sigmas: float) -> bool:
    """Whether a share seen in ``count`` events moved from its baseline by ``change`` or more *and* by ``sigmas``
    standard errors of a binomial share (the baseline held away from 0 and 1 by one event, so a never-seen code
    appearing in one event of a small window is chance, in a large window a finding)."""
    delta = abs(seen - base)
    if delta < change:
        return False
    p = min(max(base, 1.0 / count), 1.0 - 1.0 / count) if count > 1 else 0.5
    return delta >= sigmas * math.sqrt(p * (1.0 - p) / count)


def hour_slots(start: float, end: float, zone: ZoneInfo, cache: dict[int, int]) -> list[tuple[int, float]]:
    """The local hours of the week ``[start, end)`` covers, as ``(slot, seconds)``: slot = weekday * 24 + hour in
    ``zone`` (Monday 0). Real hours are walked, so a DST day yields 23 or 25 of them. ``cache`` maps a UTC hour
    (Unix seconds // 3600) to its slot: zone conversions are paid once per hour, not per window or event."""
    out: list[tuple[int, float]] = []
    t = start
    while t < end:
        hour = int(t // _HOUR)
        slot = cache.get(hour)
        if slot is None:
            local = datetime.fromtimestamp(hour * _HOUR, UTC).astimezone(zone)
            slot = cache[hour] = local.weekday() * 24 + local.hour
        nxt = min(end, (hour + 1) * _HOUR)
        out.append((slot, nxt - t))
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
