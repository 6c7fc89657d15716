"""``clinical.observation`` v3.0 — v2.0 plus the reference range and the interpretation of a result.

What changed from v2.0, and only that: two optional fields in FHIR R4's shape.

- ``reference_range`` — ``Observation.referenceRange``: each range's ``low`` / ``high`` as exact quantities
  (:class:`SimpleQuantity`: a decimal string and the result's unit; FHIR's bounds are inclusive) and its
  ``text``. HL7 v2 OBX-7 is a string (``3.5-5.0``, ``<5``, ``>10``, ``Negative``): the family keeps it as sent in
  ``text`` and fills the bounds only when it is one of the numeric forms (``connectors.hl7v2.mapping``).
- ``interpretation`` — ``Observation.interpretation``: one coded concept per flag (``H``, ``L``, ``HH``, ``LL``,
  ``A``, ``N`` …; HL7 v2 table 0078, OBX-8, repeating). Codes that FHIR's ``v3-ObservationInterpretation`` also
  has use that system, as FHIR's v2 → R4 concept map does; any other code keeps the ``v2-0078`` system.

Why a new major and not a 2.1: the versioning rules (``docs/contracts.md``) make a new optional field a minor
only when ``inlet contracts check`` proves it compatible in the contract's mode, FORWARD. v2.0's objects are
closed (``additionalProperties: false``), so consumers built against 2.0 reject any event with an extra field —
the same reason v2.0 itself could not be a 1.1 (``clinical_observation_v2``). Switching the mode to BACKWARD to
pass the check would break exactly those consumers.

Dual publishing: a family that maps to v3.0 (HL7 v2) has every event published as v2.0 and v1.0 too, through the
converters below (the two new fields dropped; v1 as ``to_v1`` of the v2 event). Event ids: the v2.0 and v1.0
events keep the ids they had, the v3.0 event gets its own (``clinical.observation.v3``). The FHIR family still maps
to v2.0; a v3 consumer of FHIR data waits for that family to move.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from inlet.contracts.base import DecimalString, Part, converter, register
from inlet.contracts.clinical_observation import Coding, ObservationV1
from inlet.contracts.clinical_observation_v2 import ObservationV2, to_v1

__all__ = ["INTERPRETATION_V3", "Interpretation", "ObservationV3", "ReferenceRange", "SimpleQuantity", "to_v2"]

INTERPRETATION_V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


class SimpleQuantity(Part):
    """FHIR ``SimpleQuantity``: an exact decimal with its unit, no comparator (a range bound)."""

    value: DecimalString
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class ReferenceRange(Part):
    """One ``Observation.referenceRange``: inclusive bounds (either may be open) and/or the range as text."""

    low: SimpleQuantity | None = None
    high: SimpleQuantity | None = None
    text: str | None = None


class Interpretation(Part):
    """One ``Observation.interpretation`` (a CodeableConcept): the flag's codings and its text."""

    coding: list[Coding] = Field(default_factory=list)
    text: str | None = None


@register
class ObservationV3(ObservationV2):
    """A clinical observation with its reference ranges and interpretation flags; decimals exact."""

    contract_name: ClassVar[str] = "clinical.observation"
    contract_version: ClassVar[str] = "3.0"

    reference_range: list[ReferenceRange] = Field(default_factory=list)
    interpretation: list[Interpretation] = Field(default_factory=list)


@converter(ObservationV3, ObservationV2)
def to_v2(obs: ObservationV3) -> ObservationV2:
    """The v2.0 event of a v3.0 one: the reference ranges and interpretation dropped, nothing else changed."""
    fields = obs.__dict__.copy()
    del fields["reference_range"], fields["interpretation"]
    return ObservationV2.model_validate(fields)


@converter(ObservationV3, ObservationV1)
def to_v1_from_v3(obs: ObservationV3) -> ObservationV1:
    """The v1.0 event of a v3.0 one: v2's downcast of :func:`to_v2` (converters are not chained)."""
    return to_v1(to_v2(obs))
