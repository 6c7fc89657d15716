"""Record the hospital plugins' fixtures (Klinikum Mitte) from the local FHIR test server.

Serves *generated* data (``connectors.fhir.synth``, seeded — never third-party files) shaped the way the
hospital's EHR writes it, quirks included (a ward extension on Encounters, naive Berlin wall time in
``Encounter.period``, local lab codes on Observations), plus a few bad records the DLQ must catch and one the
family filters, and records each integration with ``core.fixtures.record`` into
``fixtures/klinikum-mitte/<integration>/`` (exchanges redacted with PHI pseudonymised, shape, golden events).
Each integration gets its own fresh server, so re-recording one leaves the others' files unchanged.

    .venv/bin/python -m tools.record_hospitals
"""

from __future__ import annotations

import copy
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from inlet.connectors.customers.klinikum_mitte import LAB_SYSTEM, LAB_TO_LOINC, WARD_URL, ZONE
from inlet.connectors.fhir.synth import FhirResource, generate_dataset, generate_encounters, generate_patients
from inlet.core.config import LoadedIntegration, load_config
from tools.recording import record_from_fhir_server

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "customers"
CUSTOMER = "klinikum-mitte"
INTEGRATIONS = ("patients", "encounters", "observations")
WARDS = ("K3", "C2", "ITS", "NOTA", "G1", "P4")
PSEUDONYM_KEY = "klinikum-mitte-synthetic-data-only"
"""The data is synthetic, so a fixed key is fine *here*; a real customer's key comes from the environment."""

_LOINC_TO_LAB = {loinc: local for local, (loinc, _display) in LAB_TO_LOINC.items()}


def _naive_berlin(value: str) -> str:
    """The EHR's way of writing a period: Berlin wall time, no offset."""
    return datetime.fromisoformat(value).astimezone(ZoneInfo(ZONE)).replace(tzinfo=None).isoformat()


def _at_watermark(extra: list[FhirResource], last: FhirResource) -> list[FhirResource]:
    """Give the extra records the last write's instant: ties at the final watermark, read twice."""
    for r in extra:
        r["meta"] = {**last["meta"], "versionId": "1"}
    return extra


def hospital_patients() -> list[FhirResource]:
    """Generated patients (German addresses) plus two the DLQ must catch."""
    patients = generate_patients(36, seed=31, country="DE", language="de-DE")
    # (Not a bad birthDate: pseudonymisation keeps only its year, which would heal it in the recording.)
    bad_address = copy.deepcopy(patients[3])
    bad_address["id"], bad_address["address"] = "bad-address", patients[3]["address"][0]  # object, not array
    bad_gender = copy.deepcopy(patients[4])
    bad_gender["id"], bad_gender["gender"] = "bad-gender", "mann"
    return [*patients, *_at_watermark([bad_address, bad_gender], patients[-1])]


def hospital_encounters(patients: list[FhirResource]) -> list[FhirResource]:
    """Generated encounters as the EHR writes them (ward extension, naive periods) plus the odd ones."""
    good = [p for p in patients if not str(p["id"]).startswith("bad-")]
    encounters = generate_encounters(good, 40, seed=32)
    for i, enc in enumerate(encounters):
        enc["period"] = {k: _naive_berlin(v) for k, v in enc["period"].items()}
        if i % 5 != 4:  # the ambulance bay records no ward
            enc["extension"] = [{"url": WARD_URL, "valueString": WARDS[i % len(WARDS)]}]
    # The night the clocks went back (2023-10-29, 03:00 CEST -> 02:00 CET): admitted at 02:30 the first
    # time, seen until 02:10 the second time, so the end is after the start only on the later offset.
    fall_back = copy.deepcopy(encounters[1])
    fall_back["id"], fall_back["period"] = (
        "fall-back-night",
        {"start": "2023-10-29T02:30:00", "end": "2023-10-29T02:10:00"},
    )
    bad_ward = copy.deepcopy(encounters[2])
    bad_ward["id"], bad_ward["extension"] = "bad-ward", [{"url": WARD_URL, "valueInteger": 3}]
    no_class = copy.deepcopy(encounters[3])
    no_class["id"] = "bad-no-class"
    del no_class["class"]
    bad_time = copy.deepcopy(encounters[5])
    bad_time["id"], bad_time["period"] = "bad-period", {"start": "2024-02-30T08:00:00"}
    error = copy.deepcopy(encounters[6])
    error["id"], error["status"] = "entered-in-error-1", "entered-in-error"
    return [*encounters, *_at_watermark([fall_back, bad_ward, no_class, bad_time, error], encounters[-1])]


def hospital_observations(patients: list[FhirResource], encounters: list[FhirResource]) -> list[FhirResource]:
    """Generated observations of the hospital's own patients and stays, lab results in local codes."""
    dataset = generate_dataset(80, seed=33)
    stays = [e for e in encounters if "class" in e and not str(e["id"]).startswith(("bad-", "fall-back"))]
    stay_of = {e["id"]: stays[i * 7 % len(stays)] for i, e in enumerate(dataset.encounters)}
    observations = dataset.observations
    for obs in observations:
        stay = stay_of[obs["encounter"]["reference"].split("/")[-1]]
        obs["subject"] = {"reference": stay["subject"]["reference"]}
        obs["encounter"] = {"reference": f"Encounter/{stay['id']}"}
        coding = obs["code"]["coding"][0]
        if coding["code"] in _LOINC_TO_LAB:  # the lab system's own code, not LOINC
            obs["code"] = {
                "coding": [{"system": LAB_SYSTEM, "code": _LOINC_TO_LAB[coding["code"]]}],
                "text": coding["display"],
            }
    unmapped = copy.deepcopy(next(o for o in observations if o["code"]["coding"][0]["system"] == LAB_SYSTEM))
    unmapped["id"], unmapped["code"] = (
        "local-lactate",
        {"coding": [{"system": LAB_SYSTEM, "code": "LAKT"}], "text": "Laktat"},
    )
    bad_time = copy.deepcopy(observations[7])
    bad_time["id"], bad_time["effectiveDateTime"] = "bad-effective-time", "2024-02-30T10:00:00+01:00"
    error = copy.deepcopy(observations[9])
    error["id"], error["status"] = "entered-in-error-1", "entered-in-error"
    return [*observations, *_at_watermark([unmapped, bad_time, error], observations[-1])]


def hospital_resources() -> dict[str, list[FhirResource]]:
    """What the hospital's EHR serves, by integration."""
    patients = hospital_patients()
    encounters = hospital_encounters(patients)
    return {"patients": patients, "encounters": encounters, "observations": hospital_observations(patients, encounters)}


def configured(integration: str) -> LoadedIntegration:
    """The Klinikum Mitte integration as ``examples/customers`` configures it (loaded alone: the directory holds
    other customers' integrations whose secrets this machine need not have)."""
    _, [found] = load_config(CONFIG, only=[f"{CUSTOMER}/{integration}"])
    return found


def record_hospitals() -> None:
    """Record every Klinikum Mitte integration of ``examples/customers``."""
    os.environ.setdefault("INLET_PSEUDONYM_KEY", PSEUDONYM_KEY)
    resources = hospital_resources()
    for integration in INTEGRATIONS:
        item = configured(integration)
        fixtures = ROOT / "fixtures" / CUSTOMER / integration
        count = record_from_fhir_server(item, resources[integration], fixtures)
        print(
            f"recorded {fixtures.relative_to(ROOT)}: {count} golden events from {len(resources[integration])} resources"
        )


if __name__ == "__main__":
    record_hospitals()
