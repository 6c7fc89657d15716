"""core.http between polls: an idle client closes its connection pool, and it never does so under a caller.

A pull integration keeps its ``HttpClient`` while it sleeps ``poll_interval_seconds``; without the release, each
held a keep-alive socket (and the upstream a connection) until the next poll, although httpcore would discard
it as expired then. These tests pin that the release happens only when nothing is in flight, that the next
request just works, and that an injected transport (replay, recording) is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from inlet.connectors.fhir.synth import generate_observations
from inlet.core import http as core_http
from inlet.core.connector import IntegrationContext
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.ratelimit import reset_limiters
from tools.servers.fhir import FhirTestServer

RELEASE = 0.05


@pytest.fixture(autouse=True)
def _quick_release(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(core_http, "IDLE_RELEASE_SECONDS", RELEASE)
    reset_limiters()
    yield
    reset_limiters()


def _client(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> HttpClient:
    return HttpClient(HttpSettings(base_url=base_url), IntegrationContext("acme", "obs", zone="UTC"), transport)


async def test_an_idle_client_closes_its_pool_and_the_next_request_opens_one() -> None:
    with FhirTestServer(generate_observations(5, seed=3)) as server:
        async with _client(server.base_url) as http:
            body, _ = await http.get("Observation", {"_count": "5"})
            assert b'"Bundle"' in body
            assert http._client is not None
            await asyncio.sleep(RELEASE * 6)
            assert http._client is None  # released: no socket held until the next poll
            body2, _ = await http.get("Observation", {"_count": "5"})
            assert b'"Bundle"' in body2
    assert server.counts["search"] == 2


async def test_an_open_stream_keeps_the_pool_however_long_the_caller_reads() -> None:
    with FhirTestServer(generate_observations(5, seed=3)) as server:
        async with _client(server.base_url) as http:
            async with http.stream("Observation?_count=5") as resp:
                await asyncio.sleep(RELEASE * 6)  # a slow consumer of a long download
                assert http._client is not None
                body = await resp.aread()
            assert b'"Bundle"' in body
            await asyncio.sleep(RELEASE * 6)
            assert http._client is None


async def test_an_injected_transport_is_never_closed_by_the_release() -> None:
    closed: list[bool] = []

    class Answer(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"ok": True}, headers={"Content-Type": "application/json"})

        async def aclose(self) -> None:
            closed.append(True)

    async with _client("https://fhir.invalid/fhir", Answer()) as http:
        await http.get("Observation")
        await asyncio.sleep(RELEASE * 6)
        assert not closed
        await http.get("Observation")
    assert closed == [True]  # closed once, by the owner's aclose()


async def test_a_closed_client_refuses_requests() -> None:
    http = _client("http://127.0.0.1:9/fhir")
    await http.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await http.get("Observation")
