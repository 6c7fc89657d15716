"""Sparkplug B edge nodes -> meter readings, device status and sequence-gap events.

Unlike the other decoders this one is stateful: Sparkplug DATA messages name metrics by the aliases their
BIRTH certificate defined, and every node numbers its messages. The protocol work (wire format, alias
tables, ``seq`` and ``bdSeq`` bookkeeping) is :mod:`connectors.mqtt_meter.sparkplug`; this module decides
what each :class:`~connectors.mqtt_meter.sparkplug.Observation` becomes:

- **device ids**: an edge node is ``<group>/<node>``, a device behind it ``<group>/<node>/<device>``.
- **metrics -> readings**: a route's ``metrics`` table maps a Sparkplug metric name to metric, unit, kind,
  direction and phase of ``energy.meter_reading``. Without an entry, a metric whose ``engUnit`` property is
  in the contract's unit set becomes a reading named after the last path segment (``Meter/Power`` ->
  ``power``; energy units are cumulative import counters, power a signed gauge, other units gauges).
  Anything else (``bdSeq``, ``Node Control/*``, temperatures, strings, nulls) is not a meter value and is
  not emitted. DATA messages carry no properties, so the units are learnt from the BIRTH certificates
  (bounded).
- **time**: the metric's ``timestamp``, else the payload's (ms since the epoch, UTC, ``device``), else the
  receive time (``receive``).
- **NBIRTH / DBIRTH**: ``energy.device_status`` online (``announce``) plus the readings the certificate
  carries. **NDEATH**: offline with reason ``lwt`` (it is the node's MQTT will); **DDEATH**: offline
  (``announce``: the node says so). A stale NDEATH (an earlier session's ``bdSeq``) is filtered.
- **sequence**: a gap adds an ``energy.data_quality`` ``sequence_gap`` event to the message's readings;
  255 -> 0 is not a gap; a repeated message (same ``seq`` and timestamp) is filtered as a duplicate.
- **before birth**: DATA whose aliases cannot be resolved (inlet started after the node's NBIRTH, or the
  NBIRTH was lost) cannot be mapped: a MappingError -> DLQ record naming the aliases; the node must rebirth
  (Sparkplug hosts request it with NCMD ``Node Control/Rebirth``). Metrics sent by name still map.
- NCMD / DCMD / STATE carry commands and host state, not readings: filtered with that reason.
"""

from __future__ import annotations

from typing import Final, Literal, cast, get_args

from pydantic import Field

from inlet.connectors.mqtt_meter.sparkplug import DataType, Metric, SparkplugSessions, decode_payload, parse_topic
from inlet.contracts.base import Contract
from inlet.contracts.energy_data_quality import DataQualityV1
from inlet.contracts.energy_device_status import DeviceStatusV1
from inlet.contracts.energy_meter_reading import EnergyUnit
from inlet.core.connector import PluginSettings
from inlet.core.errors import MappingError
from inlet.core.time import Instant, normalise

from ._common import DeviceContext, Reading, Skip

__all__ = ["MetricMap", "SparkplugDecoder"]

_NUMERIC: Final = frozenset(
    {
        DataType.Int8,
        DataType.Int16,
        DataType.Int32,
        DataType.Int64,
        DataType.UInt8,
        DataType.UInt16,
        DataType.UInt32,
        DataType.UInt64,
        DataType.Float,
        DataType.Double,
        DataType.Unknown,
    }
)
_UNITS: Final = frozenset(get_args(EnergyUnit))


class MetricMap(PluginSettings):
    """How one Sparkplug metric becomes an ``energy.meter_reading``."""

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    unit: EnergyUnit
    kind: Literal["cumulative", "interval", "instantaneous"] = "instantaneous"
    direction: Literal["import", "export"] | None = None
    """None: import for energy and power units, split by sign when ``signed``."""
    phase: Literal["L1", "L2", "L3", "total"] | None = None
    signed: bool = False
    """A negative value is export (bidirectional meters)."""


