"""FHIR R4 Patient, Encounter, Condition and MedicationRequest → their ``clinical.*`` v1.0 contracts, plus the
dispatch by ``resourceType`` (Observation → ``clinical.observation`` v2.0, in ``connectors.fhir.mapping``) and
the family's stated filter rules.

The mapping rules are the contracts' docstrings; this module implements them and says here only what they
leave open. Every mapper is ``(resource, zone, *, index=None) -> Contract``: pure, every timestamp through
core.time (via :func:`connectors.fhir.mapping.when`), ``index`` an optional :func:`bundle_index` that resolves
references within a bundle. Bad input raises :class:`MappingError` naming ``Type/id.element.path``; what maps
but breaks the contract raises pydantic's ValidationError. The pipeline routes both to the DLQ.

Choices the contracts leave open:
- ``Patient.birthDate`` is a calendar date, so it is parsed here (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``
  only) rather than by core.time, which would make it an instant. The postal prefix drops all whitespace.
- ``Condition.onsetRange`` / ``abatementRange`` text: ``"<low> - <high>"``, each bound ``<value> <unit>``
  (``unit``, else ``code``), the value the exact decimal the source wrote (``"5.10 a"``); an open bound reads
  ``">= <low>"`` / ``"<= <high>"``. Status codes prefer the coding from the HL7 code system, else the first
  coding.
- ``MedicationRequest``: ``medication_text`` falls back to the reference's ``display`` whenever no concept
  text resolves; ``dosage_text`` puts instructions without a ``sequence`` after the numbered ones, in source
  order. A conditional requester (``Practitioner?identifier=…``) gives the type and no id.

FHIR decimals: every ``decimal`` element these mappers read goes through ``mapping.fhir_decimal`` (exact, or a
MappingError naming the element and value). Of these four types only Condition has any (``onset[x]`` /
``abatement[x]`` Age and Range; ``clinical_condition`` says why its age in years stays a derived float);
Patient, Encounter (``length`` is not mapped) and MedicationRequest (dosage is carried as text) map none.

Filter rules (:func:`filter_reason`): a resource marked entered-in-error (``status``, or for a Condition
``verificationStatus``) was never true, so it is left out with that stated reason, as the search connector
already does for Observations. Patients have no such status and are never filtered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date
from typing import Any, Final, Protocol

from inlet.connectors.fhir.mapping import (
    BundleIndex,
    Resource,
    codings,
    items,
    map_observation,
    obj,
    period,
    quantity,
    reference_id,
    reference_type,
    require_id,
    resolve,
    resolve_resource,
    source_meta,
    when,
)
from inlet.contracts.base import Contract
from inlet.contracts.clinical_condition import ConditionV1
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_medication_request import MedicationRequestV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.core.errors import MappingError

__all__ = [
    "CONTRACTS",
    "FILTERS",
    "MAPPERS",
    "ZONE_NEEDED",
    "Mapper",
    "filter_reason",
    "map_condition",
    "map_encounter",
    "map_medication_request",
    "map_patient",
    "map_resource",
]

_FHIR_DATE: Final = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
_AGE_YEARS: Final = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}  # UCUM code → years
_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


class Mapper(Protocol):
    """A resource mapper: ``(resource, zone, *, index=None) -> Contract``."""

    def __call__(self, res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> Contract: ...


def _start(res: Any, rtype: str) -> str:
    """The error prefix ``Type/id`` after checking that ``res`` is a ``rtype`` resource."""
    if type(res) is not dict or res.get("resourceType") != rtype:
        got = res.get("resourceType") if type(res) is dict else type(res).__name__
        raise MappingError(f"expected a {rtype}, got resourceType {got!r}")
    return f"{rtype}/{require_id(res, rtype)}"


def _ref(ref: Any, index: BundleIndex | None) -> str | None:
    return reference_id(ref) if index is None else resolve(ref, index)


# -- Patient ---------------------------------------------------------------------------------------------
def _birth_date(value: Any, where: str) -> tuple[date, str]:
    match = _FHIR_DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MappingError(f"{where}: {value!r} is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    year, month, day = match.groups()
    try:
        return date(int(year), int(month or 1), int(day or 1)), "day" if day else "month" if month else "year"
    except ValueError as exc:
        raise MappingError(f"{where}: {value!r} is not a real calendar date ({exc})") from None


def _home_address(res: Resource, where: str) -> dict[str, Any] | None:
    chosen = None
    for i, raw in enumerate(items(res.get("address"), f"{where}.address")):
        address = obj(raw, f"{where}.address[{i}]")
        if address.get("use") == "home":
            return address
        if chosen is None and address.get("use") != "old":
            chosen = address
    return chosen


def map_patient(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> PatientV1:
    """Map one Patient, keeping only what the contract's data-minimisation rule allows."""
    where = _start(res, "Patient")
    last_updated, version = source_meta(res, zone, where)
    out: dict[str, Any] = {
        "patient_id": res.get("id"),
        "active": res.get("active"),
        "gender": res.get("gender"),
        "identifiers": [
            {"system": ident.get("system"), "value": ident["value"]}
            for i, raw in enumerate(items(res.get("identifier"), f"{where}.identifier"))
            if (ident := obj(raw, f"{where}.identifier[{i}]")).get("value") not in (None, "")
        ],
        "source_last_updated": last_updated,
        "source_version": version,
    }
    if (birth := res.get("birthDate")) is not None:
        out["birth_date"], out["birth_date_precision"] = _birth_date(birth, f"{where}.birthDate")
    if (dead := res.get("deceasedDateTime")) is not None:
        inst = when(dead, zone, f"{where}.deceasedDateTime")
        out.update(deceased=True, deceased_at=inst.utc, deceased_precision=inst.precision)
    elif "deceasedBoolean" in res:
        out["deceased"] = res["deceasedBoolean"]
    if (home := _home_address(res, where)) is not None:
        out["address_country"] = home.get("country")
        postal = home.get("postalCode")
        if postal is not None:
            if not isinstance(postal, str):
                raise MappingError(f"{where}.address.postalCode: expected a string, got {type(postal).__name__}")
            compact = "".join(postal.split()).upper()
            out["postal_prefix"] = compact[:3] if len(compact) >= 3 else None
    return PatientV1.model_validate(out)


