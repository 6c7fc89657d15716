"""FHIR search through an ``httpx.MockTransport`` (``IntegrationContext.http_transport``): the exact requests the
connector sends, Bundle paging, a 429 handled by ``core.http`` and an OperationOutcome refusal, without a server.

The real-server behaviour (the FHIR test server's paging, faults and data) is in the other tests of this folder.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from inlet.connectors.fhir.outcome import OperationOutcomeError, outcome_issues
from inlet.connectors.fhir.search import FhirSearchConnector, FhirSearchSettings
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink

Resource = dict[str, Any]
Handler = Callable[[httpx.Request], httpx.Response]


def _observation(rid: str, last_updated: str) -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"versionId": "1", "lastUpdated": last_updated},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:00:00+00:00",
        "valueQuantity": {"value": 37.1, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
    }


def _bundle(resources: list[Resource], next_url: str | None = None) -> Resource:
    links = [{"relation": "self", "url": "ignored"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def _fhir(status: int, doc: Resource, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(doc), headers={"Content-Type": "application/fhir+json", **headers}
    )


def _connector(handler: Handler, *, page_size: int = 2, **settings: Any) -> tuple[FhirSearchConnector, str]:
    """A search connector whose HTTP goes to ``handler``; its base URL has a host of its own, so the rate limiter
    (shared per upstream in the process) and a Retry-After pause stay this test's."""
    base = f"https://fhir-{uuid.uuid4().hex[:8]}.test/fhir"
    ctx = IntegrationContext("acme", "obs", zone="UTC", http_transport=httpx.MockTransport(handler))
    http = HttpSettings(base_url=base, backoff_initial_seconds=0.01, backoff_max_seconds=0.05, max_attempts=3)
    return FhirSearchConnector(ctx, FhirSearchSettings(http=http, page_size=page_size, **settings)), base


async def _run(
    connector: FhirSearchConnector, store: CheckpointStore, position: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any] | None]:
    """One pass through the real pipeline into a memory sink: the v2 observation ids emitted and the final position."""
    sink = MemorySink()
    async with connector:
        final = await Pipeline(connector, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs")).run(
            position, asyncio.Event()
        )
    ids = [orjson.loads(e.value)["observation_id"] for e in sink.events if e.topic == "clinical.observation.v2"]
    return ids, final


async def test_search_sends_the_watermark_and_follows_bundle_next_links(checkpoint_store: CheckpointStore) -> None:
    requests: list[httpx.Request] = []
    next_url: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            page = [_observation("o0", "2024-03-01T09:00:00+00:00"), _observation("o1", "2024-03-01T09:05:00+00:00")]
            return _fhir(200, _bundle(page, next_url[0]))
        return _fhir(200, _bundle([_observation("o2", "2024-03-01T09:05:00+00:00")]))

    connector, base = _connector(handler, params={"category": "laboratory"})
    next_url.append(f"{base}/Observation?_getpages=search-1&_getpagesoffset=2&_count=2")
    position = {"last_updated": "2024-03-01T09:00:00Z", "ids_at_watermark": ["o0"]}  # as the connector writes it

    ids, final = await _run(connector, checkpoint_store, position)

    assert len(requests) == 2
    first = requests[0].url
    assert first.path == "/fhir/Observation"
    assert dict(first.params) == {
        "category": "laboratory",
        "_sort": "_lastUpdated",
        "_count": "2",
        "_lastUpdated": "ge2024-03-01T09:00:00Z",
    }
    assert str(requests[1].url) == next_url[0]  # the next link as given, not rebuilt from the first request
    assert ids == ["o1", "o2"]  # o0 was delivered at the watermark before: filtered, not emitted again
    assert final == {"last_updated": "2024-03-01T09:05:00Z", "ids_at_watermark": ["o1", "o2"]}
    assert await checkpoint_store.load("acme", "obs") == final


async def test_a_429_with_retry_after_is_waited_out_by_core_http_and_retried(checkpoint_store: CheckpointStore) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        if len(sent) == 1:
            throttled = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "throttled"}]}
            return _fhir(429, throttled, **{"Retry-After": "1"})
        return _fhir(200, _bundle([_observation("o1", "2024-03-01T09:05:00+00:00")]))

    connector, _ = _connector(handler)
    ids, final = await _run(connector, checkpoint_store, None)

    assert len(sent) == 2 and connector.http.retries == 1
    assert sent[1] - sent[0] >= 0.95, "retried before the Retry-After had passed (backoff alone is 0.01 s)"
    assert ids == ["o1"]
    assert final == {"last_updated": "2024-03-01T09:05:00Z", "ids_at_watermark": ["o1"]}


async def test_a_refusal_with_an_operation_outcome_is_a_typed_error_and_not_retried() -> None:
    requests: list[httpx.Request] = []
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "_lastUpdated is not supported"}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return _fhir(400, outcome)

    connector, _ = _connector(handler)
    async with connector:
        with pytest.raises(OperationOutcomeError, match="_lastUpdated is not supported") as info:
            async for _ in connector.read({"last_updated": "2024-03-01T09:00:00+00:00", "ids_at_watermark": []}):
                pass
    assert info.value.status == 400 and info.value.codes == ("not-supported",)
    assert len(requests) == 1, "a 400 is not retried"


