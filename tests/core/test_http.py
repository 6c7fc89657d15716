"""core.http against real local servers: retry budget, shared limits, faults, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from inlet.connectors.fhir.search import FhirObservationSearchConnector, FhirSearchSettings
from inlet.connectors.fhir.synth import generate_observations
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.errors import UpstreamError
from inlet.core.http import HttpClient, HttpResponse, HttpSettings, UnexpectedContent, UpstreamRefused
from inlet.core.metrics import Stats
from inlet.core.pagination import NextLinkPaginator, paginate
from inlet.core.pipeline import Pipeline
from inlet.core.ratelimit import RateLimitSettings, reset_limiters
from inlet.core.sinks.outbox import OutboxSink
from tools.servers.fhir import Faults as FhirFaults
from tools.servers.fhir import FhirTestServer
from tools.servers.http import Faults, HttpTestServer, RateLimit, Request, Response


async def test_past_the_retry_budget_the_batch_fails_without_committing_its_position(
    tmp_path: Path, checkpoint_store: CheckpointStore, outbox_sinks: Callable[..., OutboxSink]
) -> None:
    resources = generate_observations(100, seed=12)
    faults = FhirFaults(status=503, retry_after=None, fail_requests=frozenset(range(3, 1000)))
    with FhirTestServer(resources, faults=faults) as server:
        settings = FhirSearchSettings(
            page_size=20,
            http=HttpSettings(
                base_url=server.base_url, max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05
            ),
        )
        connector = FhirObservationSearchConnector(IntegrationContext("acme", "obs", zone="UTC"), settings)
        store = checkpoint_store
        sink = outbox_sinks(tmp_path / "outbox.sqlite")
        stats = Stats("acme", "obs")
        pipeline = Pipeline(connector, Enveloper("acme", "obs"), sink, store, stats)
        async with connector:
            with pytest.raises(UpstreamError, match=r"answered 503.*gave up after 3 attempts"):
                await pipeline.run(None, asyncio.Event())
        position = await store.load("acme", "obs")
    assert stats.batches == 2 and stats.totals.records_in == 40  # pages 1 and 2 only
    assert position is not None
    assert position["last_updated"] == stats.last_position["last_updated"]  # type: ignore[index]
    assert connector.http.retries == 2
    assert server.counts["fault:status"] == 3


def _client(base_url: str, integration: str, *, rps: float | None = None, **http: object) -> HttpClient:
    settings = HttpSettings(
        base_url=base_url,
        auth={"kind": "api_key", "key": {"env": "ACME_API_KEY"}},
        rate_limit=RateLimitSettings(requests_per_second=rps, burst=1),
        **http,
    )
    return HttpClient(settings, IntegrationContext("acme", integration))


async def _read_all(http: HttpClient, path: str = "/next") -> list[int]:
    ids: list[int] = []
    async for page in paginate(http, NextLinkPaginator(path="links.next", records_path="items"), path):
        ids.extend(r["id"] for r in page.records)
    return ids


async def test_five_integrations_sharing_an_upstream_never_exceed_its_limit(
    monkeypatch: pytest.MonkeyPatch, aclosing: Callable[[HttpClient], HttpClient]
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    limit = 20  # the upstream's published limit; integrations configure 90 % of it (see README)
    with HttpTestServer(60, page_size=6, rate_limits=[RateLimit(limit, per=1.0)]) as server:
        clients = [aclosing(_client(server.url, f"feed{i}", rps=limit * 0.9)) for i in range(5)]
        results = await asyncio.gather(*(_read_all(c) for c in clients))
        assert all(ids == list(range(1, 61)) for ids in results)
        assert len({c.limiter for c in clients}) == 1, "one shared limiter per upstream and credentials"
        assert server.counts["status:429"] == 0
        assert len(server.requests) == 50
        assert server.max_in_window(1.0, accepted_only=False) <= limit


async def test_retry_after_pauses_every_integration_on_that_upstream(
    monkeypatch: pytest.MonkeyPatch, aclosing: Callable[[HttpClient], HttpClient]
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    faults = Faults(status=429, retry_after=1, fail_requests=frozenset({8}))
    with HttpTestServer(60, page_size=6, faults=faults) as server:
        clients = [aclosing(_client(server.url, f"feed{i}", rps=25.0, backoff_initial_seconds=0.01)) for i in range(5)]
        results = await asyncio.gather(*(_read_all(c) for c in clients))
    assert all(ids == list(range(1, 61)) for ids in results)
    refused = next(r for r in server.requests if r.status == 429)
    after = [r.at - refused.at for r in server.requests if r.at > refused.at]
    # Requests already on the wire when the 429 was answered may still arrive (within a few ms); after that,
    # no integration sends anything until Retry-After has passed.
    assert after and all(d < 0.05 or d >= 0.95 for d in after), sorted(after)[:10]
    assert sum(1 for d in after if d < 0.05) <= 5


async def test_injected_faults_are_retried_and_every_page_is_read_once_in_order(
    monkeypatch: pytest.MonkeyPatch, aclosing: Callable[[HttpClient], HttpClient]
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    before = {reason: _retries(reason) for reason in ("503", "ReadTimeout", "RemoteProtocolError")}
    faults = Faults(retry_after=None, fail_rate=0.08, slow_rate=0.06, truncate_rate=0.06, slow_seconds=0.6, seed=7)
    with HttpTestServer(300, page_size=10, faults=faults) as server:
        http = aclosing(
            _client(
                server.url,
                "faulty",
                timeout_seconds=0.25,
                max_attempts=10,
                backoff_initial_seconds=0.01,
                backoff_max_seconds=0.05,
            )
        )
        ids = await _read_all(http)
    assert ids == list(range(1, 301))
    faulted = server.counts
    assert faulted["fault:status"] and faulted["fault:slow"] and faulted["fault:truncated"]
    for reason, count in before.items():
        assert _retries(reason) > count, f"retries for {reason} are not visible as a metric"


async def test_wrong_content_type_and_oversized_bodies_are_typed_errors_naming_the_url(
    monkeypatch: pytest.MonkeyPatch, aclosing: Callable[[HttpClient], HttpClient]
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(30, faults=Faults(wrong_type_rate=1.0)) as server:
        http = aclosing(_client(server.url, "html", max_attempts=2, backoff_initial_seconds=0.01))
        with pytest.raises(
            UnexpectedContent,
            match=r"/next.*expected application/fhir\+json or application/json, "
            r"received text/html.*gave up after 2 attempts",
        ):
            await http.get("/next")
    with HttpTestServer(30, faults=Faults(oversize_requests=frozenset({1}), oversize_bytes=300_000)) as server:
        http = aclosing(_client(server.url, "big", max_response_bytes=100_000))
        with pytest.raises(UpstreamRefused, match=r"/next.*exceeds max_response_bytes=100000"):
            await http.get("/next")


async def test_a_refused_status_fails_fast_and_masks_an_api_key_in_the_url(
    monkeypatch: pytest.MonkeyPatch, aclosing: Callable[[HttpClient], HttpClient]
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-secret-98765")
    reset_limiters()
    with HttpTestServer(10) as server:
        settings = HttpSettings(
            base_url=server.url,
            max_attempts=5,
            auth={
                "kind": "api_key",
                "key": {"env": "ACME_API_KEY"},
                "header": None,
                "query_param": "api_key",
            },
        )
        http = aclosing(HttpClient(settings, IntegrationContext("acme", "q")))
        with pytest.raises(UpstreamRefused) as info:
            await http.get("/status/404")
    assert "answered 404" in str(info.value) and "k-secret-98765" not in str(info.value)
    assert len(server.requests) == 1, "404 is not retried"


# --- request(): the answer whatever its status, retries per the policy ------------------------------------

OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "_since is not a date"}],
}


async def test_request_returns_a_202_and_a_4xx_with_its_body_without_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(10) as server:
        server.route("/kick", lambda r: Response(202, b"", {"Content-Location": "/status/7"}))
        server.route("/bad", lambda r: Response(400, OUTCOME, content_type="application/fhir+json"))
        async with _client(server.url, "req", max_attempts=5, backoff_initial_seconds=0.01) as http:
            accepted = await http.request("GET", "/kick", headers={"Prefer": "respond-async"}, params={"_type": "X"})
            refused = await http.request("POST", "/bad")
    assert accepted.status == 202 and accepted.headers["Content-Location"] == "/status/7" and accepted.body == b""
    assert refused.status == 400 and b"_since is not a date" in refused.body
    kick, bad = server.requests
    assert (kick.method, kick.path, kick.query, kick.headers["prefer"]) == (
        "GET",
        "/kick",
        {"_type": ["X"]},
        "respond-async",
    )
    assert kick.headers["x-api-key"] == "k-123456", "auth is applied"
    assert bad.method == "POST" and len(server.requests) == 2, "a 4xx is returned, not retried"


async def test_request_retries_a_5xx_then_returns_the_answer_or_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(10, faults=Faults(status=503, retry_after=None, fail_first=2)) as server:
        async with _client(
            server.url, "flaky", max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.02
        ) as http:
            answer = await http.request("GET", "/next")
            assert answer.status == 200 and b'"items"' in answer.body
            assert http.retries == 2 and server.counts["fault:status"] == 2
            server.faults = Faults(status=502, retry_after=None, fail_first=100)
            with pytest.raises(UpstreamError, match=r"GET .*/next answered 502.*gave up after 3 attempts"):
                await http.request("GET", "/next")
    assert [r.status for r in server.requests] == [503, 503, 200, 502, 502, 502], "max_attempts=3 per request"


async def test_request_returns_a_retryable_status_the_caller_declares_final(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    seen: list[HttpResponse] = []

    def final(answer: HttpResponse) -> bool:
        seen.append(answer)
        return b"job failed" in answer.body

    with HttpTestServer(10) as server:
        server.route("/failed", lambda r: Response(500, {"error": "job failed"}))
        server.route("/busy", lambda r: Response(500, {"error": "busy"}))
        async with _client(server.url, "final", max_attempts=2, backoff_initial_seconds=0.01) as http:
            answer = await http.request("GET", "/failed", final=final)
            with pytest.raises(UpstreamError, match="answered 500"):
                await http.request("GET", "/busy", final=final)
    assert answer.status == 500 and server.counts["/failed"] == 1
    assert server.counts["/busy"] == 2 and len(seen) == 3


async def test_request_honours_retry_after_and_pauses_the_shared_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(10, faults=Faults(status=429, retry_after=1, fail_first=1)) as server:
        async with _client(server.url, "polite", max_attempts=3, backoff_initial_seconds=0.01) as http:
            answer = await http.request("GET", "/next")
    first, second = server.requests
    assert (first.status, second.status, answer.status) == (429, 200, 200)
    assert second.at - first.at >= 0.95, "Retry-After: 1 was not honoured"


# --- stream(): the body unread, the open retried, the slot for the head only, credentials kept home ------


async def test_stream_retries_the_open_and_yields_the_unread_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(10, faults=Faults(status=503, retry_after=None, fail_first=2)) as server:
        async with _client(server.url, "stream", max_attempts=3, backoff_initial_seconds=0.01) as http:
            async with http.stream("/next?size=10", headers={"Accept": "application/json"}) as resp:
                assert resp.status_code == 200 and not resp.is_stream_consumed
                body = b"".join([chunk async for chunk in resp.aiter_bytes()])
            assert resp.is_closed
            assert http.retries == 2
            async with http.stream("/status/404") as missing:
                assert missing.status_code == 404 and b"404" in missing.content  # not retried, body readable
    assert b'"item-00010"' in body
    assert server.counts["fault:status"] == 2 and server.counts["/status/404"] == 1


async def test_stream_holds_the_limiter_slot_for_the_head_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-123456")
    reset_limiters()
    with HttpTestServer(50) as server:
        settings = HttpSettings(base_url=server.url, rate_limit=RateLimitSettings(max_concurrency=1))
        async with (
            HttpClient(settings, IntegrationContext("acme", "slot")) as http,
            http.stream("/next?size=50") as resp,
        ):
            # One concurrent request allowed: this only completes if the open stream gave its slot back.
            body, _ = await asyncio.wait_for(http.get("/next?size=1"), timeout=5)
            rest = await resp.aread()
    assert b'"item-00001"' in body and b'"item-00050"' in rest


async def test_stream_sends_credentials_to_another_origin_only_when_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", "k-secret-4711")
    reset_limiters()

    def echo(request: Request) -> Response:
        return Response(200, {"key": request.headers.get("x-api-key")})

    with HttpTestServer(10) as home, HttpTestServer(10) as other:
        home.route("/echo", echo)
        other.route("/echo", echo)
        async with _client(home.url, "origin") as http:
            with pytest.raises(UpstreamRefused, match=r"credentials are only sent to http://127\.0\.0\.1"):
                async with http.stream(f"{other.url}/echo"):
                    pass  # pragma: no cover
            assert other.requests == [], "nothing was sent to the other origin"
            keys = []
            for url, send_auth in (
                (f"{home.url}/echo", True),
                ("/echo", True),
                (f"{other.url}/echo", False),
                (f"{other.url}/echo", "cross-origin"),
            ):
                async with http.stream(url, send_auth=send_auth) as resp:  # type: ignore[arg-type]
                    keys.append(orjson.loads(await resp.aread())["key"])
    assert keys == ["k-secret-4711", "k-secret-4711", None, "k-secret-4711"]


def _retries(reason: str) -> float:
    value = REGISTRY.get_sample_value("inlet_http_retries_total", {"upstream": "127.0.0.1", "reason": reason})
    return value or 0.0
