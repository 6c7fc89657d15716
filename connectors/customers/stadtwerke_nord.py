"""Stadtwerke Nord — a municipal utility's meter hub (Europe/Berlin): Tasmota and Shelly meters on MQTT.

A per-customer plugin of the MQTT meter family fixes what is the same for every deployment of this
customer, so their YAML only says where the broker is:

- the hub's topic layout: Tasmota on the default ``tele/<device>/SENSOR|STATE``, Shelly Gen1 3EMs on
  ``shellies/<id>/emeter/<i>/<value>``, and — the customer's quirk — Shelly Pro 3EMs configured with the
  MQTT prefix ``swn/<device-id>`` instead of the default, so their frames arrive on
  ``swn/<device-id>/events/rpc``;
- the devices' zone: Tasmota reports naive local time, read in Europe/Berlin (fixed in the routes: every
  site of this customer is in Germany).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings, Route
from inlet.core.connector import PluginSettings

__all__ = ["StadtwerkeNordMeters"]

ROUTES = (
    Route(topic="tele/+/SENSOR", decoder="tasmota", device_level=1, zone="Europe/Berlin"),
    Route(topic="tele/+/STATE", decoder="tasmota", device_level=1, zone="Europe/Berlin"),
    Route(topic="shellies/+/emeter/#", decoder="shelly", device_level=1),
    Route(topic="swn/+/events/rpc", decoder="shelly", device_level=1),
)


class StadtwerkeNordSettings(MqttMeterSettings):
    """Only the broker is per deployment; the routes are the customer's topic layout."""

    routes: list[Route] = Field(default_factory=lambda: list(ROUTES), min_length=1)


class StadtwerkeNordMeters(MqttMeterConnector):
    """Stadtwerke Nord's household and feeder meters (Tasmota, Shelly Gen1 and Gen2)."""

    name: ClassVar[str] = "stadtwerke_nord.meters"
    settings_model: ClassVar[type[PluginSettings]] = StadtwerkeNordSettings
    description: ClassVar[str] = "Stadtwerke Nord meter hub (Tasmota + Shelly, Europe/Berlin)"
