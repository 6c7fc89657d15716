"""``energy.data_quality`` v1.0 — something a consumer must know about the *stream* of a device, not a value.

Readings carry their own quality flags (``energy.meter_reading`` ``quality``); this contract is for what no
single reading can say: messages that never arrived.

Mapping rules (the energy decoders implement them):
- ``device_id`` is the id the device's readings carry (a Sparkplug edge node: ``<group>/<node>``), so the
  event shares their key and stays ordered with them.
- ``issue`` ``sequence_gap``: a Sparkplug B edge node numbers every message ``seq`` 0-255 (wrapping 255 -> 0);
  a message whose ``seq`` is not the previous one + 1 (mod 256) means ``missing`` messages were lost
  between the node and us. ``expected_seq`` is what should have come, ``received_seq`` what came.
- ``observed_at`` is when the gap became visible: the payload's timestamp when it has one (``device``),
  else the receive time (``receive``).
- ``source`` names the protocol that numbered the messages (``sparkplug_b``).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, register

__all__ = ["DataQualityV1"]


@register
class DataQualityV1(Contract):
    """A data-quality finding about one device's message stream (a sequence gap)."""

    contract_name: ClassVar[str] = "energy.data_quality"
    contract_version: ClassVar[str] = "1.0"

    device_id: str = Field(min_length=1)
    issue: Literal["sequence_gap"]
    source: Literal["sparkplug_b"]
    expected_seq: int = Field(ge=0, le=255)
    received_seq: int = Field(ge=0, le=255)
    missing: int = Field(ge=1, le=255)
    observed_at: datetime
    time_source: Literal["device", "receive"]

    def entity_key(self) -> str:
        """Same key as the device's readings: the gap is ordered with the readings around it."""
        return self.device_id

    def subject(self) -> str:
        return f"Device/{self.device_id}/sequence"

    def occurred_at(self) -> datetime | None:
        return self.observed_at
