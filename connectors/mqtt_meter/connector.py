"""The MQTT meter-hub family: topic routes → decoder → ``energy.meter_reading`` events.

A plugin (or just YAML) lists routes: an MQTT topic filter, the decoder for what arrives there, which
topic level names the device, and the device's zone (for devices that report naive local time). The
transport is :class:`core.mqtt.MqttSource`: QoS 1 on a persistent session, PUBACKs sent in
``acknowledge`` — only after the sink has every event of the batch (the pipeline guarantees the order).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

import orjson
from paho.mqtt.client import topic_matches_sub
from pydantic import Field

from contracts.base import Contract
from contracts.energy_meter_reading import MeterReadingV1
from core.connector import Batch, Connector, PluginSettings
from core.errors import DecodeError, MappingError
from core.mqtt import MessageSource, MqttMessage, MqttSettings, open_source
from core.time import normalise
from core.types import Position

from .hygiene import Hygiene

__all__ = ["DeviceContext", "MqttMeterConnector", "MqttMeterSettings", "Route", "decode_json"]


@dataclass(frozen=True)
class DeviceContext:
    """What a decoder knows besides the payload: which device, its zone, when the message arrived."""

    device_id: str
    zone: str | None
    received_at: datetime


Decoder = Callable[[str, bytes, DeviceContext], list[MeterReadingV1]]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A received message with what it decoded to, or the stated reason it yields nothing."""

    message: MqttMessage
    events: list[MeterReadingV1]
    skip: str | None


class Route(PluginSettings):
    """Messages on ``topic`` (an MQTT filter, ``+``/``#`` allowed) are decoded by ``decoder``."""

    topic: str
    decoder: Literal["json", "tasmota", "shelly", "senml"]
    device_level: int = Field(default=1, ge=0)
    """Which topic level (0-based) is the device id: ``tele/<device>/SENSOR`` → 1."""
    zone: str | None = None
    """The device's IANA zone, for naive local timestamps (Tasmota ``Time``); default: the integration's."""


class MqttMeterSettings(PluginSettings):
    """An MQTT meter hub: broker, subscriptions, routes."""

    mqtt: MqttSettings
    routes: list[Route] = Field(min_length=1)


_FLOW_UNITS = frozenset({"W", "kW", "Wh", "kWh"})


def decode_json(topic: str, payload: bytes, ctx: DeviceContext) -> list[MeterReadingV1]:
    """A plain JSON reading ``{"metric", "value", "unit", "ts"?, "direction"?, "kind"?}`` (hubs we control)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"topic {topic}: payload is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"topic {topic}: expected a JSON object, got {type(doc).__name__}")
    ts = doc.get("ts")
    when = normalise(ts, ctx.zone) if ts is not None else None
    value, direction = doc.get("value"), doc.get("direction")
    if direction is None and doc.get("unit") in _FLOW_UNITS and isinstance(value, int | float):
        # A signed power or energy value: negative is export (the contract carries the magnitude).
        value, direction = abs(value), ("export" if value < 0 else "import")
    return [MeterReadingV1.model_validate({
        "device_id": doc.get("device") or ctx.device_id,
        "metric": doc.get("metric"),
        "quantity": value,
        "unit": doc.get("unit"),
        "direction": direction,
        "kind": doc.get("kind", "instantaneous"),
        "measured_at": when.utc if when else ctx.received_at,
        "measured_at_precision": when.precision if when else None,
        "time_source": "device" if when else "receive",
    })]


def _decoder(name: str) -> Decoder:
    if name == "json":
        return decode_json
    module = importlib.import_module(f"connectors.mqtt_meter.decoders.{name}")
    fn: Decoder = getattr(module, f"decode_{name}")
    return fn


class MqttMeterConnector(Connector[MqttMeterSettings]):
    """Meter readings from an MQTT hub, acknowledged only once they are in the sink."""

    name: ClassVar[str] = "mqtt_meter"
    settings_model: ClassVar[type[PluginSettings]] = MqttMeterSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (MeterReadingV1,)
    description: ClassVar[str] = "MQTT meter hub (QoS 1, persistent session, PUBACK after the sink)"

    source: MessageSource

    async def open(self) -> None:
        s = self.settings
        self.source = open_source(self.ctx, s.mqtt,
                                  s.mqtt.client_id or f"inlet-{self.ctx.customer}-{self.ctx.integration}")
        self._decoders = {r.decoder: _decoder(r.decoder) for r in s.routes}
        self.hygiene = Hygiene()
        await self.source.start()

    async def close(self) -> None:
        await self.source.stop()

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        # The position of a push source is the set of PUBACKs still owed; nothing to resume from.
        async for messages in self.source.batches():
            yield Batch(messages, {"mids": [m.mid for m in messages if m.qos > 0]})

    async def acknowledge(self, position: Position) -> None:
        self.source.ack(list(position.get("mids", ())))

    def _route(self, topic: str) -> Route | None:
        return next((r for r in self.settings.routes if topic_matches_sub(r.topic, topic)), None)

    def decode(self, raw: MqttMessage) -> Decoded:
        """Route and decode the message, then apply the cross-message hygiene rules (in arrival order)."""
        if len(raw.payload) > self.settings.mqtt.max_payload_bytes:
            raise DecodeError(f"topic {raw.topic}: payload of {len(raw.payload)} bytes exceeds "
                              f"max_payload_bytes={self.settings.mqtt.max_payload_bytes}")
        route = self._route(raw.topic)
        if route is None:
            return Decoded(raw, [], "no route for this topic")
        levels = raw.topic.split("/")
        if route.device_level >= len(levels):
            raise MappingError(f"topic {raw.topic} has no level {route.device_level} for the device id")
        ctx = DeviceContext(levels[route.device_level], route.zone or self.ctx.zone, raw.received_at)
        readings = self._decoders[route.decoder](raw.topic, raw.payload, ctx)
        if not readings:
            return Decoded(raw, [], "no meter value in this message (status, announce or non-energy sensor)")
        kept, duplicates = self.hygiene.apply(readings)
        if not kept:
            return Decoded(raw, [], "duplicate readings (same device, metric and time as readings already sent)")
        if duplicates:
            self.log.info("duplicate readings dropped", topic=raw.topic, duplicates=duplicates, kept=len(kept))
        return Decoded(raw, kept, None)

    def filter(self, record: Decoded) -> str | None:
        return record.skip

    def identity(self, record: Decoded) -> tuple[str, str]:
        # A redelivered message has the same topic and payload, hence the same event ids.
        return record.message.topic, hashlib.sha256(record.message.payload).hexdigest()[:32]

    def map(self, record: Decoded) -> Sequence[Contract]:
        return record.events
