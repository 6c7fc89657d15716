"""Incremental FHIR search beyond Observations (Patient, Encounter) against the real test server, the Klinikum
Mitte plugin's quirks, and its recorded fixtures holding none of the generated PHI."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from pydantic import ValidationError

from inlet.connectors.customers.klinikum_mitte import (
    LAB_SYSTEM,
    WARD_SYSTEM,
    WARD_URL,
    KlinikumMitteEncounters,
    KlinikumMitteObservations,
)
from inlet.connectors.fhir.search import (
    FhirObservationSearchConnector,
    FhirSearchConnector,
    FhirSearchSettings,
    watermark_key,
)
from inlet.connectors.fhir.synth import generate_encounters, generate_observations, generate_patients
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.errors import ConfigError, MappingError
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.redact import scan_for_leaks
from inlet.core.registry import find_plugin
from inlet.core.sinks.memory import MemorySink
from tools.record_hospitals import CUSTOMER, INTEGRATIONS, hospital_resources
from tools.servers.fhir import FhirTestServer

ROOT = Path(__file__).resolve().parents[3]
Resource = dict[str, Any]


def _patients() -> list[Resource]:
    return generate_patients(57, seed=41)


def _encounters() -> list[Resource]:
    return generate_encounters(generate_patients(12, seed=42), 57, seed=43)


class _Feed:
    """One search integration run poll after poll through the real pipeline, checkpoint and memory sink."""

    def __init__(self, store: CheckpointStore, connector: FhirSearchConnector) -> None:
        self.connector = connector
        self.store = store
        self.stats = Stats("acme", "feed")

    async def poll(self) -> list[Resource]:
        """One poll from the stored checkpoint; the contract payloads it emitted (DLQ records excluded)."""
        sink = MemorySink()
        pipeline = Pipeline(self.connector, Enveloper("acme", "feed"), sink, self.store, self.stats)
        await pipeline.run(await self.store.load("acme", "feed"), asyncio.Event())
        return [orjson.loads(e.value) for e in sink.events if not e.topic.startswith("inlet.")]


def _connector(base_url: str, resource_type: str, page_size: int) -> FhirSearchConnector:
    settings = FhirSearchSettings(
        http=HttpSettings(base_url=base_url), resource_type=resource_type, page_size=page_size
    )
    return FhirSearchConnector(IntegrationContext("acme", "feed", zone="Europe/Berlin"), settings)


@pytest.mark.parametrize(
    ("resource_type", "make", "id_field"),
    [("Patient", _patients, "patient_id"), ("Encounter", _encounters, "encounter_id")],
)
async def test_incremental_search_pages_keeps_ties_and_a_second_poll_adds_nothing(
    checkpoint_store: CheckpointStore, resource_type: str, make: Callable[[], list[Resource]], id_field: str
) -> None:
    resources = make()
    ties = Counter(r["meta"]["lastUpdated"] for r in resources)
    assert max(ties.values()) >= 3, "the generated data must have several writes in one instant"
    last = resources[-1]["meta"]["lastUpdated"]
    with FhirTestServer(resources) as server:
        feed = _Feed(checkpoint_store, _connector(server.base_url, resource_type, page_size=4))  # tie groups span pages
        async with feed.connector:
            first = await feed.poll()
            assert sorted(e[id_field] for e in first) == sorted(r["id"] for r in resources), "no loss, no dup"
            assert server.counts["page"] == -(-len(resources) // 4) - 1
            assert all(t.startswith(f"/fhir/{resource_type}?") or "_getpages" in t for t in server.requested_urls)
            position = await feed.store.load("acme", "feed")
            assert position is not None
            assert position["ids_at_watermark"] == sorted(
                watermark_key(r) for r in resources if r["meta"]["lastUpdated"] == last
            )

            assert await feed.poll() == [], "the second poll re-reads the watermark's ties and emits nothing"
            assert feed.stats.totals.filtered["already delivered at the watermark"] == ties[last]
            assert f"_lastUpdated=ge{position['last_updated']}" in unquote(server.requested_urls[-1])

            # Written since: one more resource in the watermark's instant, a second version of one already
            # delivered in that same instant (a server with a coarse clock), and a later one.
            tie = copy.deepcopy(resources[0])
            tie["id"], tie["meta"] = "late-tie", dict(resources[-1]["meta"])
            again = copy.deepcopy(resources[-1])
            version = str(int(again["meta"]["versionId"]) + 1)
            again["meta"] = {**again["meta"], "versionId": version}
            later = copy.deepcopy(resources[1])
            later["id"], later["meta"] = "later", {**later["meta"], "lastUpdated": "2030-01-01T00:00:00.000+00:00"}
            server.add([tie, again, later])
            third = await feed.poll()
            assert sorted((e[id_field], e["source_version"]) for e in third) == sorted(
                [("late-tie", tie["meta"]["versionId"]), (again["id"], version), ("later", later["meta"]["versionId"])]
            )
            assert await feed.poll() == []
    assert feed.stats.totals.balanced()


def test_the_search_plugins_are_registered_and_the_observation_one_stays_observation_only() -> None:
    assert find_plugin("fhir.search") is FhirSearchConnector
    assert find_plugin("fhir.observation_search") is FhirObservationSearchConnector
    http = {"base_url": "https://ehr.invalid/fhir"}
    with pytest.raises(ValidationError, match="resource_type"):
        FhirObservationSearchConnector.settings_model.model_validate({"http": http, "resource_type": "Patient"})
    with pytest.raises(ValidationError, match="resource_type"):
        FhirSearchConnector.settings_model.model_validate({"http": http, "resource_type": "Practitioner"})
    settings = FhirSearchSettings(http=HttpSettings(base_url=http["base_url"]), resource_type="Patient")
    with pytest.raises(ConfigError, match=r"fhir\.observation_search searches Observation, not 'Patient'"):
        FhirObservationSearchConnector(IntegrationContext("acme", "obs", zone="UTC"), settings)
    patients = FhirSearchConnector(IntegrationContext("acme", "p", zone="UTC"), settings)
    with pytest.raises(MappingError, match=r"search for Patient returned a Observation"):
        patients.map(generate_observations(1, seed=1)[0])


# -- Klinikum Mitte's quirks -----------------------------------------------------------------------------
def _plugin(cls: type[FhirSearchConnector], zone: str | None = "Europe/Berlin") -> FhirSearchConnector:
    settings = cls.settings_model.model_validate({"http": {"base_url": "https://ehr.klinikum-mitte.invalid/fhir"}})
    return cls(IntegrationContext("klinikum-mitte", "x", zone=zone), settings)  # type: ignore[arg-type]


def _encounter(period: dict[str, str], extension: list[Any] | None = None) -> Resource:
    enc = copy.deepcopy(_encounters()[0])
    enc["period"] = period
    if extension is not None:
        enc["extension"] = extension
    return enc


def test_the_ward_extension_becomes_a_type_coding_and_a_broken_one_is_a_mapping_error() -> None:
    plugin = _plugin(KlinikumMitteEncounters)
    enc = _encounter(
        {"start": "2024-01-15T10:00:00"},
        [{"url": "https://other.invalid/x", "valueString": "n/a"}, {"url": WARD_URL, "valueString": " K3 "}],
    )
    [event] = plugin.map(enc)
    dumped = event.model_dump()
    assert dumped["type"][-1] == {"system": WARD_SYSTEM, "code": "K3", "display": None}
    assert dumped["type"][:-1] == [c for t in enc["type"] for c in t["coding"]]  # the EHR's types first, intact
    assert dumped["type_text"] == enc["type"][0]["text"]
    [plain] = plugin.map(_encounter({"start": "2024-01-15T10:00:00"}))
    assert all(c["system"] != WARD_SYSTEM for c in plain.model_dump()["type"])
    with pytest.raises(MappingError, match=r"Encounter/.*\.extension\[0\] \(ward, .*expected a non-empty valueString"):
        plugin.map(_encounter({"start": "2024-01-15T10:00:00"}, [{"url": WARD_URL, "valueInteger": 3}]))


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ({"start": "2024-01-15T10:00:00", "end": "2024-01-15T10:45:00"}, "2024-01-15T09:00:00", "2024-01-15T09:45:00"),
        ({"start": "2024-07-15T10:00:00"}, "2024-07-15T08:00:00", None),  # CEST, open stay
        ({"start": "2023-10-29T02:30:00", "end": "2023-10-29T02:10:00"}, "2023-10-29T00:30:00", "2023-10-29T01:10:00"),
        ({"start": "2024-03-31T02:30:00", "end": "2024-03-31T04:00:00"}, "2024-03-31T01:30:00", "2024-03-31T02:00:00"),
        ({"start": "2024-01-15T10:00:00+00:00"}, "2024-01-15T10:00:00", None),  # an offset wins
    ],
)
def test_naive_periods_are_berlin_wall_time_and_the_dst_edges_resolve(
    period: dict[str, str], start: str, end: str | None
) -> None:
    [event] = _plugin(KlinikumMitteEncounters).map(_encounter(period))
    got = event.model_dump()
    assert got["period_start"] == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert got["period_end"] == (datetime.fromisoformat(end).replace(tzinfo=UTC) if end else None)
    assert got["period_start_precision"] == "second"


def test_the_family_alone_refuses_the_fall_back_hour_and_the_plugin_refuses_another_zone() -> None:
    night = _encounter({"start": "2023-10-29T02:30:00"})
    family = _connector("https://ehr.invalid/fhir", "Encounter", 10)
    with pytest.raises(MappingError, match="occurs twice"):
        family.map(night)
    with pytest.raises(MappingError, match=r"Encounter/.*\.period: .*2024-02-30"):
        _plugin(KlinikumMitteEncounters).map(_encounter({"start": "2024-02-30T08:00:00"}))
    with pytest.raises(ConfigError, match="zone must be Europe/Berlin"):
        _plugin(KlinikumMitteEncounters, zone="UTC")
    with pytest.raises(ConfigError, match="zone must be Europe/Berlin"):
        _plugin(KlinikumMitteEncounters, zone=None)


def test_local_lab_codes_get_their_loinc_first_and_unknown_ones_pass_as_they_are() -> None:
    plugin = _plugin(KlinikumMitteObservations)
    obs = next(o for o in generate_observations(60, seed=7) if "valueQuantity" in o)

    def codes(*coding: dict[str, str]) -> list[tuple[str, str]]:
        [event] = plugin.map({**obs, "code": {"coding": list(coding), "text": "Kreatinin"}})
        return [(c["system"], c["code"]) for c in event.model_dump()["code"]]

    loinc = ("http://loinc.org", "38483-4")
    assert codes({"system": LAB_SYSTEM, "code": "KREA"}) == [loinc, (LAB_SYSTEM, "KREA")]
    assert codes({"system": LAB_SYSTEM, "code": "KREA"}, {"system": loinc[0], "code": loinc[1]}) == [
        (LAB_SYSTEM, "KREA"),
        loinc,
    ]  # already there: no second LOINC coding
    assert codes({"system": LAB_SYSTEM, "code": "LAKT"}) == [(LAB_SYSTEM, "LAKT")]


# -- the recorded fixtures -------------------------------------------------------------------------------
def _golden(integration: str) -> list[Resource]:
    path = ROOT / "fixtures" / CUSTOMER / integration / "events.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_recorded_fixtures_show_each_quirk_and_each_bad_record() -> None:
    encounters = {
        d["value"]["encounter_id"]: d["value"] for d in _golden("encounters") if d["topic"] == "clinical.encounter.v1"
    }
    night = encounters["fall-back-night"]
    assert (night["period_start"], night["period_end"]) == ("2023-10-29T00:30:00Z", "2023-10-29T01:10:00Z")
    assert sum(any(c["system"] == WARD_SYSTEM for c in e["type"]) for e in encounters.values()) >= 30
    observations = [d["value"] for d in _golden("observations") if d["topic"] == "clinical.observation.v1"]
    mapped = [o for o in observations if any(c["system"] == LAB_SYSTEM for c in o["code"])]
    assert mapped and all(
        o["code"][0]["system"] == "http://loinc.org" for o in mapped if o["observation_id"] != "local-lactate"
    )
    dlq = {
        i: sorted(d["headers"]["dlq_error_type"] for d in _golden(i) if d["topic"].startswith("inlet.dlq"))
        for i in INTEGRATIONS
    }
    assert dlq == {
        "patients": ["MappingError", "ValidationError"],
        "encounters": ["MappingError", "MappingError", "TimestampError"],
        "observations": ["TimestampError"],
    }


def _phi(resources: dict[str, list[Resource]]) -> list[str]:
    """Every generated direct identifier: names, phones, identifiers, addresses, person ids, exact birth dates."""
    out: list[str] = []
    for p in resources["patients"]:
        out += [p["id"], f'"{p["birthDate"]}"']
        out += [part for n in p["name"] for part in (n["family"], *n["given"])]
        out += [i["value"] for i in p["identifier"]] + [t["value"] for t in p["telecom"]]
        out += [ext["valueString"] for ext in p["extension"] if "valueString" in ext]
        if isinstance(p["address"], list):
            out += [line for a in p["address"] for line in a["line"]] + [f'"{a["postalCode"]}"' for a in p["address"]]
    for e in resources["encounters"]:
        out += [e["subject"]["display"]] + [pa["individual"]["display"] for pa in e["participant"]]
        out += [pa["individual"]["reference"].split("/")[-1] for pa in e["participant"]]
    return out


def test_no_fixture_file_holds_a_generated_name_or_identifier() -> None:
    phi = _phi(hospital_resources())
    assert len(phi) > 400
    files = sorted((ROOT / "fixtures" / CUSTOMER).glob("*/*"))
    assert {f.name for f in files} >= {"http.jsonl", "events.jsonl", "shape.json"} and len(files) == 9
    for path in files:
        text = path.read_text()
        assert len(text) < 300_000, path
        assert scan_for_leaks(text, secrets=[], phi_values=phi) == [], path


async def test_a_refused_search_is_a_typed_error_with_the_servers_issue_codes() -> None:
    from inlet.connectors.fhir.outcome import OperationOutcomeError
    from inlet.connectors.fhir.search import FhirSearchConnector, FhirSearchSettings
    from inlet.core.connector import IntegrationContext
    from tools.servers.fhir import FhirTestServer

    with FhirTestServer([]) as server:
        settings = FhirSearchSettings.model_validate(
            {
                "http": {"base_url": server.base_url, "max_attempts": 1},
                "resource_type": "Patient",
                "params": {"shoe-size": "42"},
            }
        )
        async with FhirSearchConnector(IntegrationContext("acme", "patients"), settings) as connector:
            with pytest.raises(OperationOutcomeError) as info:
                async for _ in connector.read(None):
                    pass
    assert info.value.status == 400 and info.value.codes == ("invalid",)
    assert "shoe-size" in str(info.value) and "search Patient answered 400" in str(info.value)
