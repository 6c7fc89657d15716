"""``energy.meter_reading`` v1.0 — one measured value of one metric of one meter.

A device message with several values (Tasmota's ``ENERGY`` block, a Shelly 3EM's per-phase ``emeters``)
becomes several readings, one per metric, phase and direction.

Mapping rules (the energy decoders implement them):
- ``device_id`` is the connection's stable device id (Tasmota topic, Shelly device id / MAC), never an IP.
- ``metric`` names what is measured, in snake case: ``energy`` (a counter), ``power``, ``reactive_power``,
  ``voltage``, ``current``, ``frequency``.
- ``quantity`` is the value *converted* into ``unit``, one of the closed set Wh, kWh, W, kW, VAr, V, A, Hz;
  units outside it are converted by the decoder (Shelly Gen1 ``total`` is watt-minutes: /60 → Wh) or the
  message goes to the DLQ. ``quantity`` must be finite.
- ``direction`` is ``import`` (from the grid / consumed) or ``export`` (to the grid / produced) and is
  required for energy and power units. A signed source value is split by sign: a negative power of a
  bidirectional meter is ``export`` with a positive quantity; Tasmota / Shelly ``ret`` / ``Returned``
  counters are ``export``. Voltage, current and frequency have no direction (None).
- ``phase`` is ``L1`` / ``L2`` / ``L3`` for a per-phase value (Tasmota arrays and Shelly ``emeters`` in
  index order), ``total`` for a sum over phases, None when the meter does not say.
- ``kind``: ``cumulative`` is a counter since ``counter_started_at`` (Tasmota ``Total`` with
  ``TotalStartTime``) and needs an energy unit; ``interval`` is the amount over
  [``interval_start``, ``measured_at``) (Tasmota ``Today``, SenML with a time span) and requires
  ``interval_start`` before ``measured_at``; ``instantaneous`` is a gauge (power, voltage) and has no
  ``interval_start``.
- ``measured_at`` is UTC with its source precision. ``time_source`` says whose clock it is: ``device`` when
  the payload carries a time (Tasmota ``Time``, local wall time read in the device's configured zone) and the
  device is time-synced; ``receive`` when the device has no time or no time sync and the receive time is used
  instead. Receive time must never pass as device time.
- ``quality`` flags what a consumer must know: ``counter_reset`` (a cumulative counter went down: device reset
  or replaced), ``counter_wrap`` (it wrapped at its maximum), ``estimated`` (not measured), ``clock_suspect``
  (the device time was implausible, e.g. 1970), ``out_of_order`` (older than a reading already emitted).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from inlet.contracts.base import Contract, Monitoring, Precision, register

__all__ = ["EnergyUnit", "MeterReadingV1", "QualityFlag"]

EnergyUnit = Literal["Wh", "kWh", "W", "kW", "VAr", "V", "A", "Hz"]
"""The closed set of units a reading may carry; anything else is converted or refused."""

QualityFlag = Literal["counter_reset", "counter_wrap", "estimated", "clock_suspect", "out_of_order"]

_DIRECTED_UNITS = frozenset({"Wh", "kWh", "W", "kW", "VAr"})
_ENERGY_UNITS = frozenset({"Wh", "kWh"})


@register
class MeterReadingV1(Contract):
    """One value of one metric of one meter at one time, in a unit from a closed set."""

    contract_name: ClassVar[str] = "energy.meter_reading"
    contract_version: ClassVar[str] = "1.0"
    monitoring: ClassVar[Monitoring | None] = Monitoring(
        numeric=("quantity",),
        series=("device_id", "metric", "phase", "direction"),
        categories=("unit", "kind", "time_source"),
        nulls=("measured_at_precision", "counter_started_at"),
    )

    device_id: str = Field(min_length=1)
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    quantity: float = Field(allow_inf_nan=False)
    unit: EnergyUnit
    direction: Literal["import", "export"] | None = None
    phase: Literal["L1", "L2", "L3", "total"] | None = None
    kind: Literal["cumulative", "interval", "instantaneous"]
    interval_start: datetime | None = None
    counter_started_at: datetime | None = None
    measured_at: datetime
    measured_at_precision: Precision | None = None
    time_source: Literal["device", "receive"]
    quality: list[QualityFlag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unit in _DIRECTED_UNITS and self.direction is None:
            raise ValueError(f"direction (import/export) is required for a reading in {self.unit}")
        if self.kind == "cumulative" and self.unit not in _ENERGY_UNITS:
            raise ValueError(f"a cumulative reading counts energy (Wh, kWh), not {self.unit}")
        if self.kind == "interval":
            if self.interval_start is None:
                raise ValueError("an interval reading needs interval_start")
            try:
                ordered = self.interval_start < self.measured_at
            except TypeError:  # one naive, one aware: not comparable, and not UTC either
                raise ValueError("interval_start and measured_at must both be UTC") from None
            if not ordered:
                raise ValueError("interval_start must be before measured_at")
        elif self.interval_start is not None:
            raise ValueError(f"interval_start is only for interval readings, not {self.kind}")
        return self

    def entity_key(self) -> str:
        """All readings of one device stay ordered."""
        return self.device_id

    def subject(self) -> str:
        return f"Device/{self.device_id}/{self.metric}"

    def occurred_at(self) -> datetime | None:
        return self.measured_at
