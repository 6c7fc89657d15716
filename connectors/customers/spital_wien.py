"""Spital Wien — a hospital exporting through FHIR Bulk Data with SMART Backend Services (Europe/Vienna).

Two integrations of one plugin:

- ``nightly``: a full group-level export (``incremental: false``) once a day (``poll_interval_seconds: 86400``) —
  the reconciliation run that re-delivers every resource (same event ids for unchanged resources, so
  consumers see duplicates, not new facts). The supervisor polls at intervals, not at wall-clock times:
  "nightly" means every 24 h from when the daemon started (start it at night, or run this integration
  from a scheduler with ``inlet run --once``);
- ``hourly``: the same group with ``_since`` = the previous export's ``transactionTime`` every hour.

What the plugin fixes for this customer (the YAML only says where and with which key):

- the export: group level for the hospital's research cohort, restricted to the five resource types the
  family maps (``_type``), so the EHR does not assemble files nobody reads;
- the polling: their export service is slow to start, so polls back off up to 5 minutes between status
  checks (``Retry-After`` still wins when they send one) and an export may take 4 hours;
- SMART Backend Services auth (``smart_backend``: a JWT assertion signed with the registered key, ES384),
  the private key from the environment or a file.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
from inlet.core.connector import PluginSettings

__all__ = ["SpitalWienBulk"]

TYPES = ["Patient", "Encounter", "Observation", "Condition", "MedicationRequest"]


class SpitalWienSettings(FhirBulkSettings):
    """The customer's export defaults; ``http`` (base URL, SMART auth), ``group_id`` and ``incremental`` per YAML."""

    level: Literal["system", "group", "patient"] = "group"
    types: list[str] = Field(default_factory=lambda: list(TYPES))
    poll_max_seconds: float = Field(default=300.0, gt=0)
    export_deadline_seconds: float = Field(default=4 * 3600.0, gt=0)


class SpitalWienBulk(FhirBulkExportConnector):
    """Spital Wien's nightly full and hourly incremental Bulk Data exports."""

    name: ClassVar[str] = "spital_wien.bulk"
    settings_model: ClassVar[type[PluginSettings]] = SpitalWienSettings
    description: ClassVar[str] = "Spital Wien Bulk Data export (group, SMART ES384, Europe/Vienna)"
