"""Shelly MQTT -> meter readings: Gen1 per-value topics and Gen2+ ``NotifyStatus`` / status frames.

Gen1 (``shellies/<id>/...``, payload a plain JSON number, no timestamp -> receive time, ``time_source=
"receive"``):

* ``relay|light|roller/<i>/power`` W; ``.../energy`` is a counter in **watt-minutes** (Shelly Gen1 API),
  converted to Wh by ``/ 60``, cumulative import. Relay channels are not phases: phase None.
* ``emeter/<i>/power`` W signed (negative = export), ``voltage`` V, ``current`` A; ``emeter/<i>/energy`` and
  ``returned_energy`` are watt-minutes (/60 -> Wh, import / export); ``emeter/<i>/total`` and
  ``total_returned`` are already **Wh** (the EM/3EM API documents them in Wh). Emeter index -> L1/L2/L3
  (3EM phases, as the contract says for ``emeters``). ``pf`` and ``reactive_power`` are dropped (no unit in
  the set / VAr needs a flow direction the sign does not give).
* Other Gen1 topics (``online``, ``announce``, ``info``, relay state ``on``/``off``, inputs) carry no meter
  value and yield no readings.

Gen2+ (``<prefix>/events/rpc`` with ``NotifyStatus`` / ``NotifyFullStatus``, or ``<prefix>/status/<comp>``):

* ``switch:N`` / ``pm1:N``: ``apower`` W signed, ``voltage`` V, ``current`` A, ``freq`` Hz,
  ``aenergy.total`` Wh cumulative import, ``ret_aenergy.total`` Wh cumulative export.
* ``em1:N``: ``act_power``, ``voltage``, ``current``, ``freq``; ``em:N`` (3-phase): ``a_/b_/c_`` prefixed
  values -> L1/L2/L3, ``total_act_power`` -> phase total; ``em1data:N`` / ``emdata:N``: ``total_act_energy``
  / ``total_act_ret_energy`` (and ``a_/b_/c_`` forms, ``total_act`` / ``total_act_ret``) Wh counters.
* ``params.ts`` is float epoch seconds. Before SNTP sync Shelly sends seconds since boot (the capture shows
  ``ts: 1.61``): a ``ts`` below 1e9 (2001-09-09) cannot be a wall-clock time of a device that exists, so the
  receive time is used and marked ``time_source="receive"``. Status frames carry no ``ts``: receive time.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from inlet.contracts.energy_meter_reading import EnergyUnit, MeterReadingV1
from inlet.core.time import Instant

from ._common import DeviceContext, Phase, Reading, decode_error, load_json, number, timestamp

__all__ = ["BOOT_TS_THRESHOLD", "decode_shelly"]

BOOT_TS_THRESHOLD: Final = 1e9
"""A Gen2 ``ts`` below this is seconds since boot (no time sync yet), not an epoch."""

_GEN1_CHANNELS: Final = frozenset({"relay", "light", "roller", "meter"})
_PHASES: Final[tuple[Literal["L1", "L2", "L3"], ...]] = ("L1", "L2", "L3")
_NOTIFY: Final = frozenset({"NotifyStatus", "NotifyFullStatus"})
# Gen2 component key -> (metric, unit, signed) for instantaneous values
_GAUGES: Final[dict[str, tuple[str, EnergyUnit, bool]]] = {
    "apower": ("power", "W", True),
    "act_power": ("power", "W", True),
    "voltage": ("voltage", "V", False),
    "current": ("current", "A", False),
    "freq": ("frequency", "Hz", False),
}
_SWITCH_COUNTERS: Final[dict[str, Literal["import", "export"]]] = {"aenergy": "import", "ret_aenergy": "export"}
_EM_PHASES: Final[dict[str, Phase]] = {"a_": "L1", "b_": "L2", "c_": "L3"}
_EM_COUNTERS: Final[dict[str, Literal["import", "export"]]] = {
    "total_act_energy": "import",
    "total_act_ret_energy": "export",
    "total_act": "import",
    "total_act_ret": "export",
}


def decode_shelly(topic: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    """Decode one Shelly MQTT message (Gen1 value topic or Gen2+ frame) into readings."""
    levels = topic.split("/")
    if len(levels) >= 2 and levels[-2] == "events" and levels[-1] == "rpc":
        return _gen2_rpc(topic, payload, ctx)
    if len(levels) >= 2 and levels[-2] == "status" and ":" in levels[-1]:
        frame = _object(topic, load_json(topic, payload), "status frame")
        return _component(topic, levels[-1], frame, Reading(topic, ctx, Instant(ctx.received_at), "receive"))
    if len(levels) >= 3 and levels[-3] in (*_GEN1_CHANNELS, "emeter") and levels[-2].isdigit():
        return _gen1(topic, levels[-3], int(levels[-2]), levels[-1], payload, ctx)
    return []


def _object(topic: str, value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise decode_error(topic, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _gen1(topic: str, channel: str, index: int, leaf: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    builder = Reading(topic, ctx, Instant(ctx.received_at), "receive")
    phase: Phase = None
    if channel == "emeter":
        if index >= len(_PHASES):
            raise decode_error(topic, f"emeter index {index} is beyond the three phases L1-L3")
        phase = _PHASES[index]
    if leaf == "power":
        return [builder.make("power", _plain(topic, payload), "W", "instantaneous", phase=phase, signed=True)]
    if leaf == "energy":  # watt-minutes -> Wh
        return [
            builder.make("energy", _plain(topic, payload) / 60, "Wh", "cumulative", phase=phase, direction="import")
        ]
    if channel != "emeter":
        return []
    if leaf == "returned_energy":  # watt-minutes -> Wh
        return [
            builder.make("energy", _plain(topic, payload) / 60, "Wh", "cumulative", phase=phase, direction="export")
        ]
    if leaf in ("total", "total_returned"):  # already Wh on EM / 3EM
        return [
            builder.make(
                "energy",
                _plain(topic, payload),
                "Wh",
                "cumulative",
                phase=phase,
                direction="import" if leaf == "total" else "export",
            )
        ]
    if leaf in ("voltage", "current"):
        return [
            builder.make(leaf, _plain(topic, payload), "V" if leaf == "voltage" else "A", "instantaneous", phase=phase)
        ]
    return []


def _plain(topic: str, payload: bytes) -> float:
    return number(topic, load_json(topic, payload), "payload")


def _gen2_rpc(topic: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    frame = _object(topic, load_json(topic, payload), "RPC frame")
    method = frame.get("method")
    if not isinstance(method, str) or method not in _NOTIFY:
        return []  # NotifyEvent, RPC responses: no meter values
    params = _object(topic, frame.get("params"), "params")
    if "ts" in params:
        ts = number(topic, params["ts"], "params.ts")
        if ts < BOOT_TS_THRESHOLD:
            builder = Reading(topic, ctx, Instant(ctx.received_at), "receive")
        else:
            builder = Reading(topic, ctx, timestamp(topic, ts, None), "device")
    else:
        builder = Reading(topic, ctx, Instant(ctx.received_at), "receive")
    out: list[MeterReadingV1] = []
    for key, value in params.items():
        if ":" in key:
            out += _component(topic, key, _object(topic, value, key), builder)
    return out


def _component(topic: str, key: str, comp: dict[str, Any], builder: Reading) -> list[MeterReadingV1]:
    kind = key.split(":", 1)[0]
    out: list[MeterReadingV1] = []
    if kind in ("switch", "pm1", "em1", "cover", "light"):
        for field, (metric, unit, signed) in _GAUGES.items():
            if field in comp:
                out.append(
                    builder.make(
                        metric, number(topic, comp[field], f"{key}.{field}"), unit, "instantaneous", signed=signed
                    )
                )
        for field, direction in _SWITCH_COUNTERS.items():
            if field in comp:
                counter = _object(topic, comp[field], f"{key}.{field}")
                if "total" in counter:
                    out.append(
                        builder.make(
                            "energy",
                            number(topic, counter["total"], f"{key}.{field}.total"),
                            "Wh",
                            "cumulative",
                            direction=direction,
                        )
                    )
    elif kind == "em":
        for prefix, phase in _EM_PHASES.items():
            for field, (metric, unit, signed) in _GAUGES.items():
                if prefix + field in comp:
                    out.append(
                        builder.make(
                            metric,
                            number(topic, comp[prefix + field], f"{key}.{prefix}{field}"),
                            unit,
                            "instantaneous",
                            phase=phase,
                            signed=signed,
                        )
                    )
        if "total_act_power" in comp:
            out.append(
                builder.make(
                    "power",
                    number(topic, comp["total_act_power"], f"{key}.total_act_power"),
                    "W",
                    "instantaneous",
                    phase="total",
                    signed=True,
                )
            )
    if kind in ("em1data", "emdata"):
        phases: tuple[tuple[str, Phase], ...] = (
            ("", "total" if kind == "emdata" else None),
            ("a_", "L1"),
            ("b_", "L2"),
            ("c_", "L3"),
        )
        for field, direction in _EM_COUNTERS.items():
            for prefix, counter_phase in phases:
                if prefix + field in comp:
                    out.append(
                        builder.make(
                            "energy",
                            number(topic, comp[prefix + field], f"{key}.{prefix}{field}"),
                            "Wh",
                            "cumulative",
                            phase=counter_phase,
                            direction=direction,
                        )
                    )
    return out
