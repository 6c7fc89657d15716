"""The MQTT meter-hub family: topic routes → decoder → ``energy.meter_reading`` events.

A plugin (or just YAML) lists routes: an MQTT topic filter, the decoder for what arrives there, which
topic level names the device, and the device's zone (for devices that report naive local time). Sparkplug
B routes also produce ``energy.device_status`` (BIRTH / DEATH) and ``energy.data_quality`` (sequence gaps).
Every message either becomes events, goes to the DLQ, or is filtered with a stated reason (no route, no
meter value, duplicate, Sparkplug command). The transport is :class:`core.mqtt.MqttSource`: QoS 1 on a
persistent session, PUBACKs sent in ``acknowledge`` — only after the sink has every event of the batch
(the pipeline guarantees the order).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import orjson
from paho.mqtt.client import topic_matches_sub
from pydantic import Field

from inlet.contracts.base import Contract
from inlet.contracts.energy_data_quality import DataQualityV1
from inlet.contracts.energy_device_status import DeviceStatusV1
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import DecodeError, MappingError, NotReplayable
from inlet.core.mqtt import MessageSource, MqttMessage, MqttSettings, open_source
from inlet.core.scaffold import Scaffold
from inlet.core.time import normalise
from inlet.core.types import Position

from .decoders._common import DeviceContext, Skip
from .decoders.sparkplug_b import MetricMap, SparkplugDecoder
from .hygiene import Hygiene, Noted

__all__ = ["DeviceContext", "MqttMeterConnector", "MqttMeterSettings", "Route", "decode_json"]

Decoder = Callable[[str, bytes, DeviceContext], Sequence[Contract]]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A received message with what it decoded to, or the stated reason it yields nothing."""

    message: MqttMessage
    events: list[Contract]
    skip: str | None


class Route(PluginSettings):
    """Messages on ``topic`` (an MQTT filter, ``+``/``#`` allowed) are decoded by ``decoder``."""

    topic: str
    decoder: Literal["json", "tasmota", "shelly", "senml", "sparkplug"]
    device_level: int = Field(default=1, ge=0)
    """Which topic level (0-based) is the device id: ``tele/<device>/SENSOR`` → 1 (Sparkplug: from the topic)."""
    zone: str | None = None
    """The device's IANA zone, for naive local timestamps (Tasmota ``Time``); default: the integration's."""
    metrics: dict[str, MetricMap] = Field(default_factory=dict)
    """Sparkplug only: metric name → reading (others fall back to their ``engUnit`` property)."""


class MqttMeterSettings(PluginSettings):
    """An MQTT meter hub: broker, subscriptions, routes."""

    mqtt: MqttSettings
    routes: list[Route] = Field(min_length=1)
    time_conflicts: Literal["flag", "dlq"] = "flag"
    """A different value at a device time already seen in its series (clock reset, repeated autumn hour):
    ``flag`` emits it marked ``clock_suspect``; ``dlq`` sends its message to the DLQ. Never filtered."""


_HYGIENE_SAVE_SECONDS = 5.0
"""How often the committed hygiene memory is written (and at close): a kill -9 forgets at most this much."""

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
    return [
        MeterReadingV1.model_validate(
            {
                "device_id": doc.get("device") or ctx.device_id,
                "metric": doc.get("metric"),
                "quantity": value,
                "unit": doc.get("unit"),
                "direction": direction,
                "kind": doc.get("kind", "instantaneous"),
                "measured_at": when.utc if when else ctx.received_at,
                "measured_at_precision": when.precision if when else None,
                "time_source": "device" if when else "receive",
            }
        )
    ]


def _decoder(route: Route) -> Decoder:
    """The route's decoder; a stateful one (Sparkplug's sessions) is made per route and connector."""
    if route.decoder == "json":
        return decode_json
    if route.decoder == "sparkplug":
        return SparkplugDecoder(route.metrics)
    module = importlib.import_module(f"inlet.connectors.mqtt_meter.decoders.{route.decoder}")
    fn: Decoder = getattr(module, f"decode_{route.decoder}")
    return fn


