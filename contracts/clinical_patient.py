"""``clinical.patient`` v1.0 — one FHIR R4 Patient, reduced to what consumers may know about a person.

Mapping rules (the FHIR family's mapper implements them):
- ``patient_id`` is ``Patient.id``; ``identifiers`` keep every ``Patient.identifier`` with a ``value`` as
  ``system`` / ``value`` in source order (pseudonymising identifiers happens upstream, not here).
- ``gender`` is ``Patient.gender`` as coded by FHIR; ``active`` is ``Patient.active``.
- ``birth_date`` is ``Patient.birthDate``, a *calendar date*, not an instant: it is never shifted to UTC (a
  birthday does not move with the server's zone). FHIR allows ``YYYY`` and ``YYYY-MM``: those become the first
  day of the year / month and ``birth_date_precision`` says ``year`` / ``month``. The
  ``patient-birthTime`` extension (``_birthDate``) is dropped.
- ``deceased``: ``deceasedBoolean`` as given; ``deceasedDateTime`` sets ``deceased`` to true and fills
  ``deceased_at`` (UTC) with ``deceased_precision``. Absent means unknown (None), not alive.
- ``source_version`` / ``source_last_updated`` are ``meta.versionId`` / ``meta.lastUpdated`` (as for
  ``clinical.observation``).

Data minimisation (a contract decision, not a mapper option): the event carries no direct identifiers
beyond ``identifiers`` — no ``name``, ``telecom``, ``photo``, ``contact``, ``address.line``, ``city``,
``district`` or ``state``, and no birth time. Of the address only the *home* address is used (``use`` =
``home``; else the first address whose ``use`` is not ``old``), and of it only ``address_country`` (as the
source writes it, e.g. ``NLD``) and ``postal_prefix``: the first three characters of ``postalCode`` after
removing spaces, upper-cased (``"1024 RJ"`` → ``"102"``, ``"44130"`` → ``"441"``), or None when the code
has fewer than three characters. Three characters locate a region, in the spirit of HIPAA Safe Harbor's
three-digit ZIP rule, without locating a household.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from inlet.contracts.base import Contract, Part, Precision, register

__all__ = ["DatePrecision", "Identifier", "PatientV1"]

DatePrecision = Literal["year", "month", "day"]
"""How precise a FHIR ``date`` was (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``)."""


class Identifier(Part):
    """One ``Patient.identifier``: the namespace (``system`` URI) and the value in it."""

    system: str | None = None
    value: str = Field(min_length=1)


@register
class PatientV1(Contract):
    """A patient's demographic facts that models need (sex, age, vital status, region), nothing more."""

    contract_name: ClassVar[str] = "clinical.patient"
    contract_version: ClassVar[str] = "1.0"

    patient_id: str = Field(min_length=1)
    identifiers: list[Identifier] = Field(default_factory=list)
    active: bool | None = None
    gender: Literal["male", "female", "other", "unknown"] | None = None
    birth_date: date | None = None
    birth_date_precision: DatePrecision | None = None
    deceased: bool | None = None
    deceased_at: datetime | None = None
    deceased_precision: Precision | None = None
    address_country: str | None = None
    postal_prefix: str | None = Field(default=None, min_length=3, max_length=3)
    source_last_updated: datetime | None = None
    source_version: str | None = None

    @model_validator(mode="after")
    def _deceased_consistent(self) -> Self:
        if self.deceased_at is not None and self.deceased is not True:
            raise ValueError("deceased_at is set, so deceased must be true")
        return self

    def entity_key(self) -> str:
        """All events of one patient stay ordered."""
        return self.patient_id

    def subject(self) -> str:
        return f"Patient/{self.patient_id}"

    def occurred_at(self) -> datetime | None:
        """A patient record has no clinical time of its own: the event is its last update."""
        return self.source_last_updated
