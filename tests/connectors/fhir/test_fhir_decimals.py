"""FHIR decimals arrive exactly as the source wrote them.

A FHIR ``decimal`` carries its precision: ``5.10`` is not ``5.1`` to a lab, and ``1234567890123456789.0123456789``
is not ``1.2345678901234568e+18``. ``clinical.observation`` v2.0 carries such values as decimal strings, the
search and Bulk connectors parse with ``core.exact_json`` (orjson unless a number needs a Decimal), and v1.0 is
still published from v2.0 by the contract's converter. The data is the project's own generated Observations
(``connectors.fhir.synth``) given the values that used to lose precision, served by the local test servers as
JSON numbers written exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
from inlet.connectors.fhir.mapping import fhir_decimal, map_observation
from inlet.connectors.fhir.resources import map_condition
from inlet.connectors.fhir.search import FhirSearchConnector, FhirSearchSettings
from inlet.connectors.fhir.synth import generate_dataset, generate_observations
from inlet.contracts.base import converters_from
from inlet.contracts.clinical_observation import ObservationV1
from inlet.contracts.clinical_observation_v2 import ObservationV2, to_v1
from inlet.core import exact_json
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import Connector, IntegrationContext
from inlet.core.drift import detect, learn
from inlet.core.envelope import Enveloper, Event, event_id, integration_namespace
from inlet.core.errors import MappingError
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from tools.servers.fhir import FhirTestServer
from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

V1, V2, ZONE = "clinical.observation.v1", "clinical.observation.v2", "Europe/Vienna"
BIG = "1234567890123456789.0123456789"

# The values that lost precision, as a server keeping FHIR decimals writes them (the test servers write a
# Decimal as the JSON number str() gives: Decimal("1.50E+3") is the token 1.50E+3).
SHAPED: dict[str, tuple[Decimal, str, float]] = {  # name: (served value, v2 string, v1 float)
    "trailing-zero": (Decimal("5.10"), "5.10", 5.1),
    "nineteen-digits": (Decimal(BIG), BIG, 1.2345678901234568e18),
    "one-tenth": (Decimal("0.1"), "0.1", 0.1),
    "exponent": (Decimal("1.50E+3"), "1500", 1500.0),
    "small-exponent": (Decimal("2.5E-7"), "0.00000025", 2.5e-7),
}
UNCARRIABLE = Decimal("1E+999999")  # 9 bytes of JSON, a million digits written out


def _shaped(count: int, seed: int) -> list[dict[str, Any]]:
    """Generated Observations; those with a ``valueQuantity`` get the values above, in turn, as their value."""
    observations = generate_observations(count, seed=seed)
    quantities = [o for o in observations if "valueQuantity" in o and o["status"] != "entered-in-error"]
    for o, (value, _, _) in zip(quantities, SHAPED.values(), strict=False):
        o["valueQuantity"]["value"] = value
    return observations


def _by_id(events: list[Event], topic: str) -> dict[str, dict[str, Any]]:
    return {(v := orjson.loads(e.value))["observation_id"]: v for e in events if e.topic == topic}


async def _run(connector: Connector[Any], tmp_path: Path) -> list[Event]:
    sink, store = MemorySink(), CheckpointStore(tmp_path / "cp.sqlite")
    try:
        async with connector:
            env = Enveloper(connector.ctx.customer, connector.ctx.integration)
            await Pipeline(connector, env, sink, store, Stats("acme", "x")).run(None, asyncio.Event())
    finally:
        store.close()
    return sink.events


def _search(server: FhirTestServer, page_size: int = 50) -> FhirSearchConnector:
    settings = FhirSearchSettings(http=HttpSettings(base_url=server.base_url), page_size=page_size)
    return FhirSearchConnector(IntegrationContext("acme", "search", zone=ZONE), settings)


def _bulk(server: FhirBulkServer) -> FhirBulkExportConnector:
    settings = FhirBulkSettings.model_validate(
        {
            "http": {"base_url": server.base_url},
            "types": ["Observation"],
            "poll_min_seconds": 0.01,
            "poll_max_seconds": 1.0,
        }
    )
    return FhirBulkExportConnector(IntegrationContext("acme", "bulk", zone=ZONE), settings)


def _counted(before: exact_json.ParseCounts) -> exact_json.ParseCounts:
    return exact_json.ParseCounts(exact_json.COUNTS.fast - before.fast, exact_json.COUNTS.exact - before.exact)


def _now() -> exact_json.ParseCounts:
    return exact_json.ParseCounts(exact_json.COUNTS.fast, exact_json.COUNTS.exact)


# --- the parser: Decimals only where a float would not give the number back as written -------------------------


@pytest.mark.parametrize(
    ("token", "written"),
    [
        ("5.10", "5.10"),
        ("5.1", "5.1"),
        ("5.0", "5.0"),
        ("180.00", "180.00"),
        ("0.1", "0.1"),
        ("0.30", "0.30"),
        ("1e-3", "0.001"),
        ("1E+2", "100"),
        ("1.50e2", "150"),
        ("-2.5E-7", "-0.00000025"),
        ("-0.00", "-0.00"),
        (BIG, BIG),
        ("0.30000000000000004", "0.30000000000000004"),
        ("0.00001", "0.00001"),
        ("1234567890", "1234567890"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),  # beyond orjson's 64-bit ints
    ],
)
def test_a_number_parses_to_what_it_was_written_as(token: str, written: str) -> None:
    value = exact_json.loads(b'{"resourceType":"Observation","valueQuantity":{"value":' + token.encode() + b"}}")
    assert exact_json.number_text(value["valueQuantity"]["value"]) == written


def test_strings_that_look_like_numbers_do_not_force_the_slow_path() -> None:
    doc = (
        b'{"meta":{"lastUpdated":"2024-03-01T09:00:00.120+01:00"},"valueTime":"10:00:00.10",'
        b'"effectiveDateTime":"2024-03-01T09:00:00.4870Z","id":"1e5","value":5.1,"n":[1,2.5,-0.0]}'
    )
    assert not exact_json.needs_exact(doc)
    assert exact_json.needs_exact(doc.replace(b"5.1", b"5.10"))


def test_what_json_refuses_both_ways_refuse() -> None:
    for doc in (b"[NaN]", b"[1.50, Infinity]", b'{"v": 1.50', b"[1.50, \xff]"):
        with pytest.raises(json.JSONDecodeError):
            exact_json.loads(doc)


CONTEXTS = [
    b'{"a":%s}',
    b'{"a": %s}',
    b'{"a" : %s , "b":"x"}',
    b"[%s]",
    b'["x", %s ]',
    b'{"x":[\n  %s\n]}',
    b'{"a":\t%s\r\n}',
    b'[%s,"y"]',
    b'{"t":"2024-01-01T10:00:00.120Z","a":%s}',
    b'["q",\n%s]',
]


@settings(max_examples=500, deadline=None)
@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
    st.sampled_from(CONTEXTS),
)
def test_any_number_token_comes_back_as_written_wherever_it_stands(token: str, context: bytes) -> None:
    if token == "-0":  # an integer has no negative zero
        return
    [value] = list(_numbers(exact_json.loads(context % token.encode())))
    assert exact_json.number_text(value) == format(Decimal(token), "f")


def _numbers(node: Any) -> Iterator[Any]:
    if isinstance(node, dict | list):
        for child in node.values() if isinstance(node, dict) else node:
            yield from _numbers(child)
    elif not isinstance(node, str):
        yield node


# --- mapping: decimal strings, or the DLQ with the path and the value --------------------------------------------


def _observation_with(value: Any, **extra: Any) -> dict[str, Any]:
    res = next(o for o in generate_observations(20, seed=3) if "valueQuantity" in o)
    res["valueQuantity"]["value"] = value
    return res | extra


@pytest.mark.parametrize(("name", "shaped"), list(SHAPED.items()))
def test_the_mapper_keeps_the_decimal_and_v1_keeps_its_float(name: str, shaped: tuple[Decimal, str, float]) -> None:
    served, written, legacy = shaped
    res = exact_json.loads(exact_json.dumps(_observation_with(served)))  # as the connectors parse it
    obs = map_observation(res, ZONE)
    assert isinstance(obs, ObservationV2) and obs.value is not None and obs.value.type == "quantity"
    assert obs.value.value == written
    v1 = to_v1(obs)
    assert isinstance(v1, ObservationV1) and v1.value is not None and v1.value.type == "quantity"
    assert v1.value.value == legacy


def test_every_decimal_of_an_observation_is_exact() -> None:
    res = _observation_with(Decimal("1.0"))
    del res["valueQuantity"]
    res["valueSampledData"] = {
        "origin": {"value": Decimal("0.00")},
        "period": Decimal("2.50"),
        "factor": Decimal("1.000"),
        "lowerLimit": Decimal("-3.30E+3"),
        "upperLimit": Decimal("3300.0"),
        "dimensions": 1,
        "data": "1 2 E",
    }
    res["component"] = [
        {
            "code": res["code"],
            "valueRange": {"low": {"value": Decimal("4.40"), "unit": "mmol/L"}, "high": {"value": Decimal("6.10")}},
        },
        {"code": res["code"], "valueRatio": {"numerator": {"value": 1}, "denominator": {"value": Decimal("128.0")}}},
    ]
    obs = map_observation(exact_json.loads(exact_json.dumps(res)), ZONE)
    dumped = obs.model_dump()
    assert {k: dumped["value"][k] for k in ("period_ms", "factor", "lower_limit", "upper_limit")} == {
        "period_ms": "2.50",
        "factor": "1.000",
        "lower_limit": "-3300",
        "upper_limit": "3300.0",
    }
    assert dumped["value"]["origin"]["value"] == "0.00"
    low_high = dumped["components"][0]["value"]
    assert (low_high["low"]["value"], low_high["high"]["value"]) == ("4.40", "6.10")
    ratio = dumped["components"][1]["value"]
    assert (ratio["numerator"]["value"], ratio["denominator"]["value"]) == ("1", "128.0")
    v1 = to_v1(obs).model_dump()
    assert v1["value"]["period_ms"] == 2.5 and "lower_limit" not in v1["value"]
    assert v1["components"][0]["value"]["low"]["value"] == 4.4


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (UNCARRIABLE, "1E+999999 cannot be carried exactly"),
        (Decimal("NaN"), "cannot be carried exactly"),
        (float("inf"), "inf is not a finite decimal"),
        (0.30000000000000004, "0.30000000000000004 is a binary float of more than 15 significant digits"),
        ("5,10", "a FHIR decimal is a JSON number, got a string '5,10'"),
        ("1e3", "a FHIR decimal is a JSON number, got a string '1e3'"),
        (True, "a FHIR decimal is a JSON number, got a boolean True"),
    ],
)
def test_a_value_that_cannot_be_carried_exactly_is_a_mapping_error_naming_path_and_value(value: Any, says: str) -> None:
    res = _observation_with(value)
    with pytest.raises(MappingError) as info:
        map_observation(res, ZONE)
    assert str(info.value).startswith(f"Observation/{res['id']}.valueQuantity.value: ")
    assert says in str(info.value)


def test_a_string_holding_a_plain_decimal_passes_as_written() -> None:
    obs = map_observation(_observation_with("5.10"), ZONE)  # not FHIR JSON, but nothing to round
    assert obs.value is not None and obs.value.type == "quantity" and obs.value.value == "5.10"


def test_a_component_value_error_names_the_component() -> None:
    res = _observation_with(Decimal("1.0"))
    res["component"] = [{"code": res["code"], "valueQuantity": {"value": Decimal("Infinity")}}]
    with pytest.raises(MappingError, match=r"\.component\[0\]\.valueQuantity\.value: Infinity cannot be carried"):
        map_observation(res, ZONE)


def test_the_contract_takes_decimals_and_strings_never_floats() -> None:
    obs = map_observation(_observation_with(Decimal("5.10")), ZONE)
    payload = obs.model_dump()
    for bad in (5.1, 5):
        with pytest.raises(ValidationError, match="never a number"):
            ObservationV2.model_validate(payload | {"value": {**payload["value"], "value": bad}})
    assert ObservationV2.model_validate_json(obs.model_dump_json()) == obs  # "5.10" survives its own JSON
    with pytest.raises(ValidationError, match="pattern"):
        ObservationV2.model_validate(payload | {"value": {**payload["value"], "value": "1e3"}})


def test_v1_cannot_carry_a_value_beyond_the_float_range_so_the_converter_refuses() -> None:
    obs = map_observation(_observation_with(Decimal("1E+400")), ZONE)
    assert obs.value is not None and obs.value.type == "quantity" and obs.value.value == "1" + "0" * 400
    with pytest.raises(ValueError, match="cannot carry value 1000"):
        to_v1(obs)


def test_condition_age_is_read_exactly_and_derived_and_range_text_is_exact() -> None:
    patient = generate_dataset(1, seed=5).patients[0]
    base = {"resourceType": "Condition", "id": "c1", "subject": {"reference": f"Patient/{patient['id']}"}}
    aged = map_condition(
        exact_json.loads(
            exact_json.dumps(
                base
                | {
                    "onsetAge": {
                        "value": Decimal("10.50"),
                        "unit": "a",
                        "system": "http://unitsofmeasure.org",
                        "code": "a",
                    }
                }
            )
        ),
        ZONE,
    )
    assert aged.onset_age_years == 10.5
    ranged = map_condition(
        base | {"onsetRange": {"low": {"value": Decimal("5.10"), "unit": "a"}, "high": {"value": 7, "unit": "a"}}}, ZONE
    )
    assert ranged.onset_text == "5.10 a - 7 a"
    with pytest.raises(MappingError, match=r"Condition/c1\.onsetAge\.value: a FHIR decimal is a JSON number"):
        map_condition(base | {"onsetAge": {"value": "ten", "code": "a"}}, ZONE)


def test_a_decimal_is_a_number_to_drift_detection() -> None:
    shape = learn(generate_observations(30, seed=9))
    res = exact_json.loads(exact_json.dumps(_observation_with(Decimal("5.10"))))
    assert isinstance(res["valueQuantity"]["value"], Decimal)
    assert detect(shape, res) == []


# --- the search and Bulk paths end to end: both majors, the DLQ, and the fast path still taken -----------------


def _check_both_majors(events: list[Event], served: list[dict[str, Any]], customer: str, integration: str) -> None:
    v1, v2 = _by_id(events, V1), _by_id(events, V2)
    mapped = [o for o in served if o["status"] != "entered-in-error"]
    assert set(v1) == set(v2) == {o["id"] for o in mapped}, "every Observation is published in both majors"
    shaped = [o for o in mapped if isinstance(o.get("valueQuantity", {}).get("value"), Decimal)]
    assert len(shaped) == len(SHAPED)
    for o, (_, written, legacy) in zip(shaped, SHAPED.values(), strict=True):
        assert v2[o["id"]]["value"]["value"] == written
        assert v1[o["id"]]["value"]["value"] == legacy
    # Ids: the v1 event keeps the id it always had (major 1 ids name the contract alone); v2 has its own.
    ns = integration_namespace(customer, integration)
    first = mapped[0]
    ids = {
        e.topic: e.id for e in events if e.topic in (V1, V2) and orjson.loads(e.value)["observation_id"] == first["id"]
    }
    version = first["meta"]["versionId"]
    assert ids[V1] == event_id(ns, f"Observation/{first['id']}", version, "clinical.observation", 0)
    assert ids[V2] == event_id(ns, f"Observation/{first['id']}", version, "clinical.observation.v2", 0)
    headers = {e.topic: dict(e.headers) for e in events if e.id in ids.values()}
    assert headers[V2]["ce_dataschema"] == b"urn:inlet:contract:clinical.observation:2.0"
    assert headers[V1]["ce_dataschema"] == b"urn:inlet:contract:clinical.observation:1.0"


async def test_search_pages_keep_decimals_and_publish_both_majors(tmp_path: Path) -> None:
    served = _shaped(60, seed=31)
    before = _now()
    with FhirTestServer(served) as server:
        connector = _search(server, page_size=100)
        assert connector.produces() == (ObservationV2, ObservationV1)
        events = await _run(connector, tmp_path)
    _check_both_majors(events, served, "acme", "search")
    assert _counted(before).exact == 1, "the one page holding the shaped values took the exact path"


async def test_bulk_lines_keep_decimals_and_publish_both_majors(tmp_path: Path) -> None:
    served = _shaped(60, seed=32)
    before = _now()
    with FhirBulkServer(served, faults=BulkFaults(pending_polls=0)) as server:
        connector = _bulk(server)
        assert ObservationV1 in connector.produces() and ObservationV2 in connector.produces()
        events = await _run(connector, tmp_path)
    _check_both_majors(events, served, "acme", "bulk")
    assert _counted(before).exact == 4, "exactly the lines whose numbers a float would not give back"


async def test_a_value_that_cannot_be_carried_goes_to_the_dlq_on_both_paths(tmp_path: Path) -> None:
    served = generate_observations(20, seed=33)
    bad = next(o for o in served if "valueQuantity" in o and o["status"] != "entered-in-error")
    bad["valueQuantity"]["value"] = UNCARRIABLE
    with FhirTestServer(served) as search_server:
        searched = await _run(_search(search_server), tmp_path / "search")
    with FhirBulkServer(served, faults=BulkFaults(pending_polls=0)) as bulk_server:
        exported = await _run(_bulk(bulk_server), tmp_path / "bulk")
    for events, integration in ((searched, "search"), (exported, "bulk")):
        dlq = [e for e in events if e.topic == f"inlet.dlq.acme.{integration}"]
        assert len(dlq) == 1, integration
        headers = dict(dlq[0].headers)
        assert headers["dlq_stage"] == b"map"
        assert headers["dlq_error_message"].startswith(
            f"Observation/{bad['id']}.valueQuantity.value: 1E+999999 cannot be carried exactly".encode()
        )
        assert b'"value":1E+999999' in dlq[0].value, "the DLQ keeps the original number as the source wrote it"
        assert bad["id"] not in _by_id(events, V1) | _by_id(events, V2), "never rounded, never half-published"
        assert len(_by_id(events, V2)) == len(_by_id(events, V1)) > 10


async def test_documents_without_suspicious_numbers_stay_on_the_fast_path(tmp_path: Path) -> None:
    served = generate_observations(120, seed=34)
    lines = [orjson.dumps(o) for o in served]
    assert not any(exact_json.needs_exact(line) for line in lines), "generated data writes floats as repr"
    before = _now()
    with FhirBulkServer(served, faults=BulkFaults(pending_polls=0)) as server:
        exported = await _run(_bulk(server), tmp_path / "bulk")
    bulk = _counted(before)
    assert (bulk.fast, bulk.exact) == (len(served), 0)
    before = _now()
    with FhirTestServer(served) as server:
        searched = await _run(_search(server, page_size=50), tmp_path / "search")
    search = _counted(before)
    assert (search.fast, search.exact) == (3, 0)  # 120 resources in pages of 50: parsed by orjson alone
    assert len(_by_id(exported, V2)) == len(_by_id(searched, V2)) > 100


def test_the_v2_to_v1_converter_is_registered() -> None:
    assert converters_from(ObservationV2) == {ObservationV1: to_v1}
    assert fhir_decimal(Decimal("5.10"), "x") == "5.10" and fhir_decimal(7, "x") == "7"


async def test_a_recorded_fixture_replays_the_decimals_as_the_upstream_wrote_them(tmp_path: Path) -> None:
    import httpx

    from inlet.core.recording import RecordingTransport, ReplayTransport

    served = _shaped(10, seed=35)
    with FhirTestServer(served) as server:
        base_url = server.base_url
        async with httpx.AsyncClient(transport=RecordingTransport(tmp_path / "http.jsonl")) as client:
            live = (await client.get(f"{base_url}/Observation", params={"_count": "50"})).content
    assert b'"value":5.10,' in live and f'"value":{BIG},'.encode() in live
    fixture = (tmp_path / "http.jsonl").read_bytes()  # keys sorted: value comes last in a Quantity
    assert b'"value":5.10}' in fixture and f'"value":{BIG}}}'.encode() in fixture, "the fixture keeps the decimals"
    async with httpx.AsyncClient(transport=ReplayTransport(tmp_path / "http.jsonl")) as client:
        replayed = (await client.get(f"{base_url}/Observation", params={"_count": "50"})).content  # offline
    values = {
        e["resource"]["id"]: exact_json.number_text(e["resource"]["valueQuantity"]["value"])
        for e in exact_json.loads(replayed)["entry"]
        if "valueQuantity" in e["resource"]
    }
    shaped = {
        o["id"]: written
        for o, (_, written, _) in zip(
            [o for o in served if isinstance(o.get("valueQuantity", {}).get("value"), Decimal)],
            SHAPED.values(),
            strict=True,
        )
    }
    assert {k: values[k] for k in shaped} == shaped
