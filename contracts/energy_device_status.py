"""``energy.device_status`` v1.0 — whether an energy device is reachable, and what it reports about itself.

Mapping rules (the energy decoders implement them):
- ``device_id`` as in ``energy.meter_reading`` (the same id, so both contracts share a key).
- ``online``: MQTT last-will / availability topics (Tasmota ``tele/<t>/LWT`` ``Online`` / ``Offline``, Shelly
  ``online`` ``true`` / ``false``); for polled devices, a successful poll is online and a failed one offline;
  telemetry missing past the connection's deadline is offline.
- ``reason`` says why the state was decided: ``lwt`` (the broker's last will), ``announce`` (the device said
  so), ``poll_ok``, ``poll_failed``, ``telemetry_timeout``.
- ``observed_at`` is UTC with its source precision; ``time_source`` as in ``energy.meter_reading``: a last
  will and a timeout have no device time and are always ``receive``.
- ``firmware`` is the device's version string as given (Tasmota ``StatusFWR.Version``, Shelly ``fw`` /
  ``fw_id``); ``model`` its model name.
- ``signal_dbm`` is the Wi-Fi RSSI in dBm (Tasmota ``Wifi.Signal``, Shelly ``wifi_sta.rssi`` /
  ``wifi.rssi``); Tasmota's ``Wifi.RSSI`` is a 0-100 quality percentage and is *not* this field.
  ``uptime_s`` is the device's uptime in seconds when reported.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register

__all__ = ["DeviceStatusV1"]


@register
class DeviceStatusV1(Contract):
    """The reachability and self-description of one energy device at one time."""

    contract_name: ClassVar[str] = "energy.device_status"
    contract_version: ClassVar[str] = "1.0"

    device_id: str = Field(min_length=1)
    online: bool
    reason: Literal["lwt", "announce", "poll_ok", "poll_failed", "telemetry_timeout"] | None = None
    observed_at: datetime
    observed_at_precision: Precision | None = None
    time_source: Literal["device", "receive"]
    firmware: str | None = None
    model: str | None = None
    signal_dbm: int | None = Field(default=None, ge=-150, le=0)
    uptime_s: int | None = Field(default=None, ge=0)

    def entity_key(self) -> str:
        """Same key as the device's readings, so status and readings stay ordered together."""
        return self.device_id

    def subject(self) -> str:
        return f"Device/{self.device_id}"

    def occurred_at(self) -> datetime | None:
        return self.observed_at
