"""``clinical.medication_request`` v1.0 — one FHIR R4 MedicationRequest (prescription / order), flattened.

Mapping rules (the FHIR family's mapper implements them):
- ``medication_request_id`` is ``MedicationRequest.id``; ``patient_id`` / ``encounter_id`` are the ids of
  ``subject`` / ``encounter`` (resolved within the bundle for ``urn:uuid:`` references).
- ``status`` and ``intent`` are FHIR's codes as given.
- ``medication`` keeps every coding of the medication in source order: of ``medicationCodeableConcept``, or,
  for ``medicationReference``, of the referenced Medication's ``code`` — a contained resource (``#med0320``)
  or one in the same bundle. ``medication_id`` is the id of a non-contained referenced Medication (the
  consumer may join ``Medication/<id>``); ``medication_text`` is the concept's ``text`` (or the reference's
  ``display`` when nothing else resolves).
- ``authored_on`` is ``authoredOn``, UTC with ``authored_on_precision`` (``"2015-01-15"`` is ``day``).
- ``dosage_text`` holds each ``dosageInstruction.text`` in ``sequence`` order (instructions without text are
  skipped); the structured timing/dose is not part of v1.
- ``requester_type`` / ``requester_id`` split the ``requester`` reference (``Practitioner/f007``).
- ``source_version`` / ``source_last_updated`` as for ``clinical.observation``.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register
from inlet.contracts.clinical_observation import Coding

__all__ = ["MedicationRequestV1"]


@register
class MedicationRequestV1(Contract):
    """An order or proposal to supply and administer a medication to one patient."""

    contract_name: ClassVar[str] = "clinical.medication_request"
    contract_version: ClassVar[str] = "1.0"

    medication_request_id: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    encounter_id: str | None = None
    status: Literal["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"]
    intent: Literal[
        "proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"
    ]
    medication: list[Coding] = Field(default_factory=list)
    medication_text: str | None = None
    medication_id: str | None = None
    authored_on: datetime | None = None
    authored_on_precision: Precision | None = None
    dosage_text: list[str] = Field(default_factory=list)
    requester_type: (
        Literal["Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson", "Device"] | None
    ) = None
    requester_id: str | None = None
    source_last_updated: datetime | None = None
    source_version: str | None = None

    def entity_key(self) -> str:
        """Events of one patient stay ordered."""
        return self.patient_id

    def subject(self) -> str:
        return f"MedicationRequest/{self.medication_request_id}"

    def occurred_at(self) -> datetime | None:
        return self.authored_on
