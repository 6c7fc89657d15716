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

FHIR decimals (reviewed with ``clinical.observation`` v2.0, which made every decimal it carries an exact
string). The Condition elements fed from a FHIR ``decimal`` are the ``Age`` and ``Range`` of ``onset[x]`` /
``abatement[x]``:

- ``onset_age_years`` / ``abatement_age_years`` stay floats, by decision: they are *derived*, not passed
  through. The Age is converted into years (``mo`` / 12, ``wk`` * 7 / 365.25, ``d`` / 365.25), and no decimal
  string can hold that result exactly either (1 mo = 0.08333… a), so the source's digits and scale do not
  survive the conversion whatever the type; a float keeps 15 significant digits, more than any age has. What
  is exact is the reading: the Age's value goes through the family's exact decimal reading first (a value
  that is not a finite JSON number is a MappingError naming ``onsetAge.value``, never a guess), and is then
  converted once. A consumer that needs the Age *as written* (value and UCUM unit) is the reason for a v2.0
  with the quantity passed through as a decimal string, dual-published like ``clinical.observation``; a new
  major moves every consumer, so it waits for that consumer.
- ``onsetRange`` / ``abatementRange`` become ``*_text`` strings whose bounds are the exact decimals the source
  wrote (``"5.10 a - 7 a"``): passed through, nothing rounded.
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
    verification_status: (
        Literal["unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"] | None
    ) = None
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
