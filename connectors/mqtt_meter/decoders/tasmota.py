"""Tasmota telemetry (``tele/<dev>/SENSOR``, ``tele/<dev>/STATE``, ``stat/<dev>/STATUS10``) -> meter readings.

Rules (contract ``energy.meter_reading`` v1.0):

* ``Time`` is the device's *local wall time without offset*; it is read in the device zone from the
  :class:`DeviceContext` through ``core.time`` (a missing zone is a MappingError, never a guess). A ``Time``
  before 2016 means the device has not synced NTP yet (Tasmota starts at 1970): the receive time is used,
  ``time_source="receive"`` and ``clock_suspect`` is flagged, because receive time must never pass as device
  time. A payload without ``Time`` also uses the receive time.
* ``ENERGY``: ``Total`` kWh -> cumulative import counter since ``TotalStartTime``; ``ExportActive`` kWh ->
  cumulative export counter; ``Today`` kWh -> interval reading from the device's local midnight (skipped
  without a zone, with an unsynced clock, or exactly at midnight, where the interval is empty); ``Power``
  W, signed (negative = export, positive quantity); ``Voltage`` V, ``Current`` A, ``Frequency`` Hz.
  Array values are channels mapped to L1/L2/L3 in index order (more than three is a MappingError); a
  scalar next to arrays (Tasmota reports one ``Voltage`` for all channels) has no phase.
* Dropped on purpose: ``Yesterday`` (a repeat of yesterday's ``Today``; emitting it would double-count),
  ``Factor`` (dimensionless, not in the unit set), ``ApparentPower`` (VA is not in the unit set) and
  ``ReactivePower`` (the contract requires import/export for VAr, and the sign of Q is inductive/capacitive,
  not a flow direction, so any mapping would be invented).
* SML smart-meter blocks (Tasmota's scripting SML driver): names are chosen by the meter script, so blocks
  are recognised by the conventional keys of the Tasmota SML examples, case-insensitively: ``Total_in`` /
  ``Total_out`` kWh (OBIS 1.8.0 / 2.8.0, cumulative import / export), ``Power_curr`` W signed total power,
  ``power_l1..3`` W signed, ``voltage_l1..3`` V, ``current_l1..3`` A, ``Frequenz`` / ``Frequency`` Hz.
  Other keys (meter id, phase angles, gas counters) are not electrical readings and are ignored. The kWh
  scaling of ``Total_in`` is the convention of those scripts; a script that scales differently needs its own
  mapping.
* Non-energy sensors (temperature, humidity) and ``STATE`` frames yield no readings.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from inlet.contracts.energy_meter_reading import EnergyUnit, MeterReadingV1
from inlet.core.time import Instant, TimestampError
from inlet.core.time import zone as time_zone

from ._common import DeviceContext, Kind, Reading, decode_error, fast_paths, load_json, number, phase_of, timestamp

__all__ = ["decode_tasmota"]

_UNSYNCED_YEAR: Final = 2016  # Tasmota boots at 1970; any Time before this is an unsynced clock
_TOPIC_KINDS: Final = frozenset({"SENSOR", "STATE", "STATUS8", "STATUS10", "RESULT"})
_WRAPPERS: Final = ("StatusSNS", "StatusSTS")

# ENERGY key -> (metric, unit, kind, signed)
_ENERGY_FIELDS: Final[dict[str, tuple[str, EnergyUnit, Kind, bool]]] = {
    "Power": ("power", "W", "instantaneous", True),
    "Voltage": ("voltage", "V", "instantaneous", False),
    "Current": ("current", "A", "instantaneous", False),
    "Frequency": ("frequency", "Hz", "instantaneous", False),
}
_SML_PHASE: Final = re.compile(r"(power|voltage|current)_l([123])")
_SML_UNITS: Final[dict[str, EnergyUnit]] = {"power": "W", "voltage": "V", "current": "A"}

# Per-message time work that repeats (fast paths; ``_common.checked_paths`` turns them off): the same
# ``TotalStartTime`` in every message of a device, the same local midnight for a zone's whole day. Keyed by
# everything the result depends on (``core.time.normalise`` is pure for these calls); only successes are kept,
# and a full cache is emptied (a hub has a bounded set of devices and zones).
_STARTED: dict[tuple[str, str | None], datetime] = {}
_MIDNIGHT: dict[tuple[str, date], datetime] = {}
_CACHE_MAX: Final = 10_000


def decode_tasmota(topic: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    """Decode one Tasmota telemetry message into readings (see the module docstring for the rules)."""
    kind = topic.rsplit("/", 1)[-1]
    if kind not in _TOPIC_KINDS:
        raise decode_error(topic, f"not a Tasmota telemetry topic (last level {kind!r}, expected SENSOR/STATE)")
    body = load_json(topic, payload)
    if not isinstance(body, dict):
        raise decode_error(topic, f"payload must be a JSON object, got {type(body).__name__}")
    for wrapper in _WRAPPERS:
        inner = body.get(wrapper)
        if isinstance(inner, dict):
            body = inner
            break
    builder = _builder(topic, body, ctx)
    readings: list[MeterReadingV1] = []
    energy = body.get("ENERGY")
    if energy is not None:
        if not isinstance(energy, dict):
            raise decode_error(topic, "ENERGY must be an object")
        readings += _energy(topic, energy, builder)
    for name, block in body.items():
        if name != "ENERGY" and isinstance(block, dict) and _is_sml(block):
            readings += _sml(topic, name, block, builder)
    return readings


def _builder(topic: str, body: dict[str, Any], ctx: DeviceContext) -> Reading:
    """Device time in the device zone, or receive time (flagged) when absent or before NTP sync."""
    raw = body.get("Time")
    if raw is None:
        return Reading(topic, ctx, Instant(ctx.received_at), "receive")
    if not isinstance(raw, str):
        raise decode_error(topic, f"Time must be a string, got {type(raw).__name__}")
    if raw[:4].isdigit() and int(raw[:4]) < _UNSYNCED_YEAR:
        return Reading(topic, ctx, Instant(ctx.received_at), "receive", ("clock_suspect",))
    return Reading(topic, ctx, _wall_time(topic, raw, ctx), "device")


def _wall_time(topic: str, raw: str, ctx: DeviceContext) -> Instant:
    """``Time`` (local wall time, no offset) read in the device zone, as ``core.time.normalise`` reads it.

    Tasmota always writes ``YYYY-MM-DDThh:mm:ss``: for that shape, a wall time that exists once in the zone (all
    but the repeated autumn hour and the spring gap) is the wall time minus the zone's offset there, precision
    ``second`` — what normalise's fast path computes, without its general shape and policy handling. Anything
    else (another shape, an unknown zone, a repeated or skipped wall time) goes through ``timestamp``."""
    if ctx.zone is not None and len(raw) == 19 and raw[4:17:3] == "--T::" and raw.isascii() and fast_paths():
        try:
            wall = datetime.fromisoformat(raw)
            tz = time_zone(ctx.zone)
            offset = tz.utcoffset(wall)
            if wall.tzinfo is None and offset is not None and offset == tz.utcoffset(wall.replace(fold=1)):
                return Instant((wall - offset).replace(tzinfo=UTC), "second")
        except (ValueError, OverflowError, TimestampError):
            pass  # 24:00, a leap second, bad digits, an unknown zone: timestamp() explains
    return timestamp(topic, raw, ctx.zone, near=ctx.received_at)


def _started_at(topic: str, started: object, zone: str | None) -> datetime:
    """``TotalStartTime`` in UTC; a counter started in a repeated autumn hour stays ambiguous for ever (no receive
    time helps): the first occurrence, rather than a DLQ record on every message for the counter's whole life."""
    if type(started) is not str or not fast_paths():
        return timestamp(topic, started, zone, ambiguous="earliest").utc
    key = (started, zone)
    at = _STARTED.get(key)
    if at is None:
        at = timestamp(topic, started, zone, ambiguous="earliest").utc
        if len(_STARTED) >= _CACHE_MAX:
            _STARTED.clear()
        _STARTED[key] = at
    return at


