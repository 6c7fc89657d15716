"""core.http against real local servers: retry budget, shared limits, faults, bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from connectors.fhir.search import FhirObservationSearchConnector, FhirSearchSettings
from connectors.fhir.synth import generate_observations
from core.checkpoint import CheckpointStore
from core.connector import IntegrationContext
from core.envelope import Enveloper
from core.errors import UpstreamError
from core.http import HttpClient, HttpSettings, UnexpectedContent, UpstreamRefused
from core.metrics import Stats
from core.pagination import NextLinkPaginator, paginate
from core.pipeline import Pipeline
from core.ratelimit import RateLimitSettings, reset_limiters
from core.sinks.outbox import OutboxSink
from tests.servers.fhir import Faults as FhirFaults
from tests.servers.fhir import FhirTestServer
from tests.servers.http import Faults, HttpTestServer, RateLimit


async def test_past_the_retry_budget_the_batch_fails_without_committing_its_position(tmp_path: Path) -> None:
    resources = generate_observations(100, seed=12)
    faults = FhirFaults(status=503, retry_after=None, fail_requests=frozenset(range(3, 1000)))
    with FhirTestServer(resources, faults=faults) as server:
        settings = FhirSearchSettings(page_size=20, http=HttpSettings(
            base_url=server.base_url, max_attempts=3, backoff_initial=0.01, backoff_max=0.05))
        connector = FhirObservationSearchConnector(IntegrationContext("acme", "obs", zone="UTC"), settings)
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink = OutboxSink(tmp_path / "outbox.sqlite")
        stats = Stats("acme", "obs")
        pipeline = Pipeline(connector, Enveloper("acme", "obs"), sink, store, stats)
        async with connector:
            with pytest.raises(UpstreamError, match=r"answered 503.*gave up after 3 attempts"):
                await pipeline.run(None, asyncio.Event())
        position = await store.load("acme", "obs")
        await sink.stop()
        store.close()
    assert stats.batches == 2 and stats.totals.records_in == 40  # pages 1 and 2 only
    assert position is not None
    assert position["last_updated"] == stats.last_position["last_updated"]  # type: ignore[index]
    assert connector.http.retries == 2
    assert server.counts["fault:status"] == 3


def _client(base_url: str, integration: str, *, rps: float | None = None, **http: object) -> HttpClient:
    settings = HttpSettings(base_url=base_url, auth={"kind": "api_key", "key": {"env": "ACME_API_KEY"}},  # type: ignore[arg-type]
                            rate_limit=RateLimitSettings(requests_per_second=rps, burst=1), **http)  # type: ignore[arg-type]
    return HttpClient(settings, IntegrationContext("acme", integration))


async def _read_all(http: HttpClient, path: str = "/next") -> list[int]:
    ids: list[int] = []
    async for page in paginate(http, NextLinkPaginator(path="links.next", records_path="items"), path):
        ids.extend(r["id"] for r in page.records)
    return ids


async def test_five_integrations_sharing_an_upstream_never_exceed_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    limit = 20  # the upstream's published limit; integrations configure 90 % of it (see README)
    with HttpTestServer(60, page_size=6, rate_limits=[RateLimit(limit, per=1.0)]) as server:
        clients = [_client(server.url, f"feed{i}", rps=limit * 0.9) for i in range(5)]
        results = await asyncio.gather(*(_read_all(c) for c in clients))
        for c in clients:
            await c.aclose()
        assert all(ids == list(range(1, 61)) for ids in results)
        assert len({c.limiter for c in clients}) == 1, "one shared limiter per upstream and credentials"
        assert server.counts["status:429"] == 0
        assert len(server.requests) == 50
        assert server.max_in_window(1.0, accepted_only=False) <= limit


async def test_retry_after_pauses_every_integration_on_that_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    faults = Faults(status=429, retry_after=1, fail_requests=frozenset({8}))
    with HttpTestServer(60, page_size=6, faults=faults) as server:
        clients = [_client(server.url, f"feed{i}", rps=25.0, backoff_initial=0.01) for i in range(5)]
        results = await asyncio.gather(*(_read_all(c) for c in clients))
        for c in clients:
            await c.aclose()
    assert all(ids == list(range(1, 61)) for ids in results)
    refused = next(r for r in server.requests if r.status == 429)
    after = [r.at - refused.at for r in server.requests if r.at > refused.at]
    # Requests already on the wire when the 429 was answered may still arrive (within a few ms); after that,
    # no integration sends anything until Retry-After has passed.
    assert after and all(d < 0.05 or d >= 0.95 for d in after), sorted(after)[:10]
    assert sum(1 for d in after if d < 0.05) <= 5


async def test_injected_faults_are_retried_and_every_page_is_read_once_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    before = {reason: _retries(reason) for reason in ("503", "ReadTimeout", "RemoteProtocolError")}
    faults = Faults(retry_after=None, fail_rate=0.08, slow_rate=0.06, truncate_rate=0.06, slow_seconds=0.6, seed=7)
    with HttpTestServer(300, page_size=10, faults=faults) as server:
        http = _client(server.url, "faulty", timeout_seconds=0.25, max_attempts=10, backoff_initial=0.01,
                       backoff_max=0.05)
        ids = await _read_all(http)
        await http.aclose()
    assert ids == list(range(1, 301))
    faulted = server.counts
    assert faulted["fault:status"] and faulted["fault:slow"] and faulted["fault:truncated"]
    for reason, count in before.items():
        assert _retries(reason) > count, f"retries for {reason} are not visible as a metric"


async def test_wrong_content_type_and_oversized_bodies_are_typed_errors_naming_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(30, faults=Faults(wrong_type_rate=1.0)) as server:
        http = _client(server.url, "html", max_attempts=2, backoff_initial=0.01)
        with pytest.raises(UnexpectedContent, match=r"/next.*expected application/fhir\+json or application/json, "
                                                     r"received text/html.*gave up after 2 attempts"):
            await http.get("/next")
        await http.aclose()
    with HttpTestServer(30, faults=Faults(oversize_requests=frozenset({1}), oversize_bytes=300_000)) as server:
        http = _client(server.url, "big", max_response_bytes=100_000)
        with pytest.raises(UpstreamRefused, match=r"/next.*exceeds max_response_bytes=100000"):
            await http.get("/next")
        await http.aclose()


async def test_a_refused_status_fails_fast_and_masks_an_api_key_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-secret-98765")
    reset_limiters()
    with HttpTestServer(10) as server:
        settings = HttpSettings(base_url=server.url, max_attempts=5,
                                auth={"kind": "api_key", "key": {"env": "ACME_API_KEY"},  # type: ignore[arg-type]
                                      "header": None, "query_param": "api_key"})
        http = HttpClient(settings, IntegrationContext("acme", "q"))
        with pytest.raises(UpstreamRefused) as info:
            await http.get("/status/404")
        await http.aclose()
    assert "answered 404" in str(info.value) and "k-secret-98765" not in str(info.value)
    assert len(server.requests) == 1, "404 is not retried"


def _retries(reason: str) -> float:
    value = REGISTRY.get_sample_value("inlet_http_retries_total", {"upstream": "127.0.0.1", "reason": reason})
    return value or 0.0
