"""Shared pieces of the meter decoders: the device context, JSON parsing and reading construction.

Why one place: every decoder must fail the same way (``DecodeError`` naming the topic for bytes that are not
the expected shape, ``MappingError`` for values the contract cannot hold) and must split signed values the
same way (negative power = export with a positive quantity), so the rules live here once.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson
from pydantic import ValidationError

from inlet.contracts.base import Precision, checked_instance
from inlet.contracts.energy_meter_reading import EnergyUnit, MeterReadingV1, QualityFlag
from inlet.core.errors import DecodeError, LeftOut, MappingError, TimestampError
from inlet.core.time import Ambiguous, Instant, normalise

__all__ = [
    "DeviceContext",
    "Reading",
    "Skip",
    "checked_paths",
    "decode_error",
    "fast_paths",
    "load_json",
    "number",
    "timestamp",
]


Skip = LeftOut
"""Raised by a decoder for a message it leaves out on purpose (``raise Skip(reason)``); the connector filters it
with ``reason``. The core's :class:`~inlet.core.errors.LeftOut` under the decoders' name for it."""


Kind = Literal["cumulative", "interval", "instantaneous"]
Phase = Literal["L1", "L2", "L3", "total"] | None
TimeSource = Literal["device", "receive"]

_DIRECTED: frozenset[str] = frozenset({"Wh", "kWh", "W", "kW", "VAr"})
_PHASES: tuple[Literal["L1", "L2", "L3"], ...] = ("L1", "L2", "L3")

# What energy.meter_reading accepts, for the fast construction in Reading.make (the model's own types).
_UNITS: frozenset[object] = frozenset(get_args(EnergyUnit))
_ENERGY: frozenset[object] = frozenset({"Wh", "kWh"})
_DIRECTIONS: frozenset[object] = frozenset({None, "import", "export"})
_PHASE_VALUES: frozenset[object] = frozenset({None, "L1", "L2", "L3", "total"})
_KINDS: frozenset[object] = frozenset(get_args(Kind))
_TIME_SOURCES: frozenset[object] = frozenset(get_args(TimeSource))
_PRECISIONS: frozenset[object] = frozenset({None, *get_args(Precision)})
_QUALITY: frozenset[object] = frozenset(get_args(QualityFlag))
_METRIC: re.Pattern[str] = re.compile(r"[a-z][a-z0-9_]*")  # the contract's pattern, anchored by fullmatch
_metrics_ok: dict[str, bool] = {}
_GIVEN: frozenset[str] = frozenset(MeterReadingV1.model_fields)  # make() names every field


class _Switch:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


_FAST = _Switch()


def fast_paths() -> bool:
    """Whether the decoders take their fast paths (the default) or the checked ones (:func:`checked_paths`)."""
    return _FAST.on


@contextlib.contextmanager
def checked_paths() -> Iterator[None]:
    """Within: every reading is validated by its model and every device time goes through ``core.time`` without
    the decoders' caches. The reference the fast paths are proven equal to (tests compare both, byte for byte)."""
    before, _FAST.on = _FAST.on, False
    try:
        yield
    finally:
        _FAST.on = before


def _metric_ok(metric: object) -> bool:
    ok = _metrics_ok.get(metric) if type(metric) is str else False
    if ok is None:
        assert isinstance(metric, str)
        ok = _METRIC.fullmatch(metric) is not None
        if len(_metrics_ok) < 1000:  # names come from decoder tables and plugin settings: a handful
            _metrics_ok[metric] = ok
    return bool(ok)


def _shared_ok(reading: Reading) -> bool:
    """Whether what all readings of one message share is what validation keeps as it is: device, time, quality."""
    measured = reading.measured
    device_id = reading.ctx.device_id
    return bool(
        type(device_id) is str
        and device_id
        and _utc(measured.utc)
        and measured.precision in _PRECISIONS
        and reading.time_source in _TIME_SOURCES
        and all(q in _QUALITY for q in reading.quality)
    )


def _valid(
    metric: object,
    value: object,
    unit: object,
    direction: object,
    phase: object,
    kind: object,
    interval_start: object,
    counter_started_at: object,
    measured_at: datetime,
) -> bool:
    """True only when ``MeterReadingV1`` validation would accept these values unchanged (field types and
    constraints, then its ``_consistent`` rules), given :func:`_shared_ok`; anything else takes the validating
    constructor, which says why."""
    if not (
        type(value) is float
        and math.isfinite(value)
        and unit in _UNITS
        and direction in _DIRECTIONS
        and phase in _PHASE_VALUES
        and kind in _KINDS
        and (counter_started_at is None or _utc(counter_started_at))
        and _metric_ok(metric)
    ):
        return False
    if (unit in _DIRECTED and direction is None) or (kind == "cumulative" and unit not in _ENERGY):
        return False
    if kind == "interval":
        return _utc(interval_start) and interval_start < measured_at  # type: ignore[operator]
    return interval_start is None


def _utc(value: object) -> bool:
    """A datetime in UTC as ``core.time`` makes them (validation keeps such a value as it is)."""
    return type(value) is datetime and value.tzinfo is UTC


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
    _shared: bool | None = field(default=None, init=False, repr=False, compare=False)
    """Whether device, time and quality pass validation as they are (the fast construction), once per message."""

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
        measured = self.measured
        shared = self._shared
        if shared is None:
            shared = self._shared = _FAST.on and _shared_ok(self)
        if shared and _valid(
            metric, value, unit, direction, phase, kind, interval_start, counter_started_at, measured.utc
        ):
            # Checked above exactly as validation would check them: the model without validating again
            # (a third of the cost; tests prove both constructions serialise to the same bytes).
            return checked_instance(
                MeterReadingV1,
                {
                    "device_id": self.ctx.device_id,
                    "metric": metric,
                    "quantity": value,
                    "unit": unit,
                    "direction": direction,
                    "phase": phase,
                    "kind": kind,
                    "interval_start": interval_start,
                    "counter_started_at": counter_started_at,
                    "measured_at": measured.utc,
                    "measured_at_precision": measured.precision,
                    "time_source": self.time_source,
                    "quality": list(self.quality),
                },
                _GIVEN,
            )
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
