"""SenML JSON (RFC 8428) -> meter readings, with the RFC's base-field resolution as a pure function.

:func:`resolve_senml` implements RFC 8428 section 4.6: base fields (``bn``, ``bt``, ``bu``, ``bv``, ``bs``,
``bver``) apply to their record and every later one until replaced; ``n = bn + n``; ``t = bt + t``, and a
result below 2**28 is relative to "now" (the caller's clock: receive time; passed in, so it stays pure);
``u`` defaults to ``bu``; ``v = bv + v``; ``s = bs + s``. Resolved records carry no base fields and always a
``t``. Records that hold only base fields are consumed. Fields ending in ``_`` are "must understand" and
refused. Deviation from the RFC text, matching the spec repository's generated ``*.resolved.json``: ``bver``
is validated (an integer; versions above 10 are refused because they may change the meaning of fields) and
dropped rather than copied into each record.

:func:`decode_senml` maps each resolved numeric record (``v`` or ``s``) to a reading: units ``W`` (power,
signed: negative = export), ``Wh`` / ``kWh`` (energy counters: cumulative import; SenML has no interval field),
``V``, ``A``, ``Hz``; any other unit is a MappingError naming it (a meter-hub topic with temperature data is
a routing error to see in the DLQ, not data to drop). String, boolean and data values are not meter readings
and are skipped. ``time_source`` is ``device`` when the record's time was absolute, ``receive`` when it was
relative to the receive time. A name ending in ``L1``/``L2``/``L3`` (after ``:``, ``/``, ``_``, ``-``) sets
the phase.
"""

from __future__ import annotations

import re
from typing import Any, Final

from inlet.contracts.energy_meter_reading import EnergyUnit, MeterReadingV1
from inlet.core.errors import MappingError
from inlet.core.time import Instant

from ._common import DeviceContext, Kind, Phase, Reading, decode_error, load_json, number, timestamp

__all__ = ["RELATIVE_TIME_LIMIT", "decode_senml", "resolve_senml"]

RELATIVE_TIME_LIMIT: Final = 2**28
"""RFC 8428: a resolved time below 2**28 s (about 8.5 years) is relative to now."""

_SUPPORTED_VERSION: Final = 10
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")
_BASE: Final = frozenset({"bn", "bt", "bu", "bv", "bs", "bver"})
_VALUES: Final = ("v", "vs", "vb", "vd")
_UNITS: Final[dict[str, tuple[str, EnergyUnit]]] = {
    "W": ("power", "W"),
    "Wh": ("energy", "Wh"),
    "kWh": ("energy", "kWh"),
    "V": ("voltage", "V"),
    "A": ("current", "A"),
    "Hz": ("frequency", "Hz"),
}
_PHASE: Final = re.compile(r"(?:^|[:/_-])(L[123])$", re.IGNORECASE)


def resolve_senml(records: Any, *, now: float) -> list[dict[str, Any]]:
    """Resolve a SenML pack to its resolved form (RFC 8428 4.6); ``now`` is epoch seconds for relative times.

    Raises DecodeError (topic unknown here: the caller adds it) for a pack that is not valid SenML.
    """
    return [record for record, _ in _resolve(records, now, "senml")]