# -- Encounter -------------------------------------------------------------------------------------------
def map_encounter(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> EncounterV1:
    """Map one Encounter: class, types, period (each end with its own precision), subject, provider."""
    where = _start(res, "Encounter")
    last_updated, version = source_meta(res, zone, where)
    cls = res.get("class")
    if type(cls) is not dict:
        raise MappingError(
            f"{where}.class: expected one Coding (R4 Encounter.class is 1..1), "
            f"got {'nothing' if cls is None else type(cls).__name__}"
        )
    types = [obj(t, f"{where}.type[{i}]") for i, t in enumerate(items(res.get("type"), f"{where}.type"))]
    start = end = None
    if (p := res.get("period")) is not None:
        start, end = period(p, zone, f"{where}.period")
    return EncounterV1.model_validate(
        {
            "encounter_id": res.get("id"),
            "patient_id": _ref(res.get("subject"), index),
            "status": res.get("status"),
            "encounter_class": {"system": cls.get("system"), "code": cls.get("code"), "display": cls.get("display")},
            "type": [c for i, t in enumerate(types) for c in codings(t, f"{where}.type[{i}]")],
            "type_text": types[0].get("text") if types else None,
            "period_start": start.utc if start else None,
            "period_start_precision": start.precision if start else None,
            "period_end": end.utc if end else None,
            "period_end_precision": end.precision if end else None,
            "service_provider_id": _ref(res.get("serviceProvider"), index),
            "source_last_updated": last_updated,
            "source_version": version,
        }
    )


# -- Condition -------------------------------------------------------------------------------------------
def _status_code(concept: Any, system: str, where: str) -> str | None:
    if concept is None:
        return None
    found = codings(concept, where)
    return next((c["code"] for c in found if c["system"] == system), found[0]["code"] if found else None)


def _bound(q: Any, where: str) -> str:
    q = quantity(q, where)
    unit = q["unit"] or q["code"]
    return f"{q['value']} {unit}" if unit else str(q["value"])


def _range_text(r: Any, where: str) -> str | None:
    r = obj(r, where)
    low = _bound(r["low"], f"{where}.low") if r.get("low") else None
    high = _bound(r["high"], f"{where}.high") if r.get("high") else None
    if low and high:
        return f"{low} - {high}"
    return f">= {low}" if low else f"<= {high}" if high else None


def _age_years(age: Any, where: str) -> float:
    """An Age in years: derived (``clinical_condition`` says why a float); its value read exactly first."""
    q = quantity(age, where)  # the value a FHIR decimal: MappingError when it is not a finite JSON number
    factor = _AGE_YEARS.get(q["code"]) if isinstance(q["code"], str) else None
    if factor is None:
        raise MappingError(
            f"{where}: expected a numeric Age in UCUM a, mo, wk or d, got value {q['value']!r} code {q['code']!r}"
        )
    years = float(q["value"]) * factor
    if not math.isfinite(years):
        raise MappingError(f"{where}: an age of {q['value'][:40]} {q['code']} is beyond any number of years")
    return years


def _onset(res: Resource, element: str, field: str, zone: str | None, where: str) -> dict[str, Any]:
    """``onset[x]`` / ``abatement[x]`` (all but ``abatementBoolean``) into the contract's ``field_*``."""
    if (dt := res.get(f"{element}DateTime")) is not None:
        inst = when(dt, zone, f"{where}.{element}DateTime")
        return {f"{field}_start": inst.utc, f"{field}_precision": inst.precision}
    if (p := res.get(f"{element}Period")) is not None:
        start, end = period(p, zone, f"{where}.{element}Period")
        first = start or end
        return {
            f"{field}_start": start.utc if start else None,
            f"{field}_end": end.utc if end else None,
            f"{field}_precision": first.precision if first else None,
        }
    if (age := res.get(f"{element}Age")) is not None:
        return {f"{field}_age_years": _age_years(age, f"{where}.{element}Age")}
    if (text := res.get(f"{element}String")) is not None:
        return {f"{field}_text": text}
    if (r := res.get(f"{element}Range")) is not None:
        return {f"{field}_text": _range_text(r, f"{where}.{element}Range")}
    unknown = [k for k in res if k.startswith(element) and k != "abatementBoolean"]
    if unknown:
        raise MappingError(
            f"{where}: unsupported {unknown[0]} (FHIR R4 {element}[x] is dateTime, Age, Period, Range or string)"
        )
    return {}


def map_condition(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> ConditionV1:
    """Map one Condition: statuses, codes, onset and abatement in any of their R4 forms, recorded date."""
    where = _start(res, "Condition")
    last_updated, version = source_meta(res, zone, where)
    code = res.get("code")
    abatement = _onset(res, "abatement", "abatement", zone, where)
    abated = res.get("abatementBoolean")
    recorded = when(res["recordedDate"], zone, f"{where}.recordedDate") if res.get("recordedDate") else None
    return ConditionV1.model_validate(
        {
            "condition_id": res.get("id"),
            "patient_id": _ref(res.get("subject"), index),
            "encounter_id": _ref(res.get("encounter"), index),
            "clinical_status": _status_code(res.get("clinicalStatus"), _CLINICAL, f"{where}.clinicalStatus"),
            "verification_status": _status_code(
                res.get("verificationStatus"), _VERIFICATION, f"{where}.verificationStatus"
            ),
            "category": [
                c["code"]
                for i, cat in enumerate(items(res.get("category"), f"{where}.category"))
                for c in codings(cat, f"{where}.category[{i}]")
            ],
            "code": codings(code, f"{where}.code") if code is not None else [],
            "code_text": code.get("text") if type(code) is dict else None,
            **_onset(res, "onset", "onset", zone, where),
            **abatement,
            "abated": abated if abated is not None else True if abatement else None,
            "recorded_date": recorded.utc if recorded else None,
            "recorded_date_precision": recorded.precision if recorded else None,
            "source_last_updated": last_updated,
            "source_version": version,
        }
    )


# -- MedicationRequest -----------------------------------------------------------------------------------
def _contained(res: Resource, ref: Any, root: str, element: str) -> Resource | None:
    """The contained resource a ``#id`` reference names (None for other references)."""
    text = ref.get("reference") if type(ref) is dict else None
    if not isinstance(text, str) or not text.startswith("#"):
        return None
    for i, raw in enumerate(items(res.get("contained"), f"{root}.contained")):
        if (c := obj(raw, f"{root}.contained[{i}]")).get("id") == text[1:]:
            return c
    raise MappingError(f"{root}.{element}: reference {text!r} names no contained resource")


def _medication(res: Resource, index: BundleIndex | None, where: str) -> dict[str, Any]:
    if (concept := res.get("medicationCodeableConcept")) is not None:
        text = concept.get("text") if type(concept) is dict else None
        return {"medication": codings(concept, f"{where}.medicationCodeableConcept"), "medication_text": text}
    ref = res.get("medicationReference")
    if ref is None:
        raise MappingError(
            f"{where}: no medication[x] (FHIR R4 requires medicationCodeableConcept or medicationReference)"
        )
    ref = obj(ref, f"{where}.medicationReference")
    contained = _contained(res, ref, where, "medicationReference")
    target = contained if contained is not None else resolve_resource(ref, index) if index is not None else None
    out: dict[str, Any] = {"medication_id": None if contained is not None else _ref(ref, index)}
    code = target.get("code") if target is not None else None
    if code is not None:
        out["medication"] = codings(code, f"{where}.medicationReference->Medication.code")
        out["medication_text"] = code.get("text")
    if out.get("medication_text") is None:
        out["medication_text"] = ref.get("display")
    return out


def _requester(res: Resource, index: BundleIndex | None, where: str) -> dict[str, Any]:
    ref = res.get("requester")
    if ref is None:
        return {}
    ref = obj(ref, f"{where}.requester")
    if (contained := _contained(res, ref, where, "requester")) is not None:
        return {"requester_type": contained.get("resourceType"), "requester_id": None}  # no id outside res
    target = resolve_resource(ref, index) if index is not None else None
    return {
        "requester_type": target.get("resourceType") if target is not None else reference_type(ref),
        "requester_id": _ref(ref, index),
    }


def map_medication_request(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> MedicationRequestV1:
    """Map one MedicationRequest: medication (concept, contained or bundled Medication), dates, dosage text."""
    where = _start(res, "MedicationRequest")
    last_updated, version = source_meta(res, zone, where)
    authored = when(res["authoredOn"], zone, f"{where}.authoredOn") if res.get("authoredOn") else None
    dosages = [
        obj(d, f"{where}.dosageInstruction[{i}]")
        for i, d in enumerate(items(res.get("dosageInstruction"), f"{where}.dosageInstruction"))
    ]
    dosages.sort(key=lambda d: (0, d["sequence"]) if type(d.get("sequence")) is int else (1, 0))
    return MedicationRequestV1.model_validate(
        {
            "medication_request_id": res.get("id"),
            "patient_id": _ref(res.get("subject"), index),
            "encounter_id": _ref(res.get("encounter"), index),
            "status": res.get("status"),
            "intent": res.get("intent"),
            **_medication(res, index, where),
            "authored_on": authored.utc if authored else None,
            "authored_on_precision": authored.precision if authored else None,
            "dosage_text": [d["text"] for d in dosages if d.get("text") is not None],
            **_requester(res, index, where),
            "source_last_updated": last_updated,
            "source_version": version,
        }
    )


# -- dispatch and filters --------------------------------------------------------------------------------
MAPPERS: dict[str, Mapper] = {
    "Patient": map_patient,
    "Encounter": map_encounter,
    "Condition": map_condition,
    "MedicationRequest": map_medication_request,
    "Observation": map_observation,
}
"""``resourceType`` → its mapper; a plugin may wrap one (``MAPPERS | {"Observation": mine}``)."""

CONTRACTS: dict[str, type[Contract]] = {
    "Patient": PatientV1,
    "Encounter": EncounterV1,
    "Condition": ConditionV1,
    "MedicationRequest": MedicationRequestV1,
    "Observation": ObservationV2,
}
"""``resourceType`` → the contract its mapper emits (what an integration reading that type produces)."""

ZONE_NEEDED = (
    "FHIR dates and date-times without an offset (e.g. effectiveDateTime '2026-03-01') cannot be placed "
    "in time, so such records go to the DLQ (stage map)"
)
"""Why a FHIR integration needs its ``zone`` (``inlet check`` warns with this when it is missing)."""


def map_resource(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> Contract:
    """Map any supported resource by its ``resourceType``; MappingError for the others."""
    rtype = res.get("resourceType") if type(res) is dict else None
    mapper = MAPPERS.get(rtype) if isinstance(rtype, str) else None
    if mapper is None:
        what = f"{rtype}/{res.get('id')}" if rtype else f"a JSON {type(res).__name__}"
        raise MappingError(f"{what}: no clinical contract for resourceType {rtype!r} (supported: {', '.join(MAPPERS)})")
    return mapper(res, zone, index=index)


def _entered_in_error(res: Resource) -> str | None:
    return "status entered-in-error" if res.get("status") == "entered-in-error" else None


def _condition_entered_in_error(res: Resource) -> str | None:
    status = res.get("verificationStatus")
    found = status.get("coding") if type(status) is dict else None
    if type(found) is list and any(type(c) is dict and c.get("code") == "entered-in-error" for c in found):
        return "verificationStatus entered-in-error"
    return None


FILTERS: dict[str, Callable[[Resource], str | None]] = {
    "Observation": _entered_in_error,
    "Encounter": _entered_in_error,
    "MedicationRequest": _entered_in_error,
    "Condition": _condition_entered_in_error,
}
"""``resourceType`` → the family's stated filter rule (module docstring); Patient has none."""


def filter_reason(res: Resource) -> str | None:
    """Why this resource is left out on purpose, or None to map it."""
    rtype = res.get("resourceType") if type(res) is dict else None
    rule = FILTERS.get(rtype) if isinstance(rtype, str) else None
    return rule(res) if rule is not None else None
