"""Tests of the FHIR test server (tools.servers.fhir) and the synthetic data generator (connectors.fhir.synth).

Why test test infrastructure: every FHIR connector test trusts this server to page, filter and fail exactly as
configured. If it skipped a resource at a page boundary or filtered ``ge`` exclusively, connector tests would
pass or fail for the server's reasons, not the connector's.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from inlet.connectors.fhir.synth import (
    DEFAULT_START,
    IDENTIFIER_SYSTEM,
    SYNTHETIC_TAG,
    generate_dataset,
    generate_observations,
)
from tools.servers.fhir import SYNTHEA_SUBDIR, Faults, FhirTestServer, synthea_observations

REPO_ROOT = Path(__file__).resolve().parents[2]
Resource = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------------------


def instant(resource: Resource) -> datetime:
    return datetime.fromisoformat(resource["meta"]["lastUpdated"])


def in_server_order(resources: list[Resource]) -> list[str]:
    """Ids ordered as ``_sort=_lastUpdated`` must return them: by instant, ties by id."""
    return [r["id"] for r in sorted(resources, key=lambda r: (instant(r), r["id"]))]


def next_url(bundle: Resource) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


def fetch_all(
    client: httpx.Client, base_url: str, params: dict[str, Any] | None = None, resource_type: str = "Observation"
) -> list[Resource]:
    """Follow ``next`` links from a search to the end; every bundle must be a proper searchset."""
    response = client.get(f"{base_url}/{resource_type}", params=params or {})
    resources: list[Resource] = []
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "searchset"
        for entry in bundle.get("entry", []):
            assert entry["search"] == {"mode": "match"}
            resources.append(entry["resource"])
        url = next_url(bundle)
        if url is None:
            return resources
        response = client.get(url)


def ids(resources: list[Resource]) -> list[str]:
    return [r.get("id", "") for r in resources]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def observations() -> list[Resource]:
    return generate_observations(1234, seed=3)


@pytest.fixture
def server(observations: list[Resource]) -> Iterator[FhirTestServer]:
    with FhirTestServer(observations) as srv:
        yield srv
    assert srv.errors == []


@pytest.fixture(scope="module")
def synthea_folder(sample_data: Path) -> Path:
    return sample_data / SYNTHEA_SUBDIR


# --- the generator -------------------------------------------------------------------------------------------


def test_generator_is_deterministic_per_seed() -> None:
    first = generate_observations(800, seed=7)
    assert len(first) == 800
    assert orjson.dumps(first) == orjson.dumps(generate_observations(800, seed=7))
    assert ids(generate_observations(800, seed=8)) != ids(first)
    later = datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    moved = generate_observations(800, seed=7, start=later)
    assert moved[0]["meta"]["lastUpdated"] == "2025-06-01T12:00:00.000+02:00"
    assert all(r["meta"]["lastUpdated"].endswith("+02:00") for r in moved)
    assert generate_observations(0) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        generate_observations(5, start=datetime(2024, 1, 1))  # naive on purpose


def test_generator_last_updated_increases_with_ties_and_same_second_neighbours() -> None:
    resources = generate_observations(2000, seed=0)
    assert resources[0]["meta"]["lastUpdated"] == DEFAULT_START.isoformat(timespec="milliseconds")
    instants = [instant(r) for r in resources]
    assert instants == sorted(instants)
    per_instant = Counter(r["meta"]["lastUpdated"] for r in resources)
    assert sum(1 for n in per_instant.values() if n > 1) > 50, "several resources must share a lastUpdated"
    assert max(per_instant.values()) >= 3
    distinct = sorted({instant(r) for r in resources})
    same_second = sum(
        1 for a, b in itertools.pairwise(distinct) if a.replace(microsecond=0) == b.replace(microsecond=0)
    )
    assert same_second > 50, "distinct instants within one second exercise second-precision watermarks"
    assert {r["meta"]["versionId"] for r in resources} == {"1", "2"}
    assert len({r["id"] for r in resources}) == len(resources)


def test_generator_is_shaped_like_synthea() -> None:
    dataset = generate_dataset(3000, seed=11)
    resources = dataset.observations
    categories = Counter(r["category"][0]["coding"][0]["code"] for r in resources)
    assert set(categories) == {"vital-signs", "laboratory", "survey", "social-history"}

    quantities = [r for r in resources if "valueQuantity" in r]
    assert len(quantities) > len(resources) // 2
    for r in quantities:
        quantity = r["valueQuantity"]
        assert quantity["system"] == "http://unitsofmeasure.org"
        assert quantity["code"] == quantity["unit"]
        assert isinstance(quantity["value"], int | float)
    assert {"cm", "kg", "mg/dL", "mmol/L", "{score}", "mL/min/{1.73_m2}"} <= {
        r["valueQuantity"]["unit"] for r in quantities
    }

    coded = [r for r in resources if "valueCodeableConcept" in r]
    assert {r["code"]["coding"][0]["code"] for r in coded} == {"72166-2", "63513-6"}
    assert any("valueString" in r for r in resources)

    panels = [r for r in resources if "component" in r]
    assert panels
    for panel in panels:
        assert panel["code"]["coding"][0]["code"] == "55284-4"
        assert "valueQuantity" not in panel
        assert {c["code"]["coding"][0]["code"] for c in panel["component"]} == {"8480-6", "8462-4"}
        assert {c["valueQuantity"]["unit"] for c in panel["component"]} == {"mm[Hg]"}

    offsets = {r["effectiveDateTime"][19:] for r in resources}
    assert len(offsets) > 3 and all(re.fullmatch(r"[+-]\d{2}:\d{2}", o) for o in offsets)
    patients = {p["id"] for p in dataset.patients}
    encounters = {e["id"] for e in dataset.encounters}
    for r in resources:
        assert r["resourceType"] == "Observation"
        assert r["status"] in ("final", "amended")
        assert r["subject"]["reference"].removeprefix("Patient/") in patients
        assert r["encounter"]["reference"].removeprefix("Encounter/") in encounters
        effective, issued = datetime.fromisoformat(r["effectiveDateTime"]), datetime.fromisoformat(r["issued"])
        assert effective <= issued <= instant(r)
    assert {e["subject"]["reference"].removeprefix("Patient/") for e in dataset.encounters} <= patients


def test_generator_is_fast_enough_for_benchmarks() -> None:
    began = time.perf_counter()
    resources = generate_observations(20_000, seed=1)
    elapsed = time.perf_counter() - began
    assert len(resources) == 20_000
    assert elapsed < 3.0, f"20k Observations took {elapsed:.2f}s"


_REAL_LOOKING = {
    "US social security number": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone number": re.compile(r"\(?\b\d{3}\)?[ .-]\d{3}-\d{4}\b"),
    "e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
}
_ALLOWED_HOSTS = {
    "loinc.org",
    "snomed.info",
    "unitsofmeasure.org",
    "terminology.hl7.org",
    "synthetic.inlet.invalid",
}


def test_generated_resources_contain_no_real_identifiers() -> None:
    dataset = generate_dataset(3000, seed=5)
    text = orjson.dumps(dataset.all_resources()).decode()
    for what, pattern in _REAL_LOOKING.items():
        assert not pattern.search(text), f"looks like a real {what}: {pattern.search(text)}"
    hosts = {urlsplit(url).hostname for url in re.findall(r'"(https?://[^"]+)"', text)}
    assert hosts <= _ALLOWED_HOSTS
    for resource in dataset.all_resources():
        assert uuid.UUID(resource["id"]).version == 4
        assert SYNTHETIC_TAG in resource["meta"]["tag"]
    for patient in dataset.patients:
        assert not {"address", "telecom", "photo", "contact"} & set(patient)
        assert {i["system"] for i in patient["identifier"]} == {IDENTIFIER_SYSTEM}
        for name in patient["name"]:
            # Digits in every name part, as Synthea does: no generated name can be a real person's name.
            assert all(re.search(r"\d", part) for part in [name["family"], *name["given"]])


def test_generated_data_shares_nothing_with_the_synthea_samples(synthea_folder: Path) -> None:
    sample_text = "".join(path.read_text(encoding="utf-8") for path in sorted(synthea_folder.glob("*.json")))
    sample_ids = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sample_text))
    dataset = generate_dataset(3000, seed=0)
    assert not sample_ids & {r["id"] for r in dataset.all_resources()}
    for patient in dataset.patients:
        assert patient["name"][0]["family"] not in sample_text


# --- paging and search ---------------------------------------------------------------------------------------


def test_paging_covers_every_resource_exactly_once_in_last_updated_order(
    server: FhirTestServer, client: httpx.Client, observations: list[Resource]
) -> None:
    got = fetch_all(client, server.base_url, {"_sort": "_lastUpdated", "_count": 100})
    assert ids(got) == in_server_order(observations)
    assert Counter(server.counts) == Counter(search=1, page=12)
    page_urls = server.requested_urls[1:]
    for number, target in enumerate(page_urls, start=1):
        query = parse_qs(urlsplit(target).query)
        assert urlsplit(target).path == "/fhir"
        assert query["_getpagesoffset"] == [str(100 * number)]
        assert query["_count"] == ["100"]
        assert len(query["_getpages"]) == 1
    # Resources are served byte-for-byte as given.
    assert {r["id"]: r for r in got} == {r["id"]: r for r in observations}


def test_bundle_shape_and_count_limits(server: FhirTestServer, client: httpx.Client) -> None:
    bundle = client.get(f"{server.base_url}/Observation", params={"_sort": "_lastUpdated"}).json()
    assert len(bundle["entry"]) == 50  # the default _count
    assert bundle["total"] == 1234
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{server.base_url}/Observation/{entry['resource']['id']}"
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"] == f"{server.base_url}/Observation?_sort=_lastUpdated"
    assert "_getpages=" in links["next"] and "previous" not in links
    second = client.get(links["next"]).json()
    assert {link["relation"] for link in second["link"]} == {"self", "next", "previous"}

    assert len(client.get(f"{server.base_url}/Observation", params={"_count": 5000}).json()["entry"]) == 1000
    only_total = client.get(f"{server.base_url}/Observation", params={"_count": 0}).json()
    assert only_total["total"] == 1234 and "entry" not in only_total and next_url(only_total) is None
    without_total = client.get(f"{server.base_url}/Observation", params={"_total": "none"}).json()
    assert "total" not in without_total


def test_snapshot_keeps_pages_stable_while_resources_arrive(
    server: FhirTestServer, client: httpx.Client, observations: list[Resource]
) -> None:
    params: dict[str, Any] = {"_sort": "_lastUpdated", "_count": 200}
    first = client.get(f"{server.base_url}/Observation", params=params).json()
    middle = observations[600]["meta"]["lastUpdated"]
    arrivals = [
        {**r, "id": f"late-{i}", "meta": {**r["meta"], "lastUpdated": middle}}
        for i, r in enumerate(generate_observations(30, seed=99))
    ]
    updated = {**observations[0], "meta": {"versionId": "2", "lastUpdated": "2030-01-01T00:00:00.000+00:00"}}
    server.add([*arrivals, updated])

    got = [e["resource"] for e in first["entry"]]
    url = next_url(first)
    while url:
        bundle = client.get(url).json()
        got += [e["resource"] for e in bundle["entry"]]
        url = next_url(bundle)
    assert ids(got) == in_server_order(observations), "pages of a running search must not shift"

    fresh = fetch_all(client, server.base_url, params)
    assert len(fresh) == len(observations) + len(arrivals)
    assert fresh[-1] == updated  # the update moved it to the end and replaced the old version
    assert ids(fresh).count(updated["id"]) == 1


def test_sort_variants(server: FhirTestServer, client: httpx.Client, observations: list[Resource]) -> None:
    ascending = in_server_order(observations)
    descending = ids(fetch_all(client, server.base_url, {"_sort": "-_lastUpdated", "_count": 1000}))
    assert sorted(descending) == sorted(ascending)
    assert [instant(r) for r in fetch_all(client, server.base_url, {"_sort": "-_lastUpdated"})] == sorted(
        (instant(r) for r in observations), reverse=True
    )
    assert ids(fetch_all(client, server.base_url, {"_sort": "_id", "_count": 1000})) == sorted(ascending)
    assert ids(fetch_all(client, server.base_url, {"_count": 1000})) == ids(observations)  # insertion order


def _tie_with_earlier_same_second(observations: list[Resource]) -> str:
    """A lastUpdated shared by several resources, with another resource earlier in the same second."""
    per_value: Counter[str] = Counter(r["meta"]["lastUpdated"] for r in observations)
    for value, n in per_value.items():
        t = datetime.fromisoformat(value)
        if n > 1 and any(t.replace(microsecond=0) <= instant(r) < t for r in observations):
            return value
    raise AssertionError("generated data has no tie preceded by a same-second neighbour")


@pytest.mark.parametrize(
    ("prefix", "keep"),
    [
        ("ge", lambda t, w: t >= w),
        ("gt", lambda t, w: t > w),
        ("le", lambda t, w: t <= w),
        ("lt", lambda t, w: t < w),
        ("eq", lambda t, w: t == w),
        ("", lambda t, w: t == w),
    ],
)
def test_last_updated_filters_at_ties(
    server: FhirTestServer, client: httpx.Client, observations: list[Resource], prefix: str, keep: Any
) -> None:
    value = _tie_with_earlier_same_second(observations)
    watermark = datetime.fromisoformat(value)
    expected = in_server_order([r for r in observations if keep(instant(r), watermark)])
    params = {"_lastUpdated": prefix + value, "_sort": "_lastUpdated", "_count": 1000}
    assert ids(fetch_all(client, server.base_url, params)) == expected
    # The same instant written in another offset is the same watermark: compared as instants, not strings.
    shifted = watermark.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(timespec="milliseconds")
    assert ids(fetch_all(client, server.base_url, {**params, "_lastUpdated": prefix + shifted})) == expected


def test_last_updated_ge_is_inclusive_at_ties(
    server: FhirTestServer, client: httpx.Client, observations: list[Resource]
) -> None:
    value = _tie_with_earlier_same_second(observations)
    tied = {r["id"] for r in observations if r["meta"]["lastUpdated"] == value}
    assert len(tied) > 1
    ge = set(ids(fetch_all(client, server.base_url, {"_lastUpdated": f"ge{value}", "_count": 1000})))
    gt = set(ids(fetch_all(client, server.base_url, {"_lastUpdated": f"gt{value}", "_count": 1000})))
    assert tied <= ge
    assert not tied & gt
    assert ge - gt == tied


def test_last_updated_precision_ranges(
    server: FhirTestServer, client: httpx.Client, observations: list[Resource]
) -> None:
    value = _tie_with_earlier_same_second(observations)
    second = datetime.fromisoformat(value).replace(microsecond=0)
    text = second.isoformat()  # no fraction: the value covers the whole second
    in_second = {r["id"] for r in observations if second <= instant(r) < second + timedelta(seconds=1)}
    assert len(in_second) > len({r["id"] for r in observations if r["meta"]["lastUpdated"] == value})

    def search(*filters: str) -> set[str]:
        return set(ids(fetch_all(client, server.base_url, {"_lastUpdated": list(filters), "_count": 1000})))

    assert search(f"ge{text}") == {r["id"] for r in observations if instant(r) >= second}
    assert search(f"gt{text}") == {r["id"] for r in observations if instant(r) >= second + timedelta(seconds=1)}
    assert search(f"eq{text}") == in_second
    assert search(f"ge{text}", f"lt{(second + timedelta(seconds=1)).isoformat()}") == in_second
    day = second.astimezone(UTC).date().isoformat()
    assert search(day) == {r["id"] for r in observations if instant(r).astimezone(UTC).date().isoformat() == day}
    assert search(f"ge{text.replace('+00:00', 'Z')}") == search(f"ge{text}")


def test_invalid_requests_get_operation_outcomes(server: FhirTestServer, client: httpx.Client) -> None:
    base = server.base_url
    cases = {
        # An unencoded '+' arrives as a space: the client bug is reported, not silently misread.
        f"{base}/Observation?_lastUpdated=ge2024-03-01T09:00:00+00:00": 400,
        f"{base}/Observation?_lastUpdated=ge-yesterday": 400,
        f"{base}/Observation?_lastUpdated=sa2024-03-01": 400,
        f"{base}/Observation?category=vital-signs": 400,
        f"{base}/Observation?_sort=code": 400,
        f"{base}/Observation?_count=ten": 400,
        f"{base}/Observation?_count=-1": 400,
        f"{base}/Nonsense": 404,
        f"{base}/Observation/no-such-id": 404,
        f"{base}/Observation/a/b": 404,
        f"{server.origin}/other": 404,
        f"{base}?_getpages=no-such-snapshot&_getpagesoffset=50&_count=50": 410,
    }
    for url, status in cases.items():
        response = client.get(url)
        assert response.status_code == status, url
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome", url
        assert outcome["issue"][0]["severity"] == "error"
    assert client.post(f"{base}/Observation", json={}).status_code == 405
    assert "%2B" in client.get(f"{base}/Observation?_lastUpdated=ge2024-03-01T09:00:00+00:00").text


def test_metadata_read_and_other_types(client: httpx.Client) -> None:
    dataset = generate_dataset(200, seed=2)
    with FhirTestServer(dataset.all_resources()) as srv:
        statement = client.get(f"{srv.base_url}/metadata").json()
        assert statement["resourceType"] == "CapabilityStatement"
        assert statement["fhirVersion"] == "4.0.1"
        types = {r["type"] for r in statement["rest"][0]["resource"]}
        assert {"Observation", "Patient", "Encounter"} <= types
        observation = dataset.observations[17]
        assert client.get(f"{srv.base_url}/Observation/{observation['id']}").json() == observation
        assert ids(fetch_all(client, srv.base_url, resource_type="Patient")) == ids(dataset.patients)
        assert len(fetch_all(client, srv.base_url, resource_type="Encounter")) == len(dataset.encounters)
        assert srv.counts["metadata"] == 1


def test_expired_snapshot_is_gone(server: FhirTestServer, client: httpx.Client) -> None:
    first = client.get(f"{server.base_url}/Observation", params={"_count": 100}).json()
    server.expire_snapshots()
    response = client.get(next_url(first) or "")
    assert response.status_code == 410
    assert response.json()["resourceType"] == "OperationOutcome"


def test_bad_records_are_served_as_given(client: httpx.Client) -> None:
    good = generate_observations(20, seed=4)
    at = good[10]["meta"]["lastUpdated"]
    bad: list[Resource] = [
        {"resourceType": "Observation", "id": "no-code", "meta": {"lastUpdated": at}, "status": "final"},
        {
            "resourceType": "Observation",
            "id": "value-foo",
            "meta": {"lastUpdated": at},
            "status": "final",
            "code": {"text": "mystery"},
            "valueFoo": {"bar": [1, None, {"baz": "qux"}]},
        },
        {"resourceType": "Observation", "id": "no-meta", "status": "final"},
        {"resourceType": "Observation", "id": "bad-last-updated", "meta": {"lastUpdated": "yesterday"}},
        {"resourceType": "Observation", "meta": {"lastUpdated": at}, "status": "final"},  # no id
        {"id": "no-resource-type", "meta": {"lastUpdated": at}},
        {"resourceType": "Observation", "id": "huge-int", "valueInteger": 2**70},
        {"resourceType": "Observation", "id": "naive-last-updated", "meta": {"lastUpdated": "2024-03-01T09:00:00"}},
    ]
    with FhirTestServer(good) as srv:
        srv.add(bad)
        got = fetch_all(client, srv.base_url, {"_count": 7})
        assert len(got) == len(good) + len(bad)
        assert got[len(good) :] == [{**r, "valueInteger": 2**70} if r.get("id") == "huge-int" else r for r in bad]
        # Sorted by lastUpdated, the undatable ones sit with the resource added just before them.
        got_sorted = ids(fetch_all(client, srv.base_url, {"_sort": "_lastUpdated", "_count": 1000}))
        assert got_sorted.index("bad-last-updated") > got_sorted.index(good[10]["id"])
        bundle = client.get(f"{srv.base_url}/Observation", params={"_count": 1000}).json()
        no_id = [e for e in bundle["entry"] if "id" not in e["resource"]]
        assert len(no_id) == 1 and "fullUrl" not in no_id[0]
        assert srv.errors == []


# --- faults --------------------------------------------------------------------------------------------------


def test_fail_first_requests_with_retry_after(client: httpx.Client, observations: list[Resource]) -> None:
    with FhirTestServer(observations, faults=Faults(fail_first=2, status=429, retry_after="3")) as srv:
        assert client.get(f"{srv.base_url}/metadata").status_code == 200  # metadata is never faulted
        for _ in range(2):
            response = client.get(f"{srv.base_url}/Observation")
            assert response.status_code == 429
            assert response.headers["retry-after"] == "3"
            assert response.json()["issue"][0]["code"] == "throttled"
        assert client.get(f"{srv.base_url}/Observation").status_code == 200
        assert srv.counts["fault:status"] == 2
        assert [r.status for r in srv.requests] == [200, 429, 429, 200]


def test_fault_on_a_given_request_mid_paging_then_retry(client: httpx.Client, observations: list[Resource]) -> None:
    faults = Faults(fail_requests=frozenset({3}), status=503, retry_after=None)
    with FhirTestServer(observations, faults=faults) as srv:
        first = client.get(f"{srv.base_url}/Observation", params={"_count": 500, "_sort": "_lastUpdated"}).json()
        second = client.get(next_url(first) or "").json()
        failed = client.get(next_url(second) or "")
        assert failed.status_code == 503
        assert "retry-after" not in failed.headers
        third = client.get(next_url(second) or "").json()  # the retry of the same page succeeds
        got = [e["resource"] for bundle in (first, second, third) for e in bundle["entry"]]
        assert ids(got) == in_server_order(observations)


def test_fail_rate_is_seeded(client: httpx.Client, observations: list[Resource]) -> None:
    def statuses(seed: int) -> list[int]:
        with FhirTestServer(observations, faults=Faults(fail_rate=0.3, seed=seed, status=502)) as srv:
            return [client.get(f"{srv.base_url}/Observation", params={"_count": 1}).status_code for _ in range(60)]

    first = statuses(1)
    assert first == statuses(1)
    assert set(first) == {200, 502}
    assert 5 <= first.count(502) <= 35
    assert statuses(2) != first


def test_malformed_page(client: httpx.Client, observations: list[Resource]) -> None:
    with FhirTestServer(observations, faults=Faults(malformed_pages=frozenset({2}))) as srv:
        first = client.get(f"{srv.base_url}/Observation", params={"_count": 100}).json()
        broken = client.get(next_url(first) or "")
        assert broken.status_code == 200
        assert int(broken.headers["content-length"]) == len(broken.content)
        with pytest.raises(json.JSONDecodeError):
            broken.json()
        assert len(client.get(next_url(first) or "").json()["entry"]) == 100  # once only, by default
        assert srv.counts["fault:malformed"] == 1

    with FhirTestServer(observations, faults=Faults(malformed_pages=frozenset({1}), page_fault_times=None)) as srv:
        for _ in range(3):
            with pytest.raises(json.JSONDecodeError):
                client.get(f"{srv.base_url}/Observation").json()


def test_truncated_page(client: httpx.Client, observations: list[Resource]) -> None:
    with FhirTestServer(observations, faults=Faults(truncated_pages=frozenset({1}))) as srv:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{srv.base_url}/Observation", params={"_count": 100})
        assert len(client.get(f"{srv.base_url}/Observation", params={"_count": 100}).json()["entry"]) == 100
        assert srv.counts["fault:truncated"] == 1


def test_page_delays(client: httpx.Client, observations: list[Resource]) -> None:
    with FhirTestServer(observations, page_delay=0.2) as srv:
        began = time.perf_counter()
        client.get(f"{srv.base_url}/Observation")
        assert time.perf_counter() - began >= 0.2
    with FhirTestServer(observations, faults=Faults(slow_pages={2: 1.0})) as srv:
        first = client.get(f"{srv.base_url}/Observation").json()
        with pytest.raises(httpx.ReadTimeout):
            client.get(next_url(first) or "", timeout=0.3)


def test_faults_can_change_at_runtime(server: FhirTestServer, client: httpx.Client) -> None:
    assert client.get(f"{server.base_url}/Observation").status_code == 200
    server.faults = Faults(fail_first=1, status=500)
    assert client.get(f"{server.base_url}/Observation").status_code == 500
    assert client.get(f"{server.base_url}/Observation").status_code == 200
    server.faults = Faults(total="omit")
    assert "total" not in client.get(f"{server.base_url}/Observation").json()
    server.faults = Faults(total="wrong")
    assert client.get(f"{server.base_url}/Observation").json()["total"] != server.resource_count()


# --- sources and subprocess mode -----------------------------------------------------------------------------


def test_synthea_source_finds_every_observation(synthea_folder: Path, client: httpx.Client) -> None:
    in_files: dict[str, Resource] = {}
    for path in sorted(synthea_folder.glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            if entry["resource"]["resourceType"] == "Observation":
                in_files[entry["resource"]["id"]] = entry["resource"]
    assert in_files, f"no Observations found under {synthea_folder}"

    resources = synthea_observations(synthea_folder.parents[1])  # the data root works as well as the folder
    assert len(resources) == len(in_files)
    assert {r["id"] for r in resources} == set(in_files)
    instants = [instant(r) for r in resources]
    assert instants == sorted(instants)
    assert max(Counter(instants).values()) > 1, "one encounter's Observations are written together"
    for r in resources:
        original = in_files[r["id"]]
        assert r["meta"]["versionId"] == "1"
        assert r["meta"]["tag"] == original["meta"]["tag"]
        assert r["subject"]["reference"].startswith("Patient/")
        assert r["encounter"]["reference"].startswith("Encounter/")
        assert r["code"] == original["code"]
        assert {k: v for k, v in r.items() if k not in ("meta", "subject", "encounter")} == {
            k: v for k, v in original.items() if k not in ("meta", "subject", "encounter")
        }

    with FhirTestServer(resources) as srv:
        got = fetch_all(client, srv.base_url, {"_sort": "_lastUpdated", "_count": 200})
        assert len(got) == len(in_files)
        assert set(ids(got)) == set(in_files)
        assert srv.errors == []


def _run_subprocess(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.servers.fhir", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"URL (http://127\.0\.0\.1:\d+/fhir)\n", line)
    assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    return match.group(1)


def test_subprocess_mode_serves_generated_data_until_sigterm(client: httpx.Client) -> None:
    with _run_subprocess("--source", "generated", "--count", "300", "--seed", "1", "--port", "0") as proc:
        try:
            base_url = _read_url(proc)
            got = fetch_all(client, base_url, {"_sort": "_lastUpdated", "_count": 64})
            assert ids(got) == in_server_order(generate_observations(300, seed=1))
            assert client.get(f"{base_url}/Patient").json()["entry"]
        finally:
            proc.terminate()
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stdout == "", "the URL line must be the only output"


def test_subprocess_fault_flags(client: httpx.Client) -> None:
    flags = ["--count", "120", "--fail-first", "1", "--fail-status", "503", "--retry-after", "2"]
    flags += ["--malformed-page", "2", "--total", "omit"]
    with _run_subprocess(*flags) as proc:
        try:
            base_url = _read_url(proc)
            failed = client.get(f"{base_url}/Observation")
            assert failed.status_code == 503 and failed.headers["retry-after"] == "2"
            first = client.get(f"{base_url}/Observation").json()
            assert "total" not in first
            with pytest.raises(json.JSONDecodeError):
                client.get(next_url(first) or "").json()
        finally:
            proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
