"""The fault-injecting JSON test server does what it is configured to do (tools.servers.http).

Checked with plain httpx, so a failure here points at the server, not at core.http.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from tools.servers.http import Faults, HttpTestServer, RateLimit, Request, Response


@pytest.fixture(scope="module")
def c() -> Iterator[httpx.Client]:
    """One client for the module: building one loads the CA bundle, which costs more than most tests here."""
    with httpx.Client() as client:
        yield client


def test_fail_first_then_serves_with_retry_after(c: httpx.Client) -> None:
    with HttpTestServer(faults=Faults(fail_first=2, status=503, retry_after=2)) as server:
        statuses = [c.get(f"{server.url}/next").status_code for _ in range(3)]
        first = server.requests[0]
    assert statuses == [503, 503, 200]
    assert first.response_headers["Retry-After"] == "2"
    assert server.counts["fault:status"] == 2
    assert server.counts["status:200"] == 1


def test_fail_requests_by_number_and_paths_filter(c: httpx.Client) -> None:
    faults = Faults(fail_requests=frozenset({2}), status=500, retry_after=None, paths=frozenset({"/page"}))
    with HttpTestServer(faults=faults) as server:
        statuses = [c.get(f"{server.url}{path}").status_code for path in ("/echo", "/page", "/echo", "/page")]
    assert statuses == [200, 200, 200, 500]  # request numbers count /page requests only
    assert "Retry-After" not in server.requests[3].response_headers


def test_429_retry_after_as_http_date(c: httpx.Client) -> None:
    faults = Faults(status=429, fail_first=1, retry_after=3, retry_after_date=True)
    with HttpTestServer(faults=faults) as server:
        resp = c.get(f"{server.url}/page")
    assert resp.status_code == 429
    when = email.utils.parsedate_to_datetime(resp.headers["Retry-After"])
    assert 2.0 <= (when - datetime.now(UTC)).total_seconds() <= 4.0


def test_fail_rate_is_seeded_and_about_the_rate() -> None:
    def failing(seed: int) -> list[int]:
        faults = Faults(fail_rate=0.2, seed=seed)
        return [n for n, fault, _ in (faults.decide() for _ in range(1000)) if fault == "status"]

    assert failing(7) == failing(7)
    assert failing(7) != failing(8)
    assert 150 <= len(failing(7)) <= 250
    mixed = Faults(fail_rate=0.1, truncate_rate=0.1, slow_rate=0.05, seed=1)
    kinds = [mixed.decide()[1] for _ in range(2000)]
    assert 400 <= sum(k is not None for k in kinds) <= 600
    assert {"status", "truncated", "slow"} <= set(kinds)


def test_truncated_body_raises_remote_protocol_error(c: httpx.Client) -> None:
    with HttpTestServer(faults=Faults(truncate_requests=frozenset({1}))) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(f"{server.url}/next")
        assert c.get(f"{server.url}/next").status_code == 200  # a fresh connection works
    assert server.counts["fault:truncated"] == 1
    assert server.errors == []


def test_slow_response_trips_the_client_timeout_and_stop_is_prompt(c: httpx.Client) -> None:
    server = HttpTestServer(faults=Faults(slow_requests=frozenset({1}), slow_seconds=30))
    with server:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{server.url}/next", timeout=0.2)
        assert time.monotonic() - started < 2
        assert c.get(f"{server.url}/next").status_code == 200
    assert server.counts["fault:slow"] == 1


def test_wrong_content_type_sends_an_html_page_with_200(c: httpx.Client) -> None:
    with HttpTestServer(faults=Faults(wrong_type_requests=frozenset({1}))) as server:
        resp = c.get(f"{server.url}/next")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.content.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body_is_padded_json(c: httpx.Client, chunked: bool) -> None:
    faults = Faults(oversize_requests=frozenset({1}), oversize_bytes=300_000, oversize_chunked=chunked)
    with HttpTestServer(faults=faults) as server:
        resp = c.get(f"{server.url}/next")
    assert len(resp.content) == 300_000
    assert ("Content-Length" in resp.headers) is not chunked
    assert len(orjson.loads(resp.content)["items"]) == 10


def test_rate_limit_answers_429_with_retry_after_per_client_key(c: httpx.Client) -> None:
    limit = RateLimit(3, per=1.0, key_header="X-Api-Key")
    with HttpTestServer(rate_limits=[limit], rate_limit_headers=["ietf"]) as server:
        a = [c.get(f"{server.url}/page", headers={"X-Api-Key": "a"}) for _ in range(5)]
        b = [c.get(f"{server.url}/page", headers={"X-Api-Key": "b"}) for _ in range(3)]
    assert [r.status_code for r in a] == [200, 200, 200, 429, 429]
    assert [r.status_code for r in b] == [200, 200, 200]
    assert a[3].headers["Retry-After"] == "1"
    assert [r.headers["RateLimit-Remaining"] for r in a] == ["2", "1", "0", "0", "0"]
    assert a[0].headers["RateLimit-Limit"] == "3"
    assert server.max_in_window(1.0, key="a") == 3
    assert server.max_in_window(1.0, key="a", accepted_only=False) == 5
    assert server.counts["fault:rate_limited"] == 2


def test_rate_limit_window_slides(c: httpx.Client) -> None:
    with HttpTestServer(rate_limits=[RateLimit(2, per=0.3)]) as server:
        first = [c.get(f"{server.url}/page").status_code for _ in range(3)]
        time.sleep(0.35)
        second = [c.get(f"{server.url}/page").status_code for _ in range(2)]
    assert first == [200, 200, 429]
    assert second == [200, 200]
    assert server.max_in_window(0.3) == 2


def test_rate_limit_header_styles_and_windows(c: httpx.Client) -> None:
    limits = [RateLimit(5, per=1.0), RateLimit(100, per=86400.0, retry_after_date=True)]
    with HttpTestServer(rate_limits=limits, rate_limit_headers=["x", "x-window", "ietf-combined"]) as server:
        headers = c.get(f"{server.url}/page").headers
    assert headers["X-RateLimit-Limit"] == "5"
    assert headers["X-RateLimit-Remaining"] == "4"
    assert int(headers["X-RateLimit-Reset"]) >= int(time.time())
    assert headers["X-RateLimit-Remaining-Second"] == "4"
    assert headers["X-RateLimit-Limit-Day"] == "100"
    assert headers["X-RateLimit-Remaining-Day"] == "99"
    assert headers["RateLimit"] == "limit=5, remaining=4, reset=1"
    assert headers["RateLimit-Policy"] == "5;w=1, 100;w=86400"


def test_request_log_records_arrival_path_query_and_headers(c: httpx.Client) -> None:
    with HttpTestServer() as server:
        before = time.monotonic()
        c.get(f"{server.url}/offset", params={"offset": 10, "limit": 5}, headers={"X-Trace": "t1"})
        c.get(f"{server.url}/nowhere")
        after = time.monotonic()
    first, second = server.requests
    assert (first.number, first.method, first.path, first.status) == (1, "GET", "/offset", 200)
    assert first.query == {"offset": ["10"], "limit": ["5"]}
    assert first.target == "/offset?offset=10&limit=5"
    assert first.headers["x-trace"] == "t1"
    assert before <= first.at <= second.at <= after
    assert second.status == 404
    assert server.paths() == ["/offset?offset=10&limit=5", "/nowhere"]


def test_custom_route_any_method_and_base_path(c: httpx.Client) -> None:
    def token(request: Request) -> Response:
        return Response(body={"access_token": "t", "form": request.body.decode(), "method": request.method})

    with HttpTestServer(routes={"/token": token}, base_path="/api/v1") as server:
        posted = c.post(f"{server.url}/token", content=b"grant_type=client_credentials").json()
        not_allowed = c.post(f"{server.url}/next").status_code
        echoed = c.get(f"{server.url}/echo", params={"q": "1"}).json()
        bad = c.get(f"{server.url}/page", params={"page": "x"}).status_code
    assert server.url.endswith("/api/v1")
    assert posted == {"access_token": "t", "form": "grant_type=client_credentials", "method": "POST"}
    assert not_allowed == 405
    assert echoed["path"] == "/echo"
    assert echoed["query"] == {"q": ["1"]}
    assert bad == 400
    assert server.requests[0].body == b"grant_type=client_credentials"
