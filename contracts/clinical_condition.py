"""``clinical.condition`` v1.0 — one FHIR R4 Condition (diagnosis, problem-list item), flattened.

Mapping rules (the FHIR family's mapper implements them):
- ``condition_id`` is ``Condition.id``; ``patient_id`` / ``encounter_id`` are the ids of ``subject`` /
  ``encounter`` (resolved within the bundle for ``urn:uuid:`` references). ``subject`` is required in FHIR.
- ``clinical_status`` / ``verification_status`` are the code of the first coding of
  ``clinicalStatus`` / ``verificationStatus`` from the HL7 code systems (``condition-clinical``,
  ``condition-ver-status``); absent stays None.
- ``category`` holds the category codes; ``code`` keeps every coding of ``Condition.code`` in source order
  and ``code_text`` its ``text`` (``Condition-example2`` has text only: ``code`` may be empty).
- Onset, per ``onset[x]``: ``onsetDateTime`` fills ``onset_start``; ``onsetPeriod`` start and end;
  ``onsetAge`` becomes ``onset_age_years`` (UCUM ``a``, ``mo``, ``wk``, ``d`` converted to years);
  ``onsetString`` / ``onsetRange`` text go to ``onset_text``. Times are UTC with ``onset_precision`` the
  precision of the start (``"2011-08-05"`` is ``day``).
- Abatement, per ``abatement[x]``, follows the same rules into the ``abatement_*`` fields;
  ``abatementBoolean`` fills ``abated``, and any other abatement sets ``abated`` to true.
- ``recorded_date`` is ``recordedDate`` (a FHIR dateTime), UTC with its precision.
- ``source_version`` / ``source_last_updated`` as for ``clinical.observation``.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register
from inlet.contracts.clinical_observation import Coding

__all__ = ["ConditionV1"]


@register
class ConditionV1(Contract):
    """A clinical condition, problem or diagnosis of one patient, with onset and abatement."""

    contract_name: ClassVar[str] = "clinical.condition"
    contract_version: ClassVar[str] = "1.0"

    condition_id: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    encounter_id: str | None = None
    clinical_status: Literal["active", "recurrence", "relapse", "inactive", "remission", "resolved"] | None = None
    verification_status: Literal[
        "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"
    ] | None = None
    category: list[str] = Field(default_factory=list)
    code: list[Coding] = Field(default_factory=list)
    code_text: str | None = None
    onset_start: datetime | None = None
    onset_end: datetime | None = None
    onset_precision: Precision | None = None
    onset_age_years: float | None = Field(default=None, ge=0)
    onset_text: str | None = None
    abated: bool | None = None
    abatement_start: datetime | None = None
    abatement_end: datetime | None = None
    abatement_precision: Precision | None = None
    abatement_age_years: float | None = Field(default=None, ge=0)
    abatement_text: str | None = None
    recorded_date: datetime | None = None
    recorded_date_precision: Precision | None = None
    source_last_updated: datetime | None = None
    source_version: str | None = None

    def entity_key(self) -> str:
        """Events of one patient stay ordered."""
        return self.patient_id

    def subject(self) -> str:
        return f"Condition/{self.condition_id}"

    def occurred_at(self) -> datetime | None:
        """Clinical onset when known, else when it was recorded."""
        return self.onset_start or self.recorded_date