def _values(topic: str, value: object, field: str) -> list[tuple[float, int, int]]:
    """(value, index, count) for a scalar or an array-valued (multi-channel) field."""
    if isinstance(value, list):
        if not value:
            raise decode_error(topic, f"{field} is an empty array")
        return [(number(topic, v, f"{field}[{i}]"), i, len(value)) for i, v in enumerate(value)]
    return [(number(topic, value, field), 0, 1)]


def _energy(topic: str, energy: dict[str, Any], builder: Reading) -> list[MeterReadingV1]:
    out: list[MeterReadingV1] = []
    started = energy.get("TotalStartTime")
    started_at = _started_at(topic, started, builder.ctx.zone) if started is not None else None
    for key, direction in (("Total", "import"), ("ExportActive", "export")):
        if key in energy:
            for value, i, n in _values(topic, energy[key], key):
                out.append(
                    builder.make(
                        "energy",
                        value,
                        "kWh",
                        "cumulative",
                        phase=phase_of(topic, i, n, key),
                        direction=direction,  # type: ignore[arg-type]
                        counter_started_at=started_at if key == "Total" else None,
                    )
                )
    if "Today" in energy:
        day_start = _local_midnight(topic, builder)
        for value, i, n in _values(topic, energy["Today"], "Today"):
            if day_start is not None:
                out.append(
                    builder.make(
                        "energy",
                        value,
                        "kWh",
                        "interval",
                        phase=phase_of(topic, i, n, "Today"),
                        direction="import",
                        interval_start=day_start,
                    )
                )
    for key, (metric, unit, kind, signed) in _ENERGY_FIELDS.items():
        if key in energy:
            for value, i, n in _values(topic, energy[key], key):
                out.append(
                    builder.make(
                        metric,
                        value,
                        unit,
                        kind,
                        phase=phase_of(topic, i, n, key),
                        signed=signed,
                    )
                )
    return out


