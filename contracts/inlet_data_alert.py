"""``inlet.data_alert`` v1.0 — a data-quality monitor's finding about an integration's *values*, and its clearing.

Published by ``core.monitors`` on the topic of this contract (``inlet.data_alert.v1`` by default), one event when
an alert opens and one when it clears; nothing in between however long it stays open, so a consumer (a pager, a
model-serving gate) sees each problem once.

Mapping rules (``core.monitors`` implements them):
- ``alert_id`` is the same for the opening and the clearing event of one alert (a UUID derived from the
  integration, check, contract, field, series and the window it opened in), and is the Kafka key together with
  the integration: an alert's two events stay ordered.
- ``expected`` / ``seen`` are in ``measure`` units: ``events`` (volume), ``seconds`` (freshness), ``value`` (the
  median of a numeric series), ``share`` (0..1 of a field's events: categories and nulls).
- ``window_start`` / ``window_end`` bound the window that was judged (for ``silence``: from the last event to
  when the silence was judged). ``observed_at`` is when the finding was made.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, register

__all__ = ["DataAlertV1"]

MonitorKind = Literal["volume", "freshness", "numeric", "categorical", "nulls"]
CheckKind = Literal["volume_drop", "volume_spike", "silence", "lag", "level_shift", "share_change", "null_rate"]


@register
class DataAlertV1(Contract):
    """An alert of one data-quality monitor on one integration: opened, or cleared."""

    contract_name: ClassVar[str] = "inlet.data_alert"
    contract_version: ClassVar[str] = "1.0"

    alert_id: str = Field(min_length=1)
    status: Literal["open", "cleared"]
    customer: str = Field(min_length=1)
    integration: str = Field(min_length=1)
    monitor: MonitorKind
    check: CheckKind
    contract: str | None = None
    """The event contract the field belongs to (None for volume and freshness, which count every event)."""
    field: str | None = None
    series: str | None = None
    """The series of a numeric field (``device/metric``), or the code whose share moved (categorical)."""
    measure: Literal["events", "seconds", "value", "share"]
    expected: float = Field(allow_inf_nan=False)
    seen: float = Field(allow_inf_nan=False)
    window_start: datetime
    window_end: datetime
    observed_at: datetime
    detail: str = Field(min_length=1, max_length=1000)
    """One sentence a person can act on: what was expected, what was seen, over which window."""

    def entity_key(self) -> str:
        """Alerts of one integration stay ordered (an alert's clearing after its opening)."""
        return f"{self.customer}/{self.integration}"

    def subject(self) -> str:
        return f"{self.customer}/{self.integration}/{self.monitor}/{self.alert_id}"

    def occurred_at(self) -> datetime | None:
        return self.observed_at