_ROUTES_STUB = '''
def _routes() -> list[Route]:
    """This customer's topic layout: which topics, which decoder, which topic level is the device."""
    raise ConfigError("{module}.{integration}: the topic routes are not configured yet. Write them in _routes() of "
                      "this module, e.g. [Route(topic='tele/+/SENSOR', decoder='tasmota', device_level=1)]")


class {Class}Settings(MqttMeterSettings):
    """Only the broker is per deployment; the routes are the customer's topic layout."""

    routes: list[Route] = Field(default_factory=_routes, min_length=1)
'''
_SETTINGS_BODY = "    settings_model: ClassVar[type[PluginSettings]] = {Class}Settings"


class MqttMeterConnector(Connector[MqttMeterSettings]):
    """Meter readings from an MQTT hub, acknowledged only once they are in the sink."""

    name: ClassVar[str] = "mqtt_meter"
    settings_model: ClassVar[type[PluginSettings]] = MqttMeterSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (MeterReadingV1, DeviceStatusV1, DataQualityV1)
    description: ClassVar[str] = "MQTT meter hub (QoS 1, persistent session, PUBACK after the sink)"
    shares_source: ClassVar[bool] = True  # slots: one $share subscription, one persistent session per slot
    redelivers: ClassVar[bool] = True  # the broker redelivers what was not PUBACKed
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="mqtt_meter",
        integration="meters",
        zone="Europe/Berlin",
        settings={"mqtt": {"url": "mqtt://127.0.0.1:1883", "topics": ["tele/+/SENSOR"]}},
        imports="from pydantic import Field",
        in_module=("routes",),
        extra=_ROUTES_STUB,
        class_body=_SETTINGS_BODY,
        record="inlet record {key} --config {config} --idle 3   # drains what the hub's session receives",
    )

    source: MessageSource

    def config_warnings(self) -> list[str]:
        """Routes of devices that report naive local time (Tasmota) need a zone, on the route or the integration."""
        return [
            f"route {r.topic!r} (decoder {r.decoder}) has no zone and the integration none: the devices' naive "
            "local times cannot be placed in time, so their readings go to the DLQ (stage map)"
            for r in self.settings.routes
            if r.decoder == "tasmota" and r.zone is None and self.ctx.zone is None
        ]

    async def open(self) -> None:
        s = self.settings
        self.source = open_source(
            self.ctx, s.mqtt, s.mqtt.client_id or f"inlet-{self.ctx.customer}-{self.ctx.integration}"
        )
        self._routes = [(r, _decoder(r)) for r in s.routes]
        self._route_cache: dict[str, tuple[Route, Decoder] | None] = {}
        self.hygiene = Hygiene()
        self._committed = Hygiene()  # what the sink acknowledged: the part of hygiene that survives a restart
        self._pending: dict[int, list[Noted]] = {}  # per unacknowledged message: what the committed memory notes
        self._hygiene_file = self.ctx.state_path("hygiene")
        if self._hygiene_file is not None and self.ctx.slot is not None:  # each slot remembers what it saw
            self._hygiene_file = self._hygiene_file.with_suffix(f".s{self.ctx.slot}.json")
        self._saved_at = time.monotonic()
        if self._hygiene_file is not None and self._hygiene_file.is_file():
            doc = orjson.loads(self._hygiene_file.read_bytes())
            self.hygiene.restore(doc)
            self._committed.restore(doc)
        await self.source.start()

    async def close(self) -> None:
        await self.source.stop()
        self._save_hygiene()

    def _save_hygiene(self) -> None:
        """Write the committed hygiene memory atomically (a crash mid-write leaves the previous one)."""
        if self._hygiene_file is not None:
            tmp = self._hygiene_file.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(self._committed.snapshot()))
            tmp.replace(self._hygiene_file)
            self._saved_at = time.monotonic()

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        # The position of a push source is the set of PUBACKs still owed; nothing to resume from.
        batches = aiter(self.source.batches())
        mqtt = self.settings.mqtt
        wait = mqtt.once_idle_seconds + mqtt.once_connect_seconds if self.ctx.run_once else None
        while True:
            try:  # --once: a hub never catches up, so the read ends once the session has gone quiet
                messages = await asyncio.wait_for(anext(batches), wait) if wait else await anext(batches)
            except (StopAsyncIteration, TimeoutError):
                return
            wait = mqtt.once_idle_seconds if wait else None
            yield Batch(messages, {"mids": [m.mid for m in messages if m.qos > 0]})

    def redelivery_key(self, raw: MqttMessage) -> bytes:
        return raw.topic.encode() + b"\0" + raw.payload

    def describe_position(self, position: Position | None) -> str:
        return "the broker keeps unacknowledged messages in the session: a position changes nothing"

    async def acknowledge(self, position: Position) -> None:
        mids = list(position.get("mids", ()))
        pending, commit = self._pending, self._committed.commit
        for mid in mids:  # the sink has these messages' readings: hygiene may remember them across restarts
            noted = pending.pop(mid, None)
            if noted is not None:
                commit(noted)
        if time.monotonic() - self._saved_at >= _HYGIENE_SAVE_SECONDS:
            self._save_hygiene()
        self.source.ack(mids)

    def _route(self, topic: str) -> tuple[Route, Decoder] | None:
        # paho's topic_matches_sub builds a matcher per call (~9 µs); a hub has a bounded set of topics.
        if topic in self._route_cache:
            return self._route_cache[topic]
        routed = next((rd for rd in self._routes if topic_matches_sub(rd[0].topic, topic)), None)
        if len(self._route_cache) >= 100_000:
            self._route_cache.clear()
        self._route_cache[topic] = routed
        return routed

    def raw_from_dlq(self, payload: bytes) -> MqttMessage:
        """Not replayable from the DLQ: the decoder and the device come from the message's topic, which the DLQ
        record does not hold; a meter republishes, or the recording replays, the message itself."""
        raise NotReplayable("an MQTT reading's DLQ payload has no topic, and the topic names its decoder and device")

    def decode(self, raw: MqttMessage) -> Decoded:
        """Route and decode the message, then apply the cross-message hygiene rules (in arrival order)."""
        if len(raw.payload) > self.settings.mqtt.max_payload_bytes:
            raise DecodeError(
                f"topic {raw.topic}: payload of {len(raw.payload)} bytes exceeds "
                f"max_payload_bytes={self.settings.mqtt.max_payload_bytes}"
            )
        routed = self._route(raw.topic)
        if routed is None:
            return Decoded(raw, [], "no route for this topic")
        route, decoder = routed
        levels = raw.topic.split("/")
        if route.device_level >= len(levels):
            raise MappingError(f"topic {raw.topic} has no level {route.device_level} for the device id")
        ctx = DeviceContext(levels[route.device_level], route.zone or self.ctx.zone, raw.received_at)
        try:
            decoded = decoder(raw.topic, raw.payload, ctx)
        except Skip as skip:
            return Decoded(raw, [], skip.reason)
        if not decoded:
            return Decoded(raw, [], "no meter value in this message (status, announce or non-energy sensor)")
        if all(type(e) is MeterReadingV1 for e in decoded):  # what every decoder but Sparkplug's returns
            readings, others = cast(list[MeterReadingV1], decoded), []
        else:
            readings = [r for r in decoded if isinstance(r, MeterReadingV1)]
            others = [e for e in decoded if not isinstance(e, MeterReadingV1)]
        verdict = self.hygiene.apply(readings)
        if verdict.conflicts and self.settings.time_conflicts == "dlq":
            raise MappingError(
                f"topic {raw.topic}: {verdict.conflicts} reading(s) with a different value at a device "
                "time already seen (the device clock is suspect; time_conflicts: dlq)"
            )
        kept = verdict.kept
        if not kept and not others:
            return Decoded(raw, [], "duplicate readings (same device, metric, time and value as readings already sent)")
        if verdict.duplicates:
            self.log.info("duplicate readings dropped", topic=raw.topic, duplicates=verdict.duplicates, kept=len(kept))
        if raw.qos > 0 and kept:
            noted = self._pending.get(raw.mid)
            if noted is None:
                self._pending[raw.mid] = verdict.noted
            else:
                noted.extend(verdict.noted)
        return Decoded(raw, [*others, *kept] if others else cast(list[Contract], kept), None)

    def filter(self, record: Decoded) -> str | None:
        return record.skip

    def identity(self, record: Decoded | MqttMessage) -> tuple[str, str]:
        # A redelivered message has the same topic and payload, hence the same event ids. A message that failed
        # to decode is identified the same way, so its DLQ record names its topic.
        message = record.message if isinstance(record, Decoded) else record
        return message.topic, hashlib.sha256(message.payload).hexdigest()[:32]

    def map(self, record: Decoded) -> Sequence[Contract]:
        return record.events