def _resolve(records: Any, now: float, topic: str) -> list[tuple[dict[str, Any], bool]]:
    """Resolved records each with ``relative`` (its time was relative to ``now``)."""
    if not isinstance(records, list):
        raise decode_error(topic, f"a SenML pack is a JSON array, got {type(records).__name__}")
    bn, bt, bu, bv, bs = "", 0.0, None, 0.0, 0.0
    out: list[tuple[dict[str, Any], bool]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise decode_error(topic, f"SenML record {i} is not an object")
        for key in record:
            if key.endswith("_"):
                raise decode_error(topic, f"SenML record {i} has must-understand field {key!r}")
        if "bver" in record:
            ver = record["bver"]
            if isinstance(ver, bool) or not isinstance(ver, int) or ver > _SUPPORTED_VERSION:
                raise decode_error(topic, f"SenML record {i}: unsupported bver {ver!r}")
        if "bn" in record:
            bn = _text(topic, record["bn"], f"record {i} bn")
        if "bt" in record:
            bt = number(topic, record["bt"], f"record {i} bt")
        if "bu" in record:
            bu = _text(topic, record["bu"], f"record {i} bu")
        if "bv" in record:
            bv = number(topic, record["bv"], f"record {i} bv")
        if "bs" in record:
            bs = number(topic, record["bs"], f"record {i} bs")
        if record.keys() <= _BASE:
            continue  # base fields only: they shape later records and are not a measurement themselves
        present = [k for k in _VALUES if k in record]
        if len(present) > 1 or (not present and "s" not in record):
            raise decode_error(topic, f"SenML record {i} needs exactly one of v/vs/vb/vd or a sum s")
        resolved: dict[str, Any] = {k: v for k, v in record.items() if k not in _BASE}
        name = bn + (_text(topic, record["n"], f"record {i} n") if "n" in record else "")
        if not _NAME.fullmatch(name):
            raise decode_error(topic, f"SenML record {i} has an invalid resolved name {name!r}")
        resolved["n"] = name
        time = bt + (number(topic, record["t"], f"record {i} t") if "t" in record else 0.0)
        relative = time < RELATIVE_TIME_LIMIT
        resolved["t"] = now + time if relative else time
        if "u" in record:
            resolved["u"] = _text(topic, record["u"], f"record {i} u")
        elif bu is not None:
            resolved["u"] = bu
        if "v" in record:
            resolved["v"] = bv + number(topic, record["v"], f"record {i} v")
        if "s" in record:
            resolved["s"] = bs + number(topic, record["s"], f"record {i} s")
        _check_other_values(topic, record, i)
        out.append((resolved, relative))
    return out


def _check_other_values(topic: str, record: dict[str, Any], i: int) -> None:
    """String, data and boolean values are passed through unchanged, but must have their JSON type."""
    for key in ("vs", "vd"):
        if key in record:
            _text(topic, record[key], f"record {i} {key}")
    if "vb" in record and not isinstance(record["vb"], bool):
        raise decode_error(topic, f"SenML record {i} vb must be a boolean")


def _text(topic: str, value: object, field: str) -> str:
    if not isinstance(value, str):
        raise decode_error(topic, f"SenML {field} must be a string, got {type(value).__name__}")
    return value


def decode_senml(topic: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    """Decode one SenML JSON pack into readings (rules in the module docstring)."""
    pack = load_json(topic, payload)
    resolved = _resolve(pack, ctx.received_at.timestamp(), topic)
    out: list[MeterReadingV1] = []
    for record, relative in resolved:
        value_key = "v" if "v" in record else "s" if "s" in record and not any(k in record for k in _VALUES) else None
        if value_key is None:
            continue  # vs / vb / vd: not a meter quantity
        unit = record.get("u")
        if not isinstance(unit, str) or unit not in _UNITS:
            raise MappingError(
                f"topic {topic!r}: SenML record {record['n']!r} has unit {unit!r}, expected one of {', '.join(_UNITS)}"
            )
        metric, energy_unit = _UNITS[unit]
        if value_key == "s" and metric != "energy":
            raise MappingError(f"topic {topic!r}: SenML sum for {record['n']!r} in {unit!r} is not an energy counter")
        # exactly "now": keep received_at itself rather than its float round trip
        exact_now = relative and record["t"] == ctx.received_at.timestamp()
        measured = Instant(ctx.received_at) if exact_now else timestamp(topic, record["t"], None)
        builder = Reading(topic, ctx, measured, "receive" if relative else "device")
        match = _PHASE.search(record["n"])
        phase: Phase = match[1].upper() if match else None  # type: ignore[assignment]
        kind: Kind = "cumulative" if metric == "energy" else "instantaneous"
        out.append(
            builder.make(
                metric,
                record[value_key],
                energy_unit,
                kind,
                phase=phase,
                signed=metric == "power",
            )
        )
    return out
