"""FHIR R4 → clinical contracts: one test per rule of each contract's docstring, on resources shaped after the
FHIR R4 specification's examples (written inline: the shared data lacks several value[x] / effective[x] kinds),
plus bundle reference resolution and a property test that malformed input only ever raises the DLQ errors."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from inlet.connectors.fhir.mapping import bundle_index, map_observation, reference_id, reference_type, resolve
from inlet.connectors.fhir.resources import (
    MAPPERS,
    filter_reason,
    map_condition,
    map_encounter,
    map_medication_request,
    map_patient,
    map_resource,
)
from inlet.contracts.clinical_observation_v2 import to_v1
from inlet.core.errors import MappingError, TimestampError

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
AMS, BERLIN = "Europe/Amsterdam", "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type, misc]


def q(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def observation(**elements: Any) -> dict[str, Any]:
    """A minimal spec-shaped Observation (after Observation-example: body weight) with ``elements`` merged."""
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "example",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body Weight"}], "text": "weight"},
        "subject": {"reference": "Patient/example"},
        "encounter": {"reference": "Encounter/example"},
        "effectiveDateTime": "2016-03-28",
    }
    return base | elements


# --- Observation: value[x] ---------------------------------------------------------------------------------


def test_value_quantity_keeps_the_ucum_code_and_comparator() -> None:
    ev = map_observation(observation(valueQuantity={**q(185, "[lb_av]", "lbs"), "comparator": "<"}), AMS)
    assert ev.value is not None and ev.value.type == "quantity"
    assert ev.value.model_dump() == {
        "type": "quantity",
        "value": "185",
        "unit": "lbs",
        "system": UCUM,
        "code": "[lb_av]",
        "comparator": "<",
    }
    v1 = to_v1(ev)  # dual publishing: the v1.0 event still carries v1's float
    assert v1.value is not None and v1.value.model_dump()["value"] == 185.0


def test_value_codeable_concept_keeps_every_coding_and_text() -> None:
    concept = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "112144000", "display": "Blood group A"},
            {"system": "http://acme.org/blood", "code": "A"},
        ],
        "text": "A",
    }
    ev = map_observation(observation(valueCodeableConcept=concept), AMS)
    assert ev.value is not None and ev.value.type == "coded"
    assert [c.code for c in ev.value.coding] == ["112144000", "A"] and ev.value.text == "A"
    text_only = map_observation(observation(valueCodeableConcept={"text": "brown"}), AMS)
    assert text_only.value is not None and text_only.value.model_dump() == {
        "type": "coded",
        "coding": [],
        "text": "brown",
    }


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("valueString", "Brown eyes", "string"),
        ("valueBoolean", False, "boolean"),
        ("valueInteger", 8, "integer"),
        ("valueTime", "14:30:00", "time"),
        ("valueTime", "23:59:60.5", "time"),
    ],
)
def test_scalar_values(key: str, value: Any, kind: str) -> None:
    ev = map_observation(observation(**{key: value}), AMS)
    assert ev.value is not None and ev.value.model_dump() == {"type": kind, "value": value}


@pytest.mark.parametrize("bad", ["14:30", "2:30:00", "14:30:00+01:00", "24:00:00", 1430])
def test_value_time_must_be_a_fhir_time(bad: Any) -> None:
    with pytest.raises(MappingError, match=r"Observation/example\.valueTime: .* not a FHIR time"):
        map_observation(observation(valueTime=bad), AMS)


def test_value_range_with_an_open_bound_and_value_ratio() -> None:
    rng = map_observation(observation(valueRange={"low": q(1.5, "mmol/L")}), AMS)
    assert rng.value is not None and rng.value.type == "range"
    assert rng.value.low is not None and rng.value.low.value == "1.5" and rng.value.high is None
    titer = map_observation(observation(valueRatio={"numerator": {"value": 1}, "denominator": {"value": 128}}), AMS)
    assert titer.value is not None and titer.value.type == "ratio"
    assert (
        titer.value.numerator and titer.value.numerator.value,
        titer.value.denominator and titer.value.denominator.value,
    ) == ("1", "128")
    v1 = to_v1(titer).value
    assert v1 is not None and v1.model_dump()["numerator"]["value"] == 1.0


def test_value_sampled_data_keeps_the_samples_as_text() -> None:
    # After Observation-ekg (component valueSampledData) of the R4 examples, here as the top-level value.
    sd = {
        "origin": {"value": 2048},
        "period": 10,
        "factor": 1.612,
        "lowerLimit": -3300,
        "upperLimit": 3300,
        "dimensions": 3,
        "data": "2041 2043 2037 E U L",
    }
    ev = map_observation(observation(valueSampledData=sd), AMS)
    assert ev.value is not None and ev.value.model_dump() == {
        "type": "sampled_data",
        "origin": {"type": "quantity", "value": "2048", "unit": None, "system": None, "code": None, "comparator": None},
        "period_ms": "10",
        "factor": "1.612",
        "lower_limit": "-3300",
        "upper_limit": "3300",
        "dimensions": 3,
        "data": "2041 2043 2037 E U L",
    }
    v1 = to_v1(ev).value  # v1 has floats and no limits
    assert v1 is not None and v1.model_dump() == {
        "type": "sampled_data",
        "origin": {"type": "quantity", "value": 2048.0, "unit": None, "system": None, "code": None, "comparator": None},
        "period_ms": 10.0,
        "factor": 1.612,
        "dimensions": 3,
        "data": "2041 2043 2037 E U L",
    }


def test_value_datetime_keeps_partial_precision_and_value_period_is_utc() -> None:
    lmp = map_observation(observation(valueDateTime="2016-12"), AMS)  # after Observation-date-lastmp
    assert lmp.value is not None and lmp.value.model_dump() == {
        "type": "datetime",
        "value": utc(2016, 11, 30, 23),
        "precision": "month",
    }
    per = map_observation(observation(valuePeriod={"start": "2016-03-28T10:00:00+02:00"}), AMS)
    assert per.value is not None and per.value.model_dump() == {
        "type": "period",
        "start": utc(2016, 3, 28, 8),
        "end": None,
    }


def test_unknown_value_type_names_the_element() -> None:
    with pytest.raises(MappingError, match=r"Observation/example: unsupported value type valueAttachment"):
        map_observation(observation(valueAttachment={"contentType": "text/plain"}), AMS)
    bp = observation(component=[{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueSampledDataX": {}}])
    with pytest.raises(MappingError, match=r"Observation/example\.component\[0\]: unsupported value type"):
        map_observation(bp, AMS)


# --- Observation: effective[x], issued, meta ---------------------------------------------------------------


def test_effective_date_time_partial_dates_start_in_the_zone_with_their_precision() -> None:
    year = map_observation(observation(effectiveDateTime="2016"), BERLIN)
    assert (year.effective_start, year.effective_precision, year.effective_end) == (utc(2015, 12, 31, 23), "year", None)
    naive = map_observation(observation(effectiveDateTime="2016-07-01T10:00:00"), BERLIN)
    assert (naive.effective_start, naive.effective_precision) == (utc(2016, 7, 1, 8), "second")
    with pytest.raises(TimestampError, match=r"Observation/example\.effective: .*2016-07-01T10:00:00"):
        map_observation(observation(effectiveDateTime="2016-07-01T10:00:00"), None)


def test_effective_instant_and_period() -> None:
    inst = map_observation(observation(effectiveDateTime=None, effectiveInstant="2013-04-03T15:30:10.123+01:00"), AMS)
    assert (inst.effective_start, inst.effective_precision) == (utc(2013, 4, 3, 14, 30, 10, 123000), "millisecond")
    period = observation(effectivePeriod={"start": "2013-04-02T09:30:10+01:00", "end": "2013-04-05"})
    del period["effectiveDateTime"]
    ev = map_observation(period, AMS)
    assert (ev.effective_start, ev.effective_end, ev.effective_precision) == (
        utc(2013, 4, 2, 8, 30, 10),
        utc(2013, 4, 4, 22),
        "second",
    )


def test_effective_timing_spans_its_events_or_its_bounds() -> None:
    res = observation(effectiveTiming={"event": ["2013-04-02T10:30:10+01:00", "2013-04-02T09:30:10+01:00"]})
    del res["effectiveDateTime"]
    ev = map_observation(res, AMS)
    assert (ev.effective_start, ev.effective_end) == (utc(2013, 4, 2, 8, 30, 10), utc(2013, 4, 2, 9, 30, 10))
    res["effectiveTiming"] = {"event": ["2013-04-02"]}
    one = map_observation(res, AMS)
    assert (one.effective_start, one.effective_end, one.effective_precision) == (utc(2013, 4, 1, 22), None, "day")
    res["effectiveTiming"] = {
        "repeat": {
            "boundsPeriod": {"start": "2013-04-02", "end": "2013-04-09"},
            "frequency": 2,
            "period": 1,
            "periodUnit": "d",
        }
    }
    bounded = map_observation(res, AMS)
    assert (bounded.effective_start, bounded.effective_end) == (utc(2013, 4, 1, 22), utc(2013, 4, 8, 22))


def test_issued_and_source_version() -> None:
    ev = map_observation(
        observation(issued="2013-04-03T15:30:10+01:00", meta={"versionId": "3", "lastUpdated": "2014-01-01T00:00:00Z"}),
        AMS,
    )
    assert (ev.issued, ev.source_version, ev.source_last_updated) == (utc(2013, 4, 3, 14, 30, 10), "3", utc(2014, 1, 1))
    unversioned = map_observation(observation(meta={"lastUpdated": "2014-01-01T00:00:00Z"}), AMS)
    assert unversioned.source_version == "2014-01-01T00:00:00Z"


# --- Observation: component, hasMember, dataAbsentReason ---------------------------------------------------

BLOOD_PRESSURE: dict[str, Any] = observation(  # after Observation-blood-pressure-dar: diastolic not performed
    id="blood-pressure",
    effectiveDateTime="2012-09-17",
    code={"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
    component=[
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
            "valueQuantity": q(109, "mm[Hg]", "mmHg"),
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
            "dataAbsentReason": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                        "code": "not-performed",
                        "display": "Not Performed",
                    }
                ]
            },
        },
    ],
)


def test_components_repeat_the_value_shapes_and_their_absent_reasons() -> None:
    ev = map_observation(BLOOD_PRESSURE, AMS)
    assert ev.value is None and ev.data_absent_reason is None
    systolic, diastolic = ev.components
    assert systolic.code[0].code == "8480-6" and systolic.value is not None and systolic.value.type == "quantity"
    assert systolic.value.value == "109" and systolic.value.code == "mm[Hg]"
    assert (diastolic.value, diastolic.data_absent_reason) == (None, "not-performed")


def test_has_member_panels_list_the_member_ids() -> None:
    panel = observation(
        id="vitals-panel",
        hasMember=[
            {"reference": "Observation/respiratory-rate"},
            {"reference": "Observation/heart-rate"},
            {"display": "no literal reference"},
        ],
    )
    del panel["effectiveDateTime"]
    assert map_observation(panel, AMS).has_member == ["respiratory-rate", "heart-rate"]


def test_data_absent_reason_instead_of_a_value() -> None:
    unsat = observation(
        id="unsat",
        status="cancelled",
        dataAbsentReason={
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
            "text": "bad",
        },
    )
    ev = map_observation(unsat, AMS)
    assert (ev.value, ev.data_absent_reason, ev.status) == (None, "error", "cancelled")
    text_only = map_observation(observation(dataAbsentReason={"text": "patient refused"}), AMS)
    assert text_only.data_absent_reason == "patient refused"


@pytest.mark.parametrize(
    ("element", "value", "path"),
    [
        ("effectivePeriod", "2013-04-02", r"Observation/example\.effectivePeriod: expected a JSON object"),
        ("component", {"code": {}}, r"Observation/example\.component: expected a JSON array"),
        ("component", ["x"], r"Observation/example\.component\[0\]: expected a JSON object"),
        ("category", [{"coding": {"code": "x"}}], r"Observation/example\.category\[0\]\.coding: expected a JSON array"),
        ("meta", [], r"Observation/example\.meta: expected a JSON object"),
        ("effectiveTiming", {"event": "2013"}, r"Observation/example\.effectiveTiming\.event: expected a JSON array"),
    ],
)
def test_malformed_observation_elements_name_their_path(element: str, value: Any, path: str) -> None:
    res = observation(**{element: value})
    if element.startswith("effective"):
        del res["effectiveDateTime"]
    with pytest.raises(MappingError, match=path):
        map_observation(res, AMS)


# --- Patient ----------------------------------------------------------------------------------------------

PATIENT: dict[str, Any] = {  # after Patient-example of the R4 examples (Peter Chalmers), trimmed
    "resourceType": "Patient",
    "id": "example",
    "meta": {"versionId": "2", "lastUpdated": "2020-01-02T03:04:05Z"},
    "identifier": [
        {
            "use": "usual",
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
            "type": {"coding": [{"code": "MR"}]},
        },
        {"system": "urn:example:no-value"},
        {"value": "no-system"},
    ],
    "active": True,
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00",
            }
        ]
    },
    "deceasedBoolean": False,
    "address": [
        {"use": "old", "line": ["1 Old Road"], "city": "Oldtown", "postalCode": "9999", "country": "AUS"},
        {
            "use": "home",
            "type": "both",
            "text": "534 Erewhon St PeasantVille, Rainbow, Vic  3999",
            "line": ["534 Erewhon St"],
            "city": "PleasantVille",
            "district": "Rainbow",
            "state": "Vic",
            "postalCode": "3999",
            "country": "AUS",
            "period": {"start": "1974-12-25"},
        },
    ],
    "contact": [{"name": {"family": "du Marché"}, "telecom": [{"system": "phone", "value": "+33 (237) 998327"}]}],
    "photo": [{"contentType": "image/gif", "data": "R0lGODlhEwARAPcAAAAAAAAA"}],
}


def test_patient_identifiers_gender_birth_date_and_meta() -> None:
    ev = map_patient(PATIENT, AMS)
    assert [(i.system, i.value) for i in ev.identifiers] == [
        ("urn:oid:1.2.36.146.595.217.0.1", "12345"),
        (None, "no-system"),
    ]
    assert (ev.patient_id, ev.active, ev.gender, ev.deceased, ev.deceased_at) == ("example", True, "male", False, None)
    assert (ev.birth_date, ev.birth_date_precision) == (date(1974, 12, 25), "day")
    assert (ev.source_version, ev.source_last_updated) == ("2", utc(2020, 1, 2, 3, 4, 5))
    assert ev.occurred_at() == utc(2020, 1, 2, 3, 4, 5) and ev.entity_key() == "example"


def test_patient_data_minimisation_keeps_no_direct_identifiers() -> None:
    ev = map_patient(PATIENT, AMS)
    assert (ev.address_country, ev.postal_prefix) == ("AUS", "399")
    dumped = ev.model_dump_json()
    for leaked in (
        "Chalmers",
        "Peter",
        "5555",
        "Erewhon",
        "PleasantVille",
        "Rainbow",
        "Vic",
        "Oldtown",
        "Marché",
        "R0lGOD",
        "14:35",
        "1974-12-25T",
    ):
        assert leaked not in dumped, leaked


@pytest.mark.parametrize(
    ("birth", "expected", "precision"),
    [
        ("1974", date(1974, 1, 1), "year"),
        ("1974-12", date(1974, 12, 1), "month"),
        ("1974-12-25", date(1974, 12, 25), "day"),
        ("2000-02-29", date(2000, 2, 29), "day"),
    ],
)
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago", None])
def test_birth_date_is_a_calendar_date_never_shifted(
    birth: str, expected: date, precision: str, zone: str | None
) -> None:
    ev = map_patient({**PATIENT, "birthDate": birth}, zone)
    assert (ev.birth_date, ev.birth_date_precision) == (expected, precision)


@pytest.mark.parametrize("bad", ["1974-13", "1974-02-30", "25-12-1974", "1974-12-25T10:00:00Z", 1974, ""])
def test_bad_birth_date_names_the_element(bad: Any) -> None:
    with pytest.raises(MappingError, match=r"Patient/example\.birthDate: "):
        map_patient({**PATIENT, "birthDate": bad}, AMS)


def test_deceased_date_time_and_absent_deceased() -> None:
    dead = {k: v for k, v in PATIENT.items() if k != "deceasedBoolean"} | {"deceasedDateTime": "2015-02"}
    ev = map_patient(dead, BERLIN)
    assert (ev.deceased, ev.deceased_at, ev.deceased_precision) == (True, utc(2015, 1, 31, 23), "month")
    unknown = map_patient({k: v for k, v in PATIENT.items() if k != "deceasedBoolean"}, AMS)
    assert (unknown.deceased, unknown.deceased_at) == (None, None)
    assert map_patient({**PATIENT, "deceasedBoolean": True}, AMS).deceased is True


@pytest.mark.parametrize(
    ("addresses", "country", "prefix"),
    [
        (
            [{"use": "work", "postalCode": "1024 RJ", "country": "NLD"}, {"use": "home", "postalCode": "44130"}],
            None,
            "441",
        ),
        (
            [{"use": "old", "postalCode": "99999"}, {"use": "work", "postalCode": "1024 RJ", "country": "NLD"}],
            "NLD",
            "102",
        ),
        ([{"postalCode": "ab1 2cd", "country": "GB"}], "GB", "AB1"),
        ([{"postalCode": "12", "country": "XX"}], "XX", None),
        ([{"use": "old", "postalCode": "99999", "country": "AUS"}], None, None),
        ([], None, None),
    ],
)
def test_only_the_home_address_country_and_postal_prefix(
    addresses: list[dict[str, Any]], country: str | None, prefix: str | None
) -> None:
    ev = map_patient({**PATIENT, "address": addresses}, AMS)
    assert (ev.address_country, ev.postal_prefix) == (country, prefix)


# --- Encounter --------------------------------------------------------------------------------------------

ENCOUNTER: dict[str, Any] = {  # after Encounter-f001 and Encounter-home of the R4 examples
    "resourceType": "Encounter",
    "id": "f001",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
    "type": [
        {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "270427003", "display": "Patient-initiated encounter"}
            ],
            "text": "patient-initiated",
        },
        {"coding": [{"system": "urn:local", "code": "walk-in"}]},
    ],
    "subject": {"reference": "Patient/f001", "display": "P. van de Heuvel"},
    "period": {"start": "2013-03-11", "end": "2013-03-11T16:30:00+01:00"},
    "serviceProvider": {"reference": "Organization/f001"},
}


def test_encounter_class_type_period_and_references() -> None:
    ev = map_encounter(ENCOUNTER, AMS)
    assert (ev.encounter_id, ev.patient_id, ev.status, ev.service_provider_id) == ("f001", "f001", "finished", "f001")
    assert (ev.encounter_class.code, ev.encounter_class.system) == ("AMB", ENCOUNTER["class"]["system"])
    assert [c.code for c in ev.type] == ["270427003", "walk-in"] and ev.type_text == "patient-initiated"
    assert (ev.period_start, ev.period_start_precision) == (utc(2013, 3, 10, 23), "day")
    assert (ev.period_end, ev.period_end_precision) == (utc(2013, 3, 11, 15, 30), "second")


def test_open_encounter_and_display_only_subject() -> None:
    ongoing = {
        **ENCOUNTER,
        "status": "in-progress",
        "period": {"start": "2017-02-01T07:15:00+10:00"},
        "subject": {"display": "someone"},
    }
    ev = map_encounter(ongoing, AMS)
    assert (ev.period_start, ev.period_end, ev.patient_id) == (utc(2017, 1, 31, 21, 15), None, None)
    assert ev.entity_key() == "Encounter/f001"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class": None}, r"Encounter/f001\.class: expected one Coding"),
        ({"class": [{"coding": [{"code": "AMB"}]}]}, r"Encounter/f001\.class: expected one Coding"),
        ({"period": {"start": "2013-03-32"}}, r"Encounter/f001\.period\.start: "),
        ({"type": {"text": "x"}}, r"Encounter/f001\.type: expected a JSON array"),
        ({"id": None}, r"Encounter/None: no id"),
    ],
)
def test_bad_encounters_name_the_element(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        map_encounter({**ENCOUNTER, **change}, AMS)


def test_encounter_status_outside_the_value_set_fails_the_contract() -> None:
    with pytest.raises(ValidationError, match="status"):
        map_encounter({**ENCOUNTER, "status": "done"}, AMS)


# --- Condition --------------------------------------------------------------------------------------------

CONDITION: dict[str, Any] = {  # after Condition-f201 of the R4 examples
    "resourceType": "Condition",
    "id": "f201",
    "clinicalStatus": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]
    },
    "verificationStatus": {
        "coding": [
            {"system": "urn:local", "code": "yes"},
            {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"},
        ]
    },
    "category": [
        {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "55607006", "display": "Problem"},
                {"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"},
            ]
        }
    ],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "386661006", "display": "Fever"}]},
    "subject": {"reference": "Patient/f201"},
    "encounter": {"reference": "Encounter/f201"},
    "onsetDateTime": "2013-04-02",
    "abatementString": "around April 9, 2013",
    "recordedDate": "2013-04-04",
}


def test_condition_statuses_codes_onset_abatement_recorded() -> None:
    ev = map_condition(CONDITION, AMS)
    assert (ev.condition_id, ev.patient_id, ev.encounter_id) == ("f201", "f201", "f201")
    assert (ev.clinical_status, ev.verification_status) == ("resolved", "confirmed")
    assert ev.category == ["55607006", "problem-list-item"] and [c.code for c in ev.code] == ["386661006"]
    assert (ev.onset_start, ev.onset_precision, ev.onset_end) == (utc(2013, 4, 1, 22), "day", None)
    assert (ev.abated, ev.abatement_text, ev.abatement_start) == (True, "around April 9, 2013", None)
    assert (ev.recorded_date, ev.recorded_date_precision) == (utc(2013, 4, 3, 22), "day")
    assert ev.occurred_at() == ev.onset_start


def test_condition_with_text_only_code_and_absent_statuses() -> None:
    # Condition-example2: "approximately November 2012", code text only.
    res = {
        "resourceType": "Condition",
        "id": "example2",
        "code": {"text": "Asthma"},
        "subject": {"reference": "Patient/example"},
        "onsetString": "approximately November 2012",
    }
    ev = map_condition(res, AMS)
    assert (ev.code, ev.code_text, ev.onset_text) == ([], "Asthma", "approximately November 2012")
    assert (ev.clinical_status, ev.verification_status, ev.abated, ev.occurred_at()) == (None, None, None, None)


@pytest.mark.parametrize(
    ("age", "years"),
    [
        (q(52, "a", "years"), 52.0),
        (q(18, "mo", "months"), 1.5),
        (q(26, "wk"), 26 * 7 / 365.25),
        (q(730.5, "d", "days"), 2.0),
    ],
)
def test_onset_and_abatement_age_become_years(age: dict[str, Any], years: float) -> None:
    res = {k: v for k, v in CONDITION.items() if not k.startswith(("onset", "abatement"))}
    ev = map_condition({**res, "onsetAge": age, "abatementAge": age}, AMS)
    assert ev.onset_age_years == pytest.approx(years) and ev.abatement_age_years == pytest.approx(years)
    assert ev.abated is True and ev.onset_start is None


def test_onset_age_in_another_unit_is_a_mapping_error() -> None:
    res = {k: v for k, v in CONDITION.items() if not k.startswith("onset")}
    with pytest.raises(MappingError, match=r"Condition/f201\.onsetAge: .*UCUM a, mo, wk or d.*'h'"):
        map_condition({**res, "onsetAge": q(5, "h")}, AMS)


def test_onset_period_range_and_abatement_forms() -> None:
    res = {k: v for k, v in CONDITION.items() if not k.startswith(("onset", "abatement"))}
    period = map_condition(
        {
            **res,
            "onsetPeriod": {"start": "2013-04", "end": "2013-05-01T12:00:00Z"},
            "abatementDateTime": "2013-06-01T08:00:00+02:00",
        },
        AMS,
    )
    assert (period.onset_start, period.onset_end, period.onset_precision) == (
        utc(2013, 3, 31, 22),
        utc(2013, 5, 1, 12),
        "month",
    )
    assert (period.abated, period.abatement_start, period.abatement_precision) == (True, utc(2013, 6, 1, 6), "second")
    ranged = map_condition(
        {
            **res,
            "onsetRange": {"low": q(30, "a", "years"), "high": q(40, "a", "years")},
            "abatementRange": {"low": {"value": 50, "code": "a"}},
        },
        AMS,
    )
    assert (ranged.onset_text, ranged.abatement_text) == ("30 years - 40 years", ">= 50 a")
    not_abated = map_condition({**res, "abatementBoolean": False}, AMS)
    assert (not_abated.abated, not_abated.abatement_start) == (False, None)


def test_condition_needs_a_subject_and_a_known_onset_kind() -> None:
    with pytest.raises(ValidationError, match="patient_id"):
        map_condition({k: v for k, v in CONDITION.items() if k != "subject"}, AMS)
    with pytest.raises(MappingError, match=r"Condition/f201: unsupported onsetQuantity"):
        res = {k: v for k, v in CONDITION.items() if k != "onsetDateTime"}
        map_condition({**res, "onsetQuantity": {"value": 3}}, AMS)


# --- MedicationRequest ------------------------------------------------------------------------------------

MED_REQUEST: dict[str, Any] = {  # after MedicationRequest-medrx0302 of the R4 examples
    "resourceType": "MedicationRequest",
    "id": "medrx0302",
    "status": "active",
    "intent": "order",
    "contained": [
        {
            "resourceType": "Medication",
            "id": "med0320",
            "code": {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "324252006",
                        "display": "Azithromycin 250mg capsule (product)",
                    }
                ]
            },
        }
    ],
    "medicationReference": {"reference": "#med0320"},
    "subject": {"reference": "Patient/pat1", "display": "Donald Duck"},
    "encounter": {"reference": "Encounter/f001"},
    "authoredOn": "2015-01-15",
    "requester": {"reference": "Practitioner/f007", "display": "Patrick Pump"},
    "dosageInstruction": [
        {"sequence": 2, "text": "One tablet daily for 4 days"},
        {"text": "Unnumbered, after the numbered ones"},
        {"sequence": 3, "timing": {"repeat": {"frequency": 1}}},
        {"sequence": 1, "text": "Two tablets at once"},
    ],
}


def test_medication_request_with_a_contained_medication() -> None:
    ev = map_medication_request(MED_REQUEST, AMS)
    assert (ev.medication_request_id, ev.patient_id, ev.encounter_id, ev.status, ev.intent) == (
        "medrx0302",
        "pat1",
        "f001",
        "active",
        "order",
    )
    assert [c.code for c in ev.medication] == ["324252006"] and ev.medication_id is None
    assert (ev.authored_on, ev.authored_on_precision) == (utc(2015, 1, 14, 23), "day")
    assert ev.dosage_text == [
        "Two tablets at once",
        "One tablet daily for 4 days",
        "Unnumbered, after the numbered ones",
    ]
    assert (ev.requester_type, ev.requester_id) == ("Practitioner", "f007")


def test_medication_codeable_concept_and_unresolved_reference() -> None:
    concept = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "582620"}],
        "text": "Nizatidine 15 MG/ML Oral Solution",
    }
    base = {k: v for k, v in MED_REQUEST.items() if k not in ("contained", "medicationReference")}
    ev = map_medication_request({**base, "medicationCodeableConcept": concept}, AMS)
    assert ([c.code for c in ev.medication], ev.medication_text, ev.medication_id) == (
        ["582620"],
        "Nizatidine 15 MG/ML Oral Solution",
        None,
    )
    ref = map_medication_request(
        {**base, "medicationReference": {"reference": "Medication/med0316", "display": "prescribed medication"}}, AMS
    )
    assert (ref.medication, ref.medication_text, ref.medication_id) == ([], "prescribed medication", "med0316")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"medicationReference": {"reference": "#nope"}},
            r"MedicationRequest/medrx0302\.medicationReference: "
            r"reference '#nope' names no contained resource",
        ),
        ({"medicationReference": None}, r"MedicationRequest/medrx0302: no medication\[x\]"),
        ({"authoredOn": "15-01-2015"}, r"MedicationRequest/medrx0302\.authoredOn: "),
        ({"dosageInstruction": [None]}, r"MedicationRequest/medrx0302\.dosageInstruction\[0\]: expected a JSON object"),
    ],
)
def test_bad_medication_requests_name_the_element(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        map_medication_request({**MED_REQUEST, **change}, AMS)


@pytest.mark.parametrize(
    ("requester", "expected"),
    [
        ({"reference": "http://example.org/fhir/PractitionerRole/r1/_history/2"}, ("PractitionerRole", "r1")),
        ({"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974394"}, ("Practitioner", None)),
        (
            {"reference": "urn:uuid:0e99785d-8f2a-45c7-848c-d6b31d1aa50e"},
            (None, "0e99785d-8f2a-45c7-848c-d6b31d1aa50e"),
        ),
        ({"reference": "urn:uuid:0e99785d", "type": "Organization"}, ("Organization", "0e99785d")),
        ({"display": "Dr. Who"}, (None, None)),
    ],
)
def test_requester_is_split_into_type_and_id(requester: dict[str, Any], expected: tuple[Any, Any]) -> None:
    ev = map_medication_request({**MED_REQUEST, "requester": requester}, AMS)
    assert (ev.requester_type, ev.requester_id) == expected


def test_contained_requester_has_a_type_and_no_id() -> None:
    contained = [*MED_REQUEST["contained"], {"resourceType": "PractitionerRole", "id": "role"}]
    ev = map_medication_request({**MED_REQUEST, "contained": contained, "requester": {"reference": "#role"}}, AMS)
    assert (ev.requester_type, ev.requester_id) == ("PractitionerRole", None)


# --- references within a bundle ---------------------------------------------------------------------------


def _bundle(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": url, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
            for url, res in entries
        ],
    }


def test_urn_uuid_references_resolve_to_the_target_resources_id() -> None:
    pat = {"resourceType": "Patient", "id": "p-42"}
    med = {
        "resourceType": "Medication",
        "id": "m-7",
        "code": {"coding": [{"system": "urn:rx", "code": "897718"}], "text": "Verapamil"},
    }
    doc = {"resourceType": "Practitioner", "id": "dr-1"}
    enc = {**ENCOUNTER, "id": "e-1", "subject": {"reference": "urn:uuid:aaaa"}}
    mr = {
        **{k: v for k, v in MED_REQUEST.items() if k != "contained"},
        "subject": {"reference": "urn:uuid:aaaa"},
        "encounter": {"reference": "urn:uuid:eeee"},
        "medicationReference": {"reference": "urn:uuid:mmmm"},
        "requester": {"reference": "urn:uuid:dddd"},
    }
    obs = observation(subject={"reference": "urn:uuid:aaaa"}, hasMember=[{"reference": "urn:uuid:eeee"}])
    bundle = _bundle(
        ("urn:uuid:aaaa", pat),
        ("urn:uuid:mmmm", med),
        ("urn:uuid:dddd", doc),
        ("urn:uuid:eeee", enc),
        ("urn:uuid:rrrr", mr),
        ("urn:uuid:oooo", obs),
    )
    index = bundle_index(bundle)
    assert map_encounter(enc, AMS, index=index).patient_id == "p-42"
    assert map_observation(obs, AMS, index=index).patient_id == "p-42"
    assert map_observation(obs, AMS, index=index).has_member == ["e-1"]
    ev = map_medication_request(mr, AMS, index=index)
    assert (ev.patient_id, ev.encounter_id, ev.medication_id, ev.medication_text) == ("p-42", "e-1", "m-7", "Verapamil")
    assert [c.code for c in ev.medication] == ["897718"]
    assert (ev.requester_type, ev.requester_id) == ("Practitioner", "dr-1")
    # Without the index the reference is only parsed: the uuid stands for the id.
    assert map_encounter(enc, AMS).patient_id == "aaaa"
    assert map_resource(mr, AMS).requester_type is None  # type: ignore[attr-defined]


def test_relative_absolute_and_versioned_references_in_a_bundle() -> None:
    # After Bundle-bundle-references of the R4 examples.
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "http://example.org/fhir/Patient/23", "resource": {"resourceType": "Patient", "id": "23"}},
            {"fullUrl": "urn:uuid:04121321", "resource": {"resourceType": "Patient"}},
            {"fullUrl": "http://example.org/fhir/Patient/45", "resource": {"resourceType": "Patient", "id": "45"}},
            {"request": {"method": "DELETE", "url": "Patient/234"}},
        ],
    }
    index = bundle_index(bundle)
    assert resolve({"reference": "Patient/23"}, index) == "23"
    assert resolve({"reference": "http://example.org/fhir/Patient/23"}, index) == "23"
    assert resolve({"reference": "Patient/45/_history/2"}, index) == "45"
    assert resolve({"reference": "urn:uuid:04121321"}, index) == "04121321"  # target has no id: the uuid stands
    assert resolve({"reference": "http://example.org/fhir-2/Patient/1"}, index) == "1"  # not in the bundle
    assert resolve({"identifier": {"value": "1234567"}}, index) is None
    with pytest.raises(MappingError, match="expected a Bundle"):
        bundle_index({"resourceType": "Patient"})


@pytest.mark.parametrize(
    ("ref", "rid", "rtype"),
    [
        ({"reference": "Patient/123"}, "123", "Patient"),
        ({"reference": "https://fhir.example/r4/Patient/123/_history/2"}, "123", "Patient"),
        ({"reference": "urn:uuid:abc"}, "abc", None),
        ({"reference": "Patient?identifier=urn:mrn|42"}, None, "Patient"),
        ({"reference": "#p1"}, None, None),
        ({"display": "x", "type": "Patient"}, None, "Patient"),
        ("Patient/1", None, None),
    ],
)
def test_reference_parsing(ref: Any, rid: str | None, rtype: str | None) -> None:
    assert (reference_id(ref), reference_type(ref)) == (rid, rtype)


# --- dispatch and filters ---------------------------------------------------------------------------------


def test_dispatch_by_resource_type() -> None:
    assert set(MAPPERS) == {"Patient", "Encounter", "Condition", "MedicationRequest", "Observation"}
    for res in (PATIENT, ENCOUNTER, CONDITION, MED_REQUEST, BLOOD_PRESSURE):
        ev = map_resource(res, AMS)
        assert ev.subject().startswith(f"{res['resourceType']}/"), ev
    with pytest.raises(MappingError, match=r"Procedure/x: no clinical contract for resourceType 'Procedure'"):
        map_resource({"resourceType": "Procedure", "id": "x"}, AMS)
    with pytest.raises(MappingError, match="no clinical contract"):
        map_resource([], AMS)  # type: ignore[arg-type]


def test_filter_rules() -> None:
    assert filter_reason({**BLOOD_PRESSURE, "status": "entered-in-error"}) == "status entered-in-error"
    assert filter_reason({**ENCOUNTER, "status": "entered-in-error"}) == "status entered-in-error"
    assert filter_reason({**MED_REQUEST, "status": "entered-in-error"}) == "status entered-in-error"
    wrong = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]
    }
    assert filter_reason({**CONDITION, "verificationStatus": wrong}) == "verificationStatus entered-in-error"
    for res in (PATIENT, ENCOUNTER, CONDITION, MED_REQUEST, BLOOD_PRESSURE, {**CONDITION, "verificationStatus": 3}):
        assert filter_reason(res) is None


# --- malformed input only ever raises what the pipeline sends to the DLQ -----------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


SAMPLES: list[dict[str, Any]] = [
    PATIENT,
    ENCOUNTER,
    CONDITION,
    MED_REQUEST,
    BLOOD_PRESSURE,
    {**PATIENT, "deceasedDateTime": "2015-02", "deceasedBoolean": None},
    {
        **CONDITION,
        "onsetAge": q(52, "a"),
        "onsetDateTime": None,
        "abatementRange": {"low": q(1, "a")},
        "abatementString": None,
    },
    {**MED_REQUEST, "medicationReference": None, "medicationCodeableConcept": {"coding": [{"code": "1"}]}},
    observation(
        effectiveTiming={"event": ["2013-04-02"]},
        valueRange={"low": q(1, "g")},
        hasMember=[{"reference": "Observation/x"}],
        meta={"lastUpdated": "2014-01-01T00:00:00Z"},
    ),
]
JUNK: list[Any] = [None, "", "x", 0, -1, 1e400, True, [], {}, [None], [{}], {"a": 1}, "2013-99-99", "#x"]
SITES = [(i, p) for i, s in enumerate(SAMPLES) for p in _paths(s)]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _replaced(which: int, path: tuple[Any, ...], junk: Any) -> dict[str, Any]:
    res = copy.deepcopy(SAMPLES[which])
    parent: Any = res
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = junk
    return res


def _unexpected(res: dict[str, Any], zone: str | None) -> str | None:
    """None when ``res`` maps to a valid event or raises a DLQ error; else what went wrong."""
    try:
        ev = map_resource(res, zone)
        type(ev).model_validate_json(orjson.dumps(ev.model_dump(mode="json")))  # what maps is a valid event
    except (MappingError, ValidationError):
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def test_every_element_replaced_by_junk_raises_only_dlq_errors() -> None:
    """Every element of every sample, replaced by each wrong JSON shape: a valid event or a DLQ error."""
    failures = [
        f"{SAMPLES[which]['resourceType']} {path} = {junk!r}: {problem}"
        for which, path in SITES
        for junk in JUNK
        if (problem := _unexpected(_replaced(which, path, junk), AMS))
    ]
    assert len(SITES) > 200 and not failures, "\n".join(failures[:20])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site=st.sampled_from(SITES), junk=JSON, zone=st.sampled_from([AMS, None]))
def test_random_json_anywhere_raises_only_dlq_errors(
    site: tuple[int, tuple[Any, ...]], junk: Any, zone: str | None
) -> None:
    assert _unexpected(_replaced(*site, junk), zone) is None
