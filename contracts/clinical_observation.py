"""``clinical.observation`` v1.0 — one FHIR R4 Observation, flattened for consumers.

Mapping rules (the FHIR family's mapper implements them; see ``connectors/fhir/mapping.py``):
- ``observation_id`` is ``Observation.id``; ``patient_id`` / ``encounter_id`` are the ids of
  ``subject`` / ``encounter`` references, resolved within the bundle for ``urn:uuid:`` references.
- ``code`` keeps every coding of ``Observation.code`` in source order; ``category`` the category codes.
- ``effective_*``: ``effectiveDateTime`` / ``effectiveInstant`` fill ``effective_start`` only;
  ``effectivePeriod`` fills start and end. Times are UTC; ``effective_precision`` keeps FHIR's
  partial-date precision (a birth-year observation stays ``year``).
- ``value`` is a tagged union over ``value[x]``; an Observation with no value and no components carries
  ``data_absent_reason`` instead. Components repeat the same value shapes.
- ``source_version`` is ``meta.versionId`` (or ``meta.lastUpdated`` when the server has no versions):
  with the id it makes the deterministic event id, so a re-read of the same version is a duplicate.

Documented legacy: every value fed from a FHIR ``decimal`` (quantity values, range bounds, ratio terms,
sampled-data origin, period and factor) is a JSON number read as a binary float, so it loses the source's
scale and any digit beyond ~15 (``5.10`` → ``5.1``, ``1234567890123456789.0123456789`` →
``1.2345678901234568e+18``), and v1.0 has no place for ``SampledData.lowerLimit`` / ``upperLimit``.
``clinical.observation`` v2.0 (``contracts.clinical_observation_v2``) carries them exactly; the FHIR family
maps to v2.0 and publishes v1.0 from it through the registered converter, so v1.0 events are what they were.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Monitoring, Part, Precision, register

__all__ = ["Coding", "Component", "ObservationV1", "ObservationValue"]


class Coding(Part):
    """A code from a code system (LOINC, SNOMED CT, UCUM, local)."""

    system: str | None = None
    code: str
    display: str | None = None


class QuantityValue(Part):
    """``valueQuantity``: a number with its unit; ``code`` is the UCUM code when ``system`` is UCUM."""

    type: Literal["quantity"] = "quantity"
    value: float
    unit: str | None = None
    system: str | None = None
    code: str | None = None
    comparator: Literal["<", "<=", ">=", ">"] | None = None


class CodedValue(Part):
    """``valueCodeableConcept``."""

    type: Literal["coded"] = "coded"
    coding: list[Coding]
    text: str | None = None


class StringValue(Part):
    """``valueString``."""

    type: Literal["string"] = "string"
    value: str


class BooleanValue(Part):
    """``valueBoolean``."""

    type: Literal["boolean"] = "boolean"
    value: bool


class IntegerValue(Part):
    """``valueInteger``."""

    type: Literal["integer"] = "integer"
    value: int


class RangeValue(Part):
    """``valueRange``: either bound may be open."""

    type: Literal["range"] = "range"
    low: QuantityValue | None = None
    high: QuantityValue | None = None


class RatioValue(Part):
    """``valueRatio``."""

    type: Literal["ratio"] = "ratio"
    numerator: QuantityValue | None = None
    denominator: QuantityValue | None = None


class SampledDataValue(Part):
    """``valueSampledData``: the samples stay a string as FHIR sends them (space-separated, E/U/L codes)."""

    type: Literal["sampled_data"] = "sampled_data"
    origin: QuantityValue
    period_ms: float
    factor: float | None = None
    dimensions: int
    data: str | None = None


class TimeValue(Part):
    """``valueTime``: a time of day with no date or zone (``HH:MM:SS``)."""

    type: Literal["time"] = "time"
    value: str


class DateTimeValue(Part):
    """``valueDateTime``, UTC with the source precision."""

    type: Literal["datetime"] = "datetime"
    value: datetime
    precision: Precision | None = None


class PeriodValue(Part):
    """``valuePeriod``, UTC."""

    type: Literal["period"] = "period"
    start: datetime | None = None
    end: datetime | None = None


ObservationValue = Annotated[
    QuantityValue
    | CodedValue
    | StringValue
    | BooleanValue
    | IntegerValue
    | RangeValue
    | RatioValue
    | SampledDataValue
    | TimeValue
    | DateTimeValue
    | PeriodValue,
    Field(discriminator="type"),
]


class Component(Part):
    """One ``Observation.component`` (a blood-pressure panel has systolic and diastolic)."""

    code: list[Coding] = Field(min_length=1)
    value: ObservationValue | None = None
    data_absent_reason: str | None = None


@register
class ObservationV1(Contract):
    """A clinical observation (vital sign, lab result, survey answer) of one patient."""

    contract_name: ClassVar[str] = "clinical.observation"
    contract_version: ClassVar[str] = "1.0"
    monitoring: ClassVar[Monitoring | None] = Monitoring(
        numeric=("value.value",),
        series=("code[0].code",),
        categories=("category[]", "status", "code[0].code"),
        nulls=("value", "patient_id", "encounter_id", "effective_start"),
    )

    observation_id: str = Field(min_length=1)
    patient_id: str | None = None
    encounter_id: str | None = None
    status: Literal[
        "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"
    ]
    category: list[str] = Field(default_factory=list)
    code: list[Coding] = Field(min_length=1)
    code_text: str | None = None
    effective_start: datetime | None = None
    effective_end: datetime | None = None
    effective_precision: Precision | None = None
    issued: datetime | None = None
    value: ObservationValue | None = None
    data_absent_reason: str | None = None
    components: list[Component] = Field(default_factory=list)
    has_member: list[str] = Field(default_factory=list)
    source_last_updated: datetime | None = None
    source_version: str | None = None

    def entity_key(self) -> str:
        """Events of one patient stay ordered; observations without a subject key on themselves."""
        return self.patient_id or f"Observation/{self.observation_id}"

    def subject(self) -> str:
        return f"Observation/{self.observation_id}"

    def occurred_at(self) -> datetime | None:
        return self.effective_start or self.issued
