"""Reading hygiene across messages: duplicates, counters that go backwards, readings that arrive late.

Decoders are pure and see one message; these rules need what came before, per *series* (device, metric,
phase, direction, kind):

- **Duplicates** — the *same reading* again: same series, same device-clock ``measured_at`` **and the same
  value** (Tasmota re-sending a telemetry frame, a Shelly status frame and ``NotifyStatus`` carrying the same
  value) is not emitted again. Readings timed by the receive clock are never duplicates by time: a backlog
  drained after an outage arrives within milliseconds, and that says nothing about the samples. A message
  whose readings are *all* duplicates is filtered with a stated reason (the pipeline counts it); duplicates
  inside an otherwise new message are dropped, counted in ``dropped_duplicates`` and logged by the connector.
- **Time conflicts** — a *different* value at a device time already seen in its series (a clock reset after a
  power cut, a naive-time device in the repeated autumn hour) is not a duplicate: the clock is suspect, so the
  reading is emitted flagged ``clock_suspect`` and counted in ``conflicts`` (the connector's
  ``time_conflicts`` policy may send such a message to the DLQ instead). Never filtered.
- **Counters going backwards** — a cumulative reading below the previous one of its series is a meter reset
  or replacement: flagged ``counter_reset`` and emitted as reported, never turned into negative consumption
  (that is the consumer's decision, with the flag to make it).
- **Late readings** — older than the newest of its series: flagged ``out_of_order``; it does not move the
  series' reference point, so a late counter value does not look like a reset.

The memory is bounded (least-recently-seen series and stamps are forgotten first). It survives a restart as a
snapshot (:meth:`Hygiene.snapshot` / :meth:`Hygiene.restore`) of what the *sink acknowledged*: the connector
folds a message's readings into a second, committed ``Hygiene`` only when the message's PUBACK is due, so a
redelivered message whose first delivery never reached the sink is not mistaken for a duplicate after a crash.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from inlet.contracts.energy_meter_reading import MeterReadingV1

__all__ = ["Hygiene", "Verdict"]

_TO_WH: Final = {"Wh": 1.0, "kWh": 1000.0}

Series = tuple[str, str, str | None, str | None, str]
Value = tuple[float, str]
"""A reading's value as compared for duplicates: quantity and unit (1.2 kWh and 1200 Wh are not merged)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What hygiene made of one message's readings."""

    kept: list[MeterReadingV1]
    duplicates: int
    conflicts: int


class Hygiene:
    """Per-connector memory of the newest reading per series and of recently emitted timestamps."""

    def __init__(self, max_series: int = 50_000, max_stamps: int = 200_000) -> None:
        self.max_series, self.max_stamps = max_series, max_stamps
        self._newest: OrderedDict[Series, tuple[datetime, float | None]] = OrderedDict()
        self._stamps: OrderedDict[tuple[Series, datetime], frozenset[Value]] = OrderedDict()
        self.dropped_duplicates = 0
        self.conflicts = 0

    def apply(self, readings: list[MeterReadingV1]) -> Verdict:
        """The readings to emit (flagged where needed), how many were duplicates and how many time conflicts."""
        out: list[MeterReadingV1] = []
        duplicates = conflicts = 0
        for r in readings:
            series: Series = (r.device_id, r.metric, r.phase, r.direction, r.kind)
            if r.time_source == "device":  # a receive time says nothing about the device's sample
                stamp, value = (series, r.measured_at), (r.quantity, r.unit)
                seen = self._stamps.get(stamp)
                if seen is not None and value in seen:
                    self._stamps.move_to_end(stamp)
                    duplicates += 1
                    continue
                self._remember(stamp, value, seen)
                if seen is not None:
                    conflicts += 1
                    if "clock_suspect" not in r.quality:
                        out.append(self._flag(series, r.model_copy(update={"quality": [*r.quality, "clock_suspect"]})))
                        continue
            out.append(self._flag(series, r))
        if out and duplicates:
            self.dropped_duplicates += duplicates
        self.conflicts += conflicts
        return Verdict(out, duplicates, conflicts)

    def note(self, r: MeterReadingV1) -> None:
        """Remember an emitted reading without judging it (the committed memory of what the sink has)."""
        series: Series = (r.device_id, r.metric, r.phase, r.direction, r.kind)
        if r.time_source == "device":
            stamp = (series, r.measured_at)
            self._remember(stamp, (r.quantity, r.unit), self._stamps.get(stamp))
        newest = self._newest.get(series)
        if newest is None or r.measured_at >= newest[0]:
            self._set_newest(series, r.measured_at, r.quantity * _TO_WH[r.unit] if r.kind == "cumulative" else None)

    def _remember(self, stamp: tuple[Series, datetime], value: Value, seen: frozenset[Value] | None) -> None:
        self._stamps[stamp] = seen | {value} if seen is not None else frozenset((value,))
        self._stamps.move_to_end(stamp)
        if len(self._stamps) > self.max_stamps:
            self._stamps.popitem(last=False)

    def _set_newest(self, series: Series, at: datetime, wh: float | None) -> None:
        self._newest[series] = (at, wh)
        self._newest.move_to_end(series)
        if len(self._newest) > self.max_series:
            self._newest.popitem(last=False)

    # -- surviving a restart ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state, least recently seen first (so a restore keeps the same eviction order)."""
        return {
            "newest": [[*series, at.isoformat(), wh] for series, (at, wh) in self._newest.items()],
            "stamps": [
                [*series, at.isoformat(), [list(v) for v in values]] for (series, at), values in self._stamps.items()
            ],
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (bounded by this instance's limits: the most recent entries win)."""
        for *series, at, wh in doc.get("newest", ())[-self.max_series :]:
            self._set_newest(_series(series), datetime.fromisoformat(at), wh)
        for *series, at, values in doc.get("stamps", ())[-self.max_stamps :]:
            key = (_series(series), datetime.fromisoformat(at))
            self._stamps[key] = frozenset((float(q), str(u)) for q, u in values)
            if len(self._stamps) > self.max_stamps:
                self._stamps.popitem(last=False)

    def _flag(self, series: Series, r: MeterReadingV1) -> MeterReadingV1:
        wh = r.quantity * _TO_WH[r.unit] if r.kind == "cumulative" else None
        newest = self._newest.get(series)
        if newest is not None:
            self._newest.move_to_end(series)
            at, previous = newest
            if r.measured_at < at:
                return r.model_copy(update={"quality": [*r.quality, "out_of_order"]})
            self._set_newest(series, r.measured_at, wh)
            if wh is not None and previous is not None and wh < previous and "counter_reset" not in r.quality:
                return r.model_copy(update={"quality": [*r.quality, "counter_reset"]})
            return r
        self._set_newest(series, r.measured_at, wh)
        return r


def _series(parts: list[Any]) -> Series:
    device, metric, phase, direction, kind = parts
    return (str(device), str(metric), phase, direction, str(kind))
