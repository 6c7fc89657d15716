"""Reading hygiene across messages: duplicates, counters that go backwards, readings that arrive late.

Decoders are pure and see one message; these rules need what came before, per *series* (device, metric,
phase, direction, kind):

- **Duplicates** — a reading with the same series and device-clock ``measured_at`` as one already emitted
  (Tasmota re-sending a telemetry frame, a Shelly status frame and ``NotifyStatus`` carrying the same value)
  is not emitted again. Readings timed by the receive clock are never duplicates by time: a backlog drained
  after an outage arrives within milliseconds, and that says nothing about the samples. A message whose
  readings are *all* duplicates is filtered with a stated reason (the pipeline counts it); duplicates inside
  an otherwise new message are dropped, counted in ``dropped_duplicates`` and logged by the connector.
- **Counters going backwards** — a cumulative reading below the previous one of its series is a meter reset
  or replacement: flagged ``counter_reset`` and emitted as reported, never turned into negative consumption
  (that is the consumer's decision, with the flag to make it).
- **Late readings** — older than the newest of its series: flagged ``out_of_order``; it does not move the
  series' reference point, so a late counter value does not look like a reset.

The memory is bounded (least-recently-seen series and stamps are forgotten first) and per process: after a
restart the first reading of each series has nothing to compare with, and a redelivered message is emitted
again with the same event ids (deterministic ids make that duplicate visible downstream).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Final

from inlet.contracts.energy_meter_reading import MeterReadingV1

__all__ = ["Hygiene"]

_TO_WH: Final = {"Wh": 1.0, "kWh": 1000.0}

Series = tuple[str, str, str | None, str | None, str]


class Hygiene:
    """Per-connector memory of the newest reading per series and of recently emitted timestamps."""

    def __init__(self, max_series: int = 50_000, max_stamps: int = 200_000) -> None:
        self.max_series, self.max_stamps = max_series, max_stamps
        self._newest: OrderedDict[Series, tuple[datetime, float | None]] = OrderedDict()
        self._stamps: OrderedDict[tuple[Series, datetime], None] = OrderedDict()
        self.dropped_duplicates = 0

    def apply(self, readings: list[MeterReadingV1]) -> tuple[list[MeterReadingV1], int]:
        """The readings to emit (flagged where needed) and how many were duplicates."""
        out: list[MeterReadingV1] = []
        duplicates = 0
        for r in readings:
            series: Series = (r.device_id, r.metric, r.phase, r.direction, r.kind)
            if r.time_source == "device":  # a receive time says nothing about the device's sample
                stamp = (series, r.measured_at)
                if stamp in self._stamps:
                    self._stamps.move_to_end(stamp)
                    duplicates += 1
                    continue
                self._stamps[stamp] = None
                if len(self._stamps) > self.max_stamps:
                    self._stamps.popitem(last=False)
            out.append(self._flag(series, r))
        if out and duplicates:
            self.dropped_duplicates += duplicates
        return out, duplicates

    def _flag(self, series: Series, r: MeterReadingV1) -> MeterReadingV1:
        wh = r.quantity * _TO_WH[r.unit] if r.kind == "cumulative" else None
        newest = self._newest.get(series)
        if newest is not None:
            self._newest.move_to_end(series)
            at, previous = newest
            if r.measured_at < at:
                return r.model_copy(update={"quality": [*r.quality, "out_of_order"]})
            self._newest[series] = (r.measured_at, wh)
            if wh is not None and previous is not None and wh < previous and "counter_reset" not in r.quality:
                return r.model_copy(update={"quality": [*r.quality, "counter_reset"]})
            return r
        self._newest[series] = (r.measured_at, wh)
        if len(self._newest) > self.max_series:
            self._newest.popitem(last=False)
        return r