def _local_midnight(topic: str, builder: Reading) -> datetime | None:
    """Start of the device's local day (through core.time, DST-safe); None when it cannot be known."""
    zone = builder.ctx.zone
    if zone is None or builder.time_source == "receive":
        return None  # "Today" starts at the *device's* midnight: unknown without zone or a synced clock
    if fast_paths():
        try:
            local: date = builder.measured.utc.astimezone(time_zone(zone)).date()
        except TimestampError:
            return None  # as ZoneInfo's refusal below
        key = (zone, local)
        start = _MIDNIGHT.get(key)
        if start is None:
            start = timestamp(topic, local, zone).utc
            if len(_MIDNIGHT) >= _CACHE_MAX:
                _MIDNIGHT.clear()
            _MIDNIGHT[key] = start
        return start if start < builder.measured.utc else None
    try:
        local = builder.measured.utc.astimezone(ZoneInfo(zone)).date()
    except (ValueError, KeyError, OSError):
        return None  # an unknown zone already failed in timestamp() for naive Time; receive-time case
    start = timestamp(topic, local, zone).utc
    return start if start < builder.measured.utc else None


def _is_sml(block: dict[str, Any]) -> bool:
    keys = {k.lower() for k in block}
    return bool(keys & {"total_in", "total_out", "power_curr"})


def _sml(topic: str, name: str, block: dict[str, Any], builder: Reading) -> list[MeterReadingV1]:
    out: list[MeterReadingV1] = []
    for key, raw in block.items():
        low = key.lower()
        field = f"{name}.{key}"
        if low in ("total_in", "total_out"):
            out.append(
                builder.make(
                    "energy",
                    number(topic, raw, field),
                    "kWh",
                    "cumulative",
                    direction="import" if low == "total_in" else "export",
                )
            )
        elif low == "power_curr":
            out.append(
                builder.make("power", number(topic, raw, field), "W", "instantaneous", phase="total", signed=True)
            )
        elif low in ("frequenz", "frequency", "freq"):
            out.append(builder.make("frequency", number(topic, raw, field), "Hz", "instantaneous"))
        elif match := _SML_PHASE.fullmatch(low):
            metric, idx = match[1], int(match[2])
            out.append(
                builder.make(
                    metric,
                    number(topic, raw, field),
                    _SML_UNITS[metric],
                    "instantaneous",
                    phase=("L1", "L2", "L3")[idx - 1],
                    signed=metric == "power",
                )
            )
    return out