async def test_an_outcome_entry_in_a_search_page_is_not_a_record() -> None:
    warning = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "processing", "diagnostics": "unknown parameter ignored"}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        bundle = _bundle([_observation("o1", "2024-03-01T09:05:00+00:00")])
        bundle["entry"].append({"resource": warning, "search": {"mode": "outcome"}})
        return _fhir(200, bundle)

    connector, _ = _connector(handler)
    async with connector:
        batches = [batch async for batch in connector.read(None)]
    assert [[r["id"] for r in b.records] for b in batches] == [["o1"]]
    assert batches[-1].position == {"last_updated": "2024-03-01T09:05:00Z", "ids_at_watermark": ["o1"]}


async def test_malformed_entries_and_meta_are_dlq_records_not_a_failed_read(checkpoint_store: CheckpointStore) -> None:
    """A Bundle entry's ``search`` or a resource's ``meta`` of the wrong JSON kind is the mapper's to word (a DLQ
    record naming it); the page's reader must not fail on it, or the integration would retry that page forever."""
    bad_meta = {**_observation("bad-meta", "2024-03-01T09:01:00+00:00"), "meta": []}
    odd_search = {"resource": _observation("odd-search", "2024-03-01T09:02:00+00:00"), "search": "match"}
    page = _bundle([_observation("o1", "2024-03-01T09:00:00+00:00"), bad_meta])
    page["entry"] += [odd_search, "not an entry"]

    def handler(request: httpx.Request) -> httpx.Response:
        return _fhir(200, page)

    connector, _ = _connector(handler, page_size=10)
    sink = MemorySink()
    stats = Stats("acme", "obs")
    async with connector:
        final = await Pipeline(connector, Enveloper("acme", "obs"), sink, checkpoint_store, stats).run(
            None, asyncio.Event()
        )
    v2 = [orjson.loads(e.value)["observation_id"] for e in sink.events if e.topic == "clinical.observation.v2"]
    assert v2 == ["o1", "odd-search"]
    dead = [dict(e.headers) for e in sink.events if e.topic.startswith("inlet.dlq")]
    assert [d["dlq_stage"] for d in dead] == [b"map", b"decode"]  # the string entry: not a resource
    assert b"bad-meta.meta: expected a JSON object" in dead[0]["dlq_error_message"]
    assert stats.totals.records_in == 4 and stats.totals.records_mapped == 2
    assert final is not None and final["last_updated"] == "2024-03-01T09:02:00Z"  # the bad meta did not move it


def test_outcome_issues_of_the_wrong_shape_are_read_without_failing() -> None:
    """An OperationOutcome is read while something already went wrong: ``details`` of the wrong kind must not turn
    the server's refusal into an AttributeError."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "invalid", "details": ["not", "an", "object"]},
            {"severity": "error", "code": "processing", "details": {"text": "bad date"}},
            "not an issue",
        ],
    }
    assert outcome_issues(orjson.dumps(body)) == (("error", "invalid", ""), ("error", "processing", "bad date"))


async def test_a_resource_dated_past_the_clock_is_delivered_once_and_does_not_move_the_watermark(
    checkpoint_store: CheckpointStore,
) -> None:
    """One ``meta.lastUpdated`` years ahead (a server clock or a migration bug) must not carry the watermark past
    every change still to come: the resource is delivered, remembered by version in the position, skipped when the
    next pass reads it again, and the next pass asks from the real watermark and gets the new resource."""
    future = _observation("from-the-future", "2999-01-01T00:00:00+00:00")
    pages = [
        [_observation("o1", "2024-03-01T09:00:00+00:00"), future],
        [_observation("o1", "2024-03-01T09:00:00+00:00"), _observation("o2", "2024-03-02T10:00:00+00:00"), future],
    ]
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("_lastUpdated"))
        return _fhir(200, _bundle(pages[min(len(asked), 2) - 1]))

    connector, _ = _connector(handler, page_size=10)
    ids, first = await _run(connector, checkpoint_store, None)
    assert ids == ["o1", "from-the-future"]
    assert first == {
        "last_updated": "2024-03-01T09:00:00Z",
        "ids_at_watermark": ["o1"],
        "ahead_of_clock": {"from-the-future": "2999-01-01T00:00:00Z"},
    }
    assert "dated past the clock" in connector.describe_position(first)

    connector, _ = _connector(handler, page_size=10)
    ids, second = await _run(connector, checkpoint_store, first)
    assert asked == [None, "ge2024-03-01T09:00:00Z"]  # not ge2999-...: the search did not stop
    assert ids == ["o2"]  # o1 at the watermark and the dated-ahead resource: already delivered
    assert second == {
        "last_updated": "2024-03-02T10:00:00Z",
        "ids_at_watermark": ["o2"],
        "ahead_of_clock": {"from-the-future": "2999-01-01T00:00:00Z"},
    }


async def test_a_modest_clock_skew_still_moves_the_watermark(checkpoint_store: CheckpointStore) -> None:
    """Within ``max_clock_skew_seconds`` a server clock ahead of ours is just the watermark (no extra position)."""
    soon = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
    text = soon.isoformat().replace("+00:00", "Z")

    def handler(request: httpx.Request) -> httpx.Response:
        return _fhir(200, _bundle([_observation("o1", soon.isoformat())]))

    connector, _ = _connector(handler)
    ids, final = await _run(connector, checkpoint_store, None)
    assert ids == ["o1"] and final == {"last_updated": text, "ids_at_watermark": ["o1"]}
    connector, _ = _connector(handler, max_clock_skew_seconds=60)
    ids, final = await _run(connector, checkpoint_store, None)
    assert ids == ["o1"] and final == {
        "last_updated": None,
        "ids_at_watermark": [],
        "ahead_of_clock": {"o1": text},
    }
