"""``clinical.observation`` v2.0 — one FHIR R4 Observation, every FHIR ``decimal`` exact as a decimal string.

What changed from v1.0, and only that: each field fed from a FHIR ``decimal`` is a :data:`DecimalString`
(``"5.10"``, ``"1234567890123456789.0123456789"``) instead of a JSON number. A FHIR decimal carries its precision
(FHIR R4 §2.24: ``0.010`` and ``0.01`` are different values to a lab) and a lab value's significant digits are
clinical information; a binary float drops both (``5.10`` → ``5.1``, 19 digits → ``1.2345678901234568e+18``).
The fields:

- ``QuantityValue.value`` — ``valueQuantity``, and so also ``RangeValue.low`` / ``high`` (``valueRange``),
  ``RatioValue.numerator`` / ``denominator`` (``valueRatio``) and ``SampledDataValue.origin``;
- ``SampledDataValue.period_ms``, ``factor``, and the new ``lower_limit`` / ``upper_limit`` (FHIR
  ``SampledData.lowerLimit`` / ``upperLimit``, which v1 dropped: a decimal field v1 never had);
- the same values inside ``components``.

``IntegerValue.value`` (FHIR ``integer``) and ``SampledDataValue.dimensions`` (``positiveInt``) stay integers:
a JSON integer is exact. Everything else is v1.0's shape and v1.0's mapping rules (``clinical_observation``).

How the FHIR family writes the strings (``connectors.fhir.mapping.fhir_decimal``): the digits the source
JSON wrote, in plain notation (no exponent: the pattern refuses one), keeping the scale — ``5.10`` stays
``"5.10"``, ``1e-3`` becomes ``"0.001"``, ``1.50e2`` becomes ``"150"``. Search pages and Bulk NDJSON lines are
parsed by ``core.exact_json``, which hands the mapper a :class:`~decimal.Decimal` wherever a float could not
carry the number as written. A value that cannot be carried exactly — not finite, longer than
``contracts.base.MAX_DECIMAL_CHARS`` written out, a boolean or a string that is not a plain decimal where FHIR
has a number, or a float that may already have rounded (more than 15 significant digits) — makes the record a
MappingError naming the element path and the value: it goes to the DLQ, it is never rounded quietly. (A string
``"5.10"`` is not FHIR JSON but carries the digits exactly: it passes as written, and drift detection reports
the changed type.)

Why a new major and not a minor: the versioning rules (``docs/contracts.md``) make a retyped field a new major.
A ``1.1`` with an extra exact field next to the float would not be FORWARD compatible either — v1.0's objects
are closed (``additionalProperties: false``), so consumers built against 1.0 would reject every 1.1 event.

Dual publishing: the FHIR family maps to v2.0 (topic ``clinical.observation.v2``) and the converter below,
registered v2 → v1, publishes every event as v1.0 too (topic ``clinical.observation.v1``), so v1 consumers
keep being fed while they move. The v1.0 event is what the family published before, with v1's documented
legacy: each decimal becomes the nearest binary float. A value beyond the float range (``1e400``) cannot be
written in v1 at all; the converter raises and the record goes to the DLQ rather than publish ``inf``.
Event ids: a v1.0 event keeps its id (ids of major 1 are derived from the contract name alone), the v2.0
event of the same record gets its own (``clinical.observation.v2``). Deleting the converter retires v1.

For plugin authors: the family's ``map()`` now returns ``ObservationV2``. A plugin that post-processes those
events must test for ``ObservationV2`` (``isinstance(e, ObservationV1)`` no longer matches, and its tweak would
silently stop); what it returns in v2 reaches the v1 topic through the converter, so one tweak serves both.
``connectors.fhir.mapping.with_standard_codes`` takes either major.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import (
    Contract,
    DecimalString,
    Monitoring,
    Part,
    Precision,
    checked_instance,
    converter,
    register,
)
from inlet.contracts.clinical_observation import (
    BooleanValue,
    CodedValue,
    Coding,
    DateTimeValue,
    IntegerValue,
    ObservationV1,
    PeriodValue,
    StringValue,
    TimeValue,
)
from inlet.contracts.clinical_observation import Component as ComponentV1
from inlet.contracts.clinical_observation import QuantityValue as QuantityValueV1

__all__ = [
    "Component",
    "ObservationV2",
    "ObservationValue",
    "QuantityValue",
    "RangeValue",
    "RatioValue",
    "SampledDataValue",
    "to_v1",
    "to_v1_checked",
]


class QuantityValue(Part):
    """``valueQuantity``: an exact decimal with its unit; ``code`` is the UCUM code when ``system`` is UCUM."""

    type: Literal["quantity"] = "quantity"
    value: DecimalString
    unit: str | None = None
    system: str | None = None
    code: str | None = None
    comparator: Literal["<", "<=", ">=", ">"] | None = None


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
    """``valueSampledData``: the samples stay a string as FHIR sends them (space-separated, E/U/L codes);
    ``period_ms``, ``factor`` and the limits are exact decimals."""

    type: Literal["sampled_data"] = "sampled_data"
    origin: QuantityValue
    period_ms: DecimalString
    factor: DecimalString | None = None
    lower_limit: DecimalString | None = None
    upper_limit: DecimalString | None = None
    dimensions: int
    data: str | None = None


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
class ObservationV2(Contract):
    """A clinical observation (vital sign, lab result, survey answer) of one patient; decimals exact."""

    contract_name: ClassVar[str] = "clinical.observation"
    contract_version: ClassVar[str] = "2.0"
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


# -- v2 → v1 (dual publishing) ------------------------------------------------------------------------------------
def _float(text: str, where: str) -> float:
    """The nearest binary float (v1's legacy); ValueError when there is none (beyond the float range)."""
    number = float(text)  # correctly rounded, like every JSON parser's float
    if not math.isfinite(number):
        raise ValueError(
            f"clinical.observation 1.0 cannot carry {where} {text[:40]}"
            f"{'...' if len(text) > 40 else ''}: beyond the range of a binary float"
        )
    return number


def _quantity_v1(q: QuantityValue | None, where: str) -> dict[str, Any] | None:
    if q is None:
        return None
    return {
        "type": "quantity",
        "value": _float(q.value, where),
        "unit": q.unit,
        "system": q.system,
        "code": q.code,
        "comparator": q.comparator,
    }


def _value_v1(v: Any, where: str) -> Any:
    """A v2 value as v1's: decimals to floats; the kinds v1 and v2 share pass as they are."""
    if type(v) is QuantityValue:
        return _quantity_v1(v, where)
    if type(v) is RangeValue:
        return {
            "type": "range",
            "low": _quantity_v1(v.low, f"{where}.low"),
            "high": _quantity_v1(v.high, f"{where}.high"),
        }
    if type(v) is RatioValue:
        return {
            "type": "ratio",
            "numerator": _quantity_v1(v.numerator, f"{where}.numerator"),
            "denominator": _quantity_v1(v.denominator, f"{where}.denominator"),
        }
    if type(v) is SampledDataValue:  # lower_limit / upper_limit: v1 has no place for them
        return {
            "type": "sampled_data",
            "origin": _quantity_v1(v.origin, f"{where}.origin"),
            "period_ms": _float(v.period_ms, f"{where}.period_ms"),
            "factor": _float(v.factor, f"{where}.factor") if v.factor is not None else None,
            "dimensions": v.dimensions,
            "data": v.data,
        }
    return v


@converter(ObservationV2, ObservationV1)
def to_v1(obs: ObservationV2) -> ObservationV1:
    """The v1.0 event of a v2.0 one (module docstring): every decimal as the nearest float, sampled-data limits
    dropped, everything else as it is; validated as v1.0. ValueError for a value beyond the float range."""
    return _v1_prechecked(obs) or to_v1_checked(obs)


def to_v1_checked(obs: ObservationV2) -> ObservationV1:
    """:func:`to_v1` the long way, validated as v1.0: what the fast path is tested against."""
    fields = obs.__dict__.copy()  # the field values as they are (iterating the model costs ~6 µs)
    if obs.value is not None:
        fields["value"] = _value_v1(obs.value, "value")
    if obs.components:
        fields["components"] = [
            {
                "code": c.code,
                "value": _value_v1(c.value, f"components[{i}].value") if c.value is not None else None,
                "data_absent_reason": c.data_absent_reason,
            }
            for i, c in enumerate(obs.components)
        ]
    return ObservationV1.model_validate(fields)


_V1_FIELDS = frozenset(ObservationV1.model_fields)
_V1_COMPONENT_KEYS = frozenset(("code", "value", "data_absent_reason"))
_QUANTITY_KEYS = frozenset(("type", "value", "unit", "system", "code", "comparator"))
_SHARED = (CodedValue, StringValue, BooleanValue, IntegerValue, TimeValue, DateTimeValue, PeriodValue)


def _v1_value(v: Any, where: str) -> Any:
    """A v2 value as the v1 part validation would make of :func:`_value_v1`'s result; ``...`` for the kinds left to
    validation (range, ratio, sampled data). The parts both majors share are the very instance, as validation
    keeps them; a decimal becomes the nearest float, ValueError beyond the float range (as in :func:`_float`)."""
    if v is None or type(v) in _SHARED:
        return v
    if type(v) is QuantityValue:
        fields = {
            "type": "quantity",
            "value": _float(v.value, where),
            "unit": v.unit,
            "system": v.system,
            "code": v.code,
            "comparator": v.comparator,
        }
        return checked_instance(QuantityValueV1, fields, _QUANTITY_KEYS)
    return ...


def _v1_prechecked(obs: ObservationV2) -> ObservationV1 | None:
    """:func:`to_v1` without validating again what the v2 model already passed: v1.0 is v2.0 with floats for the
    decimals, so a validated v2 event is a valid v1 one once each decimal is a finite float (:func:`_float`
    raises otherwise). None for the value kinds left to validation. Equal to the validated v1 model, byte for
    byte when serialised (tests/connectors/fhir/test_fhir_prechecked.py)."""
    value = _v1_value(obs.value, "value")
    if value is ...:
        return None
    components = []
    for i, c in enumerate(obs.components):
        part = _v1_value(c.value, f"components[{i}].value")
        if part is ...:
            return None
        components.append(
            checked_instance(
                ComponentV1,
                {"code": list(c.code), "value": part, "data_absent_reason": c.data_absent_reason},
                _V1_COMPONENT_KEYS,
            )
        )
    fields = obs.__dict__.copy()
    fields["category"], fields["code"], fields["has_member"] = list(obs.category), list(obs.code), list(obs.has_member)
    fields["value"], fields["components"] = value, components
    return checked_instance(ObservationV1, fields, _V1_FIELDS)
