"""Netz Ost — a grid operator's substations (Europe/Zurich): Sparkplug B edge nodes with feeder meters.

The operator's RTUs publish under the Sparkplug group ``netz-ost`` with metric names in German; the plugin
fixes the route and maps those names to ``energy.meter_reading`` (the quirk it absorbs):

========================== ====================================================
``Zaehler/Bezug``          energy, kWh, cumulative, import (the feeder's import counter)
``Zaehler/Lieferung``      energy, kWh, cumulative, export
``Messung/Wirkleistung``   power, kW, signed (negative = the feeder exports)
``Messung/Spannung L1``    voltage, V, phase L1
========================== ====================================================

Other metrics (transformer temperature, ``bdSeq``, ``Node Control/*``) are not meter values. Sparkplug
timestamps are UTC milliseconds, so the zone (Europe/Zurich) only matters for anything a future metric
reports as local wall time; it is set for the integration all the same.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings, Route
from inlet.connectors.mqtt_meter.decoders.sparkplug_b import MetricMap
from inlet.core.connector import PluginSettings

__all__ = ["NetzOstSubstations"]

METRICS = {
    "Zaehler/Bezug": MetricMap(metric="energy", unit="kWh", kind="cumulative", direction="import"),
    "Zaehler/Lieferung": MetricMap(metric="energy", unit="kWh", kind="cumulative", direction="export"),
    "Messung/Wirkleistung": MetricMap(metric="power", unit="kW", signed=True),
    "Messung/Spannung L1": MetricMap(metric="voltage", unit="V", phase="L1"),
}
ROUTES = (
    Route(topic="spBv1.0/netz-ost/#", decoder="sparkplug", device_level=3, zone="Europe/Zurich", metrics=METRICS),
)


class NetzOstSettings(MqttMeterSettings):
    """Only the broker is per deployment; the Sparkplug group and metric names are the operator's."""

    routes: list[Route] = Field(default_factory=lambda: list(ROUTES), min_length=1)


class NetzOstSubstations(MqttMeterConnector):
    """Netz Ost's substation RTUs (Sparkplug B): feeder energy, power and voltage; node birth and death."""

    name: ClassVar[str] = "netz_ost.substations"
    settings_model: ClassVar[type[PluginSettings]] = NetzOstSettings
    description: ClassVar[str] = "Netz Ost substations (Sparkplug B, Europe/Zurich)"
