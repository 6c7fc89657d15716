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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from inlet.contracts.energy_meter_reading import MeterReadingV1

__all__ = ["Hygiene", "Noted", "Verdict"]

_TO_WH: Final = {"Wh": 1.0, "kWh": 1000.0}

Series = tuple[str, str, str | None, str | None, str]
Value = tuple[float, str]
"""A reading's value as compared for duplicates: quantity and unit (1.2 kWh and 1200 Wh are not merged)."""
Seen = Value | frozenset[Value]
"""The values seen at one device time: the one value itself (nearly always), or the set of them after a time
conflict. A bare tuple is what the collector stops tracking; a frozenset it tracks for as long as it lives."""
Newest = tuple[datetime, float | None]
"""A series' newest device time and, for a counter, its value in Wh."""
Noted = tuple[Series, "tuple[Series, datetime] | None", Value, Newest]
"""What the committed memory needs of an emitted reading: series, device-time stamp (None for receive time), value,
and its time with the counter value in Wh. Plain tuples, not the reading: they wait for the PUBACK at no cost to
the collector."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What hygiene made of one message's readings."""

    kept: list[MeterReadingV1]
    duplicates: int
    conflicts: int
    noted: list[Noted] = field(default_factory=list)
    """Per kept reading, what :meth:`Hygiene.commit` remembers once the sink has it."""


class Hygiene:
    """Per-connector memory of the newest reading per series and of recently emitted timestamps."""

    def __init__(self, max_series: int = 50_000, max_stamps: int = 200_000) -> None:
        self.max_series, self.max_stamps = max_series, max_stamps
        self._newest: OrderedDict[Series, Newest] = OrderedDict()
        self._stamps: OrderedDict[tuple[Series, datetime], Seen] = OrderedDict()
        self.dropped_duplicates = 0
        self.conflicts = 0

    def apply(self, readings: list[MeterReadingV1]) -> Verdict:
        """The readings to emit (flagged where needed), how many were duplicates and how many time conflicts."""
        out: list[MeterReadingV1] = []
        noted: list[Noted] = []
        duplicates = conflicts = 0
        stamps, newest_of = self._stamps, self._newest
        for reading in readings:
            r = reading  # flagged below by a copy
            series: Series = (r.device_id, r.metric, r.phase, r.direction, r.kind)
            at, value = r.measured_at, (r.quantity, r.unit)
            stamp = None
            if r.time_source == "device":  # a receive time says nothing about the device's sample
                stamp = (series, at)
                seen = stamps.get(stamp)
                if seen is None:
                    stamps[stamp] = value
                    if len(stamps) > self.max_stamps:
                        stamps.popitem(last=False)
                elif seen == value if isinstance(seen, tuple) else value in seen:
                    stamps.move_to_end(stamp)
                    duplicates += 1
                    continue
                else:
                    stamps[stamp] = _with(seen, value)
                    stamps.move_to_end(stamp)
                    conflicts += 1
                    if "clock_suspect" not in r.quality:
                        r = r.model_copy(update={"quality": [*r.quality, "clock_suspect"]})
            # The series' reference point: flags for a late reading and for a counter that went down.
            wh = r.quantity * _TO_WH[r.unit] if r.kind == "cumulative" else None
            newest = newest_of.get(series)
            entry = (at, wh)
            if newest is None:
                newest_of[series] = entry
                if len(newest_of) > self.max_series:
                    newest_of.popitem(last=False)
            elif at < newest[0]:
                newest_of.move_to_end(series)
                r = r.model_copy(update={"quality": [*r.quality, "out_of_order"]})
            else:
                newest_of[series] = entry
                newest_of.move_to_end(series)
                previous = newest[1]
                if wh is not None and previous is not None and wh < previous and "counter_reset" not in r.quality:
                    r = r.model_copy(update={"quality": [*r.quality, "counter_reset"]})
            out.append(r)
            noted.append((series, stamp, value, entry))
        if out and duplicates:
            self.dropped_duplicates += duplicates
        self.conflicts += conflicts
        return Verdict(out, duplicates, conflicts, noted)

    def note(self, r: MeterReadingV1) -> None:
        """Remember an emitted reading without judging it (the committed memory of what the sink has)."""
        series: Series = (r.device_id, r.metric, r.phase, r.direction, r.kind)
        stamp = (series, r.measured_at) if r.time_source == "device" else None
        wh = r.quantity * _TO_WH[r.unit] if r.kind == "cumulative" else None
        self.commit(((series, stamp, (r.quantity, r.unit), (r.measured_at, wh)),))

    def commit(self, noted: Iterable[Noted]) -> None:
        """:meth:`note` for the readings :meth:`apply` kept, from what its verdict noted of them."""
        stamps, newest_of = self._stamps, self._newest
        for series, stamp, value, entry in noted:
            if stamp is not None:
                self._remember(stamp, value, stamps.get(stamp))
            newest = newest_of.get(series)
            if newest is None or entry[0] >= newest[0]:
                self._set_newest(series, entry)

    def _remember(self, stamp: tuple[Series, datetime], value: Value, seen: Seen | None) -> None:
        self._stamps[stamp] = _with(seen, value) if seen is not None else value
        self._stamps.move_to_end(stamp)
        if len(self._stamps) > self.max_stamps:
            self._stamps.popitem(last=False)

    def _set_newest(self, series: Series, entry: Newest) -> None:
        self._newest[series] = entry
        self._newest.move_to_end(series)
        if len(self._newest) > self.max_series:
            self._newest.popitem(last=False)

    # -- surviving a restart ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state, least recently seen first (so a restore keeps the same eviction order)."""
        return {
            "newest": [[*series, at.isoformat(), wh] for series, (at, wh) in self._newest.items()],
            "stamps": [
                [*series, at.isoformat(), [list(seen)] if isinstance(seen, tuple) else [list(v) for v in seen]]
                for (series, at), seen in self._stamps.items()
            ],
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (bounded by this instance's limits: the most recent entries win)."""
        for *series, at, wh in doc.get("newest", ())[-self.max_series :]:
            self._set_newest(_series(series), (datetime.fromisoformat(at), wh))
        for *series, at, values in doc.get("stamps", ())[-self.max_stamps :]:
            key = (_series(series), datetime.fromisoformat(at))
            seen = frozenset((float(q), str(u)) for q, u in values)
            self._stamps[key] = next(iter(seen)) if len(seen) == 1 else seen
            if len(self._stamps) > self.max_stamps:
                self._stamps.popitem(last=False)


def _with(seen: Seen, value: Value) -> frozenset[Value]:
    """The values seen at a device time, one more added (the set ``frozenset((seen,)) | {value}`` would be)."""
    return (frozenset((seen,)) if isinstance(seen, tuple) else seen) | {value}


def _series(parts: list[Any]) -> Series:
    device, metric, phase, direction, kind = parts
    return (str(device), str(metric), phase, direction, str(kind))
