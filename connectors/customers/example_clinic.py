"""Example Clinic — the bundled example customer, and the template for adding a hospital.

A per-customer plugin is a subclass of a family connector that sets a ``name`` and overrides only
what is special about this customer. Example Clinic's quirks:

- its EHR tags point-of-care test results with a local code system; they are mapped to LOINC by a
  small table, keeping the local coding next to it (consumers query by LOINC);
- it does not want survey answers (social-history questionnaires) on the stream: they are filtered
  with a stated reason, so the run summary and the accounting show them instead of hiding them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from typing_extensions import override

from inlet.connectors.fhir.mapping import with_standard_codes
from inlet.connectors.fhir.search import FhirObservationSearchConnector
from inlet.contracts.base import Contract

__all__ = ["ExampleClinicObservations"]

LOCAL_SYSTEM = "urn:example-clinic:poc-codes"
LOCAL_TO_LOINC = {
    "GLU-POC": ("2339-0", "Glucose [Mass/volume] in Blood"),
    "HB-POC": ("718-7", "Hemoglobin [Mass/volume] in Blood"),
}


class ExampleClinicObservations(FhirObservationSearchConnector):
    """Example Clinic's observations: FHIR search, local POC codes mapped to LOINC, no surveys."""

    name: ClassVar[str] = "example_clinic.observations"
    description: ClassVar[str] = "Example Clinic EHR observations (local POC codes → LOINC, surveys out)"

    @override
    def filter(self, record: dict[str, Any]) -> str | None:
        categories = {c.get("code") for cat in record.get("category") or () for c in cat.get("coding") or ()}
        if "survey" in categories:
            return "survey answers are out of scope for example-clinic"
        return super().filter(record)

    @override
    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        events = super().map(record)
        return [with_standard_codes(e, LOCAL_SYSTEM, LOCAL_TO_LOINC) for e in events]
