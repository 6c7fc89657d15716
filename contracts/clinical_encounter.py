"""``clinical.encounter`` v1.0 — one FHIR R4 Encounter (a visit, stay or home call), flattened.

Mapping rules (the FHIR family's mapper implements them):
- ``encounter_id`` is ``Encounter.id``; ``patient_id`` is the id of ``subject`` (a ``Patient`` reference,
  resolved within the bundle for ``urn:uuid:`` references); ``service_provider_id`` the id of
  ``serviceProvider`` (an ``Organization``). A reference with only a ``display`` gives None.
- ``status`` is ``Encounter.status``; ``encounter_class`` is the single ``Encounter.class`` Coding
  (v3 ActCode ``AMB``, ``IMP``, ``EMER``, ``HH``, ...).
- ``type`` keeps every coding of every ``Encounter.type`` CodeableConcept, in source order; ``type_text``
  is the first concept's ``text``.
- ``period_start`` / ``period_end`` are ``Encounter.period``, UTC, each with its own source precision
  (``"2013-03-11"`` is ``day``, the start of that day in the connection's zone). An open period (ongoing
  stay) has no end.
- ``source_version`` / ``source_last_updated`` as for ``clinical.observation``.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register
from inlet.contracts.clinical_observation import Coding

__all__ = ["EncounterV1"]


@register
class EncounterV1(Contract):
    """An interaction between a patient and a care provider, with its class, type and period."""

    contract_name: ClassVar[str] = "clinical.encounter"
    contract_version: ClassVar[str] = "1.0"

    encounter_id: str = Field(min_length=1)
    patient_id: str | None = None
    status: Literal[
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    encounter_class: Coding
    type: list[Coding] = Field(default_factory=list)
    type_text: str | None = None
    period_start: datetime | None = None
    period_start_precision: Precision | None = None
    period_end: datetime | None = None
    period_end_precision: Precision | None = None
    service_provider_id: str | None = None
    source_last_updated: datetime | None = None
    source_version: str | None = None

    def entity_key(self) -> str:
        """Events of one patient stay ordered; an encounter without a subject keys on itself."""
        return self.patient_id or f"Encounter/{self.encounter_id}"

    def subject(self) -> str:
        return f"Encounter/{self.encounter_id}"

    def occurred_at(self) -> datetime | None:
        return self.period_start