class SparkplugDecoder:
    """One per route of one connector: holds the edge nodes' sessions (aliases, seq, online state)."""

    def __init__(self, metrics: dict[str, MetricMap], max_learnt: int = 100_000) -> None:
        self.metrics = metrics
        self.sessions = SparkplugSessions()
        self.max_learnt = max_learnt
        self._learnt: dict[tuple[str, str], MetricMap] = {}
        """(device id, metric name) -> the reading its BIRTH's ``engUnit`` implies (DATA omits properties)."""

    def __call__(self, topic: str, payload: bytes, ctx: DeviceContext) -> list[Contract]:
        where = parse_topic(topic)
        if where.message_type in ("NCMD", "DCMD", "STATE"):
            raise Skip("Sparkplug command or host state (no readings)")
        body = decode_payload(payload)
        seen = self.sessions.observe(where, body)
        node_id = f"{where.group_id}/{where.edge_node_id}"
        device_id = f"{node_id}/{where.device_id}" if where.device_id else node_id
        sent = _instant(body.timestamp_ms)
        if seen.verdict == "duplicate":
            raise Skip(f"duplicate Sparkplug message (seq {body.seq} repeated with the same timestamp)")
        if seen.verdict == "stale_death":
            raise Skip("stale NDEATH (its bdSeq belongs to an earlier session of the node)")
        if seen.unresolved_aliases:
            raise MappingError(
                f"topic {topic!r}: {where.message_type} before the node's NBIRTH: aliases "
                f"{list(seen.unresolved_aliases)} cannot be resolved; the edge node must rebirth"
            )
        out: list[Contract] = []
        kind = where.message_type
        if kind in ("NBIRTH", "DBIRTH", "NDEATH", "DDEATH"):
            out.append(
                DeviceStatusV1(
                    device_id=device_id,
                    online=kind.endswith("BIRTH"),
                    reason="lwt" if kind == "NDEATH" else "announce",
                    observed_at=sent.utc if sent else ctx.received_at,
                    observed_at_precision=sent.precision if sent else None,
                    time_source="device" if sent else "receive",
                )
            )
        if seen.verdict == "gap":
            assert seen.expected_seq is not None and body.seq is not None
            out.append(
                DataQualityV1(
                    device_id=node_id,
                    issue="sequence_gap",
                    source="sparkplug_b",
                    expected_seq=seen.expected_seq,
                    received_seq=body.seq,
                    missing=seen.missing,
                    observed_at=sent.utc if sent else ctx.received_at,
                    time_source="device" if sent else "receive",
                )
            )
        if kind.endswith("BIRTH") and len(self._learnt) < self.max_learnt:
            for m in seen.metrics:
                if m.name is not None and (learnt := _from_properties(m)) is not None:
                    self._learnt[(device_id, m.name)] = learnt
        device = DeviceContext(device_id, ctx.zone, ctx.received_at)
        out.extend(r for m in seen.metrics if (r := self._reading(topic, m, sent, device)) is not None)
        return out

    def _reading(self, topic: str, m: Metric, sent: Instant | None, ctx: DeviceContext) -> Contract | None:
        if m.name is None or m.is_null or m.datatype not in _NUMERIC or isinstance(m.value, bool | str | bytes | list):
            return None
        spec = self.metrics.get(m.name) or self._learnt.get((ctx.device_id, m.name))
        if spec is None:
            return None
        at = _instant(m.timestamp_ms) or sent
        builder = Reading(topic, ctx, at or Instant(ctx.received_at), "device" if at else "receive")
        return builder.make(
            spec.metric,
            float(m.value),
            spec.unit,
            spec.kind,
            phase=spec.phase,
            direction=spec.direction,
            signed=spec.signed,
        )


def _instant(ms: int | None) -> Instant | None:
    return normalise(ms, "UTC") if ms else None


def _from_properties(m: Metric) -> MetricMap | None:
    unit = m.properties.get("engUnit") or m.properties.get("EngUnit")
    if not isinstance(unit, str) or unit not in _UNITS or m.name is None:
        return None
    name = m.name.rsplit("/", 1)[-1].strip().lower().replace(" ", "_")
    metric = {"wh": "energy", "kwh": "energy"}.get(unit.lower(), name)
    kind: Literal["cumulative", "instantaneous"] = "cumulative" if unit in ("Wh", "kWh") else "instantaneous"
    try:
        return MetricMap(metric=metric, unit=cast(EnergyUnit, unit), kind=kind, signed=unit in ("W", "kW"))
    except ValueError:
        return None
