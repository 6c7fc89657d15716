"""Shared pieces of the meter decoders: the device context, JSON parsing and reading construction.

Why one place: every decoder must fail the same way (``DecodeError`` naming the topic for bytes that are not
the expected shape, ``MappingError`` for values the contract cannot hold) and must split signed values the
same way (negative power = export with a positive quantity), so the rules live here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from inlet.contracts.energy_meter_reading import EnergyUnit, MeterReadingV1, QualityFlag
from inlet.core.errors import DecodeError, LeftOut, MappingError, TimestampError
from inlet.core.time import Ambiguous, Instant, normalise

__all__ = ["DeviceContext", "Reading", "Skip", "decode_error", "load_json", "number", "timestamp"]


Skip = LeftOut
"""Raised by a decoder for a message it leaves out on purpose (``raise Skip(reason)``); the connector filters it
with ``reason``. The core's :class:`~inlet.core.errors.LeftOut` under the decoders' name for it."""


Kind = Literal["cumulative", "interval", "instantaneous"]
Phase = Literal["L1", "L2", "L3", "total"] | None
TimeSource = Literal["device", "receive"]

_DIRECTED: frozenset[str] = frozenset({"Wh", "kWh", "W", "kW", "VAr"})
_PHASES: tuple[Literal["L1", "L2", "L3"], ...] = ("L1", "L2", "L3")


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the topic router knows about the sender: decoders never guess a device id or a zone.

    ``zone`` is the device's IANA zone, needed for devices that report naive local wall time (Tasmota);
    ``received_at`` (aware UTC) is the broker-receive time, used, and marked ``time_source="receive"``,
    whenever the payload carries no trustworthy device time.
    """

    device_id: str
    zone: str | None
    received_at: datetime


def decode_error(topic: str, reason: str) -> DecodeError:
    """A DecodeError whose message names the topic, so the DLQ record says where the bad bytes came from."""
    return DecodeError(f"topic {topic!r}: {reason}")


def load_json(topic: str, payload: bytes) -> Any:
    """Parse JSON (strict: no NaN/Infinity, UTF-8 only) or raise DecodeError naming the topic."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise decode_error(topic, f"payload is not JSON ({exc})") from None


def number(topic: str, value: object, field: str) -> float:
    """A finite JSON number (never a bool or a numeric string: a type change upstream must be seen)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise decode_error(topic, f"{field} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise decode_error(topic, f"{field} is not finite")
    return result


def timestamp(
    topic: str, value: object, zone: str | None, *, near: datetime | None = None, ambiguous: Ambiguous = "raise"
) -> Instant:
    """``core.time.normalise`` with the topic added to the TimestampError message (still a MappingError).

    ``near`` is the receive time for a device's *current* time: a naive wall time in the repeated autumn hour
    (or the spring gap) is read as the reading closest to when it arrived, not refused.
    """
    try:
        return normalise(value, zone, near=near, ambiguous=ambiguous)
    except TimestampError as exc:
        raise TimestampError(f"topic {topic!r}: {exc}") from None


def phase_of(topic: str, index: int, count: int, field: str) -> Phase:
    """Phase for element ``index`` of an array-valued field: L1/L2/L3 in index order; a scalar has none."""
    if count == 1:
        return None
    if count > len(_PHASES):
        raise MappingError(f"topic {topic!r}: {field} has {count} channels; at most 3 phases map to L1-L3")
    return _PHASES[index]


@dataclass(slots=True)
class Reading:
    """Builder for the readings of one message: shared device, time and quality; one call per value."""

    topic: str
    ctx: DeviceContext
    measured: Instant
    time_source: TimeSource
    quality: tuple[QualityFlag, ...] = ()

    def make(
        self,
        metric: str,
        value: float,
        unit: EnergyUnit,
        kind: Kind,
        *,
        phase: Phase = None,
        direction: Literal["import", "export"] | None = None,
        interval_start: datetime | None = None,
        counter_started_at: datetime | None = None,
        signed: bool = False,
    ) -> MeterReadingV1:
        """One reading; ``signed`` splits a bidirectional value by sign (negative -> export, positive quantity).

        Energy and power units default to ``import`` when the source is unsigned; counters (cumulative)
        must not be negative (that is a broken meter or a wrong field, not export).
        """
        if unit in _DIRECTED and direction is None:
            if signed and value < 0:
                direction, value = "export", -value
            else:
                direction = "import"
        if kind == "cumulative" and value < 0:
            raise MappingError(f"topic {self.topic!r}: {metric} counter is negative ({value})")
        value = value + 0.0  # -0.0 -> 0.0: an exported zero is still zero
        try:
            return MeterReadingV1(
                device_id=self.ctx.device_id,
                metric=metric,
                quantity=value,
                unit=unit,
                direction=direction,
                phase=phase,
                kind=kind,
                interval_start=interval_start,
                counter_started_at=counter_started_at,
                measured_at=self.measured.utc,
                measured_at_precision=self.measured.precision,
                time_source=self.time_source,
                quality=list(self.quality),
            )
        except ValidationError as exc:
            raise MappingError(f"topic {self.topic!r}: {metric} does not fit energy.meter_reading: {exc}") from None
