"""A generic local JSON upstream with fault injection, for ``core.http`` and ``core.pagination`` tests.

Why a hand-written server rather than mocks: what ``core.http`` must get right happens on the wire. A 429 whose
``Retry-After`` is an HTTP-date, a body cut short after a larger ``Content-Length``, a response slower than the
client's timeout, an HTML maintenance page answered with 200, a server-side rate limit measured over sliding
windows: those need a real socket, deterministic data and faults switched on at an exact request number, in
well under a second per test. ``tools.servers.fhir`` does the same for FHIR search semantics; this one is
protocol-neutral and speaks every common paging style.

Endpoints (``GET``, under ``base_path``; N records ``{"id": i, "name": "item-0000i"}``, ``size`` per page,
default ``page_size``, capped at ``max_page_size``). Next links are ``links=absolute`` (default), ``root``
(``/next?...``), ``relative`` (``next?...``) or ``query`` (``?...``), and carry the other query parameters:

* ``/next?page=&size=&links=``       ``{"items": [...], "links": {"self": url, "next": url}}`` (no next at the end)
* ``/fhir?page=&_count=&links=``     a FHIR searchset Bundle: ``link[relation=next]``, ``entry[].resource``
* ``/odata4?$skiptoken=&$top=``      ``{"@odata.context": ..., "value": [...], "@odata.nextLink": url}``
* ``/odata2?$skiptoken=&$top=``      ``{"d": {"results": [...], "__next": url}}``
* ``/offset?offset=&limit=``         ``{"items": [...], "total": N}`` (``$skip``/``$top`` too; ``total`` per
  :attr:`HttpTestServer.total`: accurate, omit, high = 2N, low = N // 2)
* ``/page?page=&size=``              ``{"results": [...], "page": P}`` (1-based; past the end: empty)
* ``/cursor?cursor=&size=&end=``     ``{"data": [...], "meta": {"next_cursor": "c..."}}``; the last page's cursor
  is ``null`` (``end=null``), absent (``end=missing``) or ``""`` (``end=empty``)
* ``/loop?page=``                    like ``/next``, but page 3 links back to page 2: a paging loop
* ``/forever?cursor=``               like ``/cursor``, one record a page and always another cursor
* ``/echo``                          the request as JSON (method, path, query, headers, body) — for auth tests
* ``/status/<code>``                 answers ``<code>``
* anything added with :meth:`HttpTestServer.route` (a plain callable ``Request -> Response``; any method)

Faults (:class:`Faults`; at construction or any time via ``server.faults = Faults(...)``, which restarts the
counting) are decided per request, numbered from 1 among the requests they apply to (``Faults.paths``): by
request number, or by a seeded fraction (one draw per request, so the failing numbers depend on the seed
alone): an error status (5xx, or 429 with ``Retry-After`` in seconds or as an HTTP-date), a slow response (held
before the status line, for client timeouts), a truncated body (``Content-Length`` announces all of it, half is
sent, the connection closes), a wrong content type (an HTML page with 200), an oversized body (padded JSON,
with or without ``Content-Length``).

Rate limits (:class:`RateLimit`, several windows at once, e.g. 5/s and 100/min): sliding windows of accepted
requests per client key (one shared bucket, or the value of a header such as ``Authorization``); past the limit
the answer is 429 with ``Retry-After`` (when the oldest request leaves the window). Every response can carry
rate-limit headers in the styles real upstreams use (:data:`HEADER_STYLES`: IETF ``RateLimit-*``, the combined
draft ``RateLimit``/``RateLimit-Policy``, GitHub-style ``X-RateLimit-*``, Kong-style per-window
``X-RateLimit-Remaining-Minute``/``-Day``) or custom ones (a callable).

The request log (:attr:`HttpTestServer.requests`) has every request with its monotonic arrival time, path,
query, headers, status, fault and client key; :meth:`HttpTestServer.max_in_window` is the sliding-window
count the politeness tests assert on.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from tools.servers.base import LocalHandler, LocalHTTPServer, LocalServer

__all__ = [
    "HEADER_STYLES",
    "JSON",
    "FaultKind",
    "Faults",
    "Handler",
    "HttpTestServer",
    "RateLimit",
    "Request",
    "RequestRecord",
    "Response",
    "WindowState",
    "http_date",
]

JSON = "application/json"
FHIR_JSON = "application/fhir+json"
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    b"<h1>503 Service Temporarily Unavailable</h1><p>The server is down for maintenance.</p>"
    b"</body></html>"
)

FaultKind = Literal["status", "slow", "truncated", "wrong_type", "oversize", "rate_limited"]
LinkStyle = Literal["absolute", "root", "relative", "query"]
TotalMode = Literal["accurate", "omit", "high", "low"]


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date (RFC 9110) ``seconds_from_now`` ahead, rounded up to the next whole second."""
    return email.utils.formatdate(math.ceil(time.time() + seconds_from_now), usegmt=True)


# --- faults --------------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """What to break and when. Counters live on the object: assign a new one to start counting afresh.

    Listed request numbers win over rates; of the rates, one seeded draw per request picks at most one fault
    (bands in the order status, slow, truncated, wrong_type), so ``fail_rate=0.1, truncate_rate=0.1`` breaks
    about 20 % of the requests.
    """

    status: int = 503
    """Status of the error faults (500, 502, 503, 504, 429...)."""
    retry_after: float | str | None = 1
    """``Retry-After`` of the error status: a number of seconds (sent rounded up), a verbatim string, or None."""
    retry_after_date: bool = False
    """Send a numeric ``retry_after`` as an HTTP-date that many seconds ahead instead."""
    fail_first: int = 0
    fail_requests: frozenset[int] = frozenset()
    fail_rate: float = 0.0
    slow_seconds: float = 2.0
    """How long a slow response is held before its status line."""
    slow_requests: frozenset[int] = frozenset()
    slow_rate: float = 0.0
    delay: float = 0.0
    """Latency added to every response."""
    truncate_requests: frozenset[int] = frozenset()
    truncate_rate: float = 0.0
    wrong_type_requests: frozenset[int] = frozenset()
    wrong_type_rate: float = 0.0
    wrong_type: str = "text/html; charset=utf-8"
    wrong_type_html: bool = True
    """Replace the body with an HTML maintenance page; False keeps the JSON body under the wrong type."""
    oversize_requests: frozenset[int] = frozenset()
    oversize_bytes: int = 2 * 1024 * 1024
    """Size a body is padded to (with JSON whitespace, so it still parses)."""
    oversize_chunked: bool = False
    """Send oversized bodies chunked, without ``Content-Length``: a client only notices while reading."""
    paths: frozenset[str] | None = None
    """Endpoint paths (without base_path, e.g. ``/next``) the faults apply to; None: every path."""
    seed: int = 0
    counted: int = field(default=0, init=False)
    """Requests counted so far."""
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def applies_to(self, path: str) -> bool:
        return self.paths is None or path in self.paths

    def decide(self) -> tuple[int, FaultKind | None, float]:
        """Count one request: ``(its number, the fault to inject or None, seconds to hold the response)``."""
        with self._lock:
            self.counted += 1
            n = self.counted
            draw = self._rng.random()
        fault: FaultKind | None = None
        if n <= self.fail_first or n in self.fail_requests:
            fault = "status"
        elif n in self.slow_requests:
            fault = "slow"
        elif n in self.truncate_requests:
            fault = "truncated"
        elif n in self.wrong_type_requests:
            fault = "wrong_type"
        elif n in self.oversize_requests:
            fault = "oversize"
        else:
            edge = 0.0
            bands: tuple[tuple[FaultKind, float], ...] = (
                ("status", self.fail_rate),
                ("slow", self.slow_rate),
                ("truncated", self.truncate_rate),
                ("wrong_type", self.wrong_type_rate),
            )
            for kind, rate in bands:
                edge += rate
                if draw < edge:
                    fault = kind
                    break
        delay = self.delay + (self.slow_seconds if fault == "slow" else 0.0)
        return n, fault, delay

    def retry_after_value(self) -> str | None:
        value = self.retry_after
        if value is None or isinstance(value, str):
            return value
        return http_date(value) if self.retry_after_date else str(math.ceil(value))


# --- rate limits ---------------------------------------------------------------------------------------------

_WINDOW_LABELS = {1.0: "Second", 60.0: "Minute", 3600.0: "Hour", 86400.0: "Day"}


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` accepted per ``per`` seconds (a sliding window) per client key."""

    requests: int
    per: float = 1.0
    key_header: str | None = None
    """None: one bucket for every client (the upstream's limit); else the value of this request header
    (``Authorization``, ``X-Api-Key``...) keys the bucket."""
    retry_after_date: bool = False
    """``Retry-After`` of the 429 as an HTTP-date instead of delta-seconds."""
    paths: frozenset[str] | None = None
    """Endpoint paths it applies to; None: every path."""

    @property
    def label(self) -> str:
        return _WINDOW_LABELS.get(float(self.per), f"{self.per:g}s")


@dataclass(frozen=True)
class WindowState:
    """One rate-limit window as a client key sees it after the current request, for rate-limit headers."""

    limit: RateLimit
    remaining: int
    reset: float
    """Seconds until the oldest request in the window leaves it (0 when the window is empty)."""


HeaderStyle = Callable[[Sequence[WindowState]], Mapping[str, str]]
"""Rate-limit response headers from the window states (tightest first)."""


def _ietf(states: Sequence[WindowState]) -> Mapping[str, str]:
    s = states[0]
    return {
        "RateLimit-Limit": str(s.limit.requests),
        "RateLimit-Remaining": str(s.remaining),
        "RateLimit-Reset": str(math.ceil(s.reset)),
    }


def _ietf_combined(states: Sequence[WindowState]) -> Mapping[str, str]:
    s = states[0]
    return {
        "RateLimit": f"limit={s.limit.requests}, remaining={s.remaining}, reset={math.ceil(s.reset)}",
        "RateLimit-Policy": ", ".join(f"{w.limit.requests};w={w.limit.per:g}" for w in states),
    }


def _x(states: Sequence[WindowState]) -> Mapping[str, str]:
    s = states[0]
    return {
        "X-RateLimit-Limit": str(s.limit.requests),
        "X-RateLimit-Remaining": str(s.remaining),
        "X-RateLimit-Reset": str(math.ceil(time.time() + s.reset)),
    }


def _x_window(states: Sequence[WindowState]) -> Mapping[str, str]:
    headers: dict[str, str] = {}
    for s in states:
        headers[f"X-RateLimit-Limit-{s.limit.label}"] = str(s.limit.requests)
        headers[f"X-RateLimit-Remaining-{s.limit.label}"] = str(s.remaining)
    return headers


HEADER_STYLES: Mapping[str, HeaderStyle] = {
    "ietf": _ietf,  # RateLimit-Limit / -Remaining / -Reset (delta seconds), IETF draft <= 06
    "ietf-combined": _ietf_combined,  # RateLimit: limit=, remaining=, reset= and RateLimit-Policy, draft 07
    "x": _x,  # X-RateLimit-Limit / -Remaining / -Reset (epoch seconds), GitHub style
    "x-window": _x_window,  # X-RateLimit-Remaining-Minute / -Day..., Kong style, one pair per window
}
"""Rate-limit header styles by name; ``rate_limit_headers`` also takes callables of the same shape."""


class _Limiter:
    """Sliding-window counters of accepted requests, per (window, client key)."""

    def __init__(self, limits: Sequence[RateLimit]) -> None:
        self.limits = tuple(limits)
        self._accepted: dict[tuple[int, str | None], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, path: str, headers: Mapping[str, str]) -> tuple[float, bool, float, list[WindowState], str | None]:
        """``(arrival time, accepted, seconds until it would be, window states, client key)``; counts the request
        if accepted. The arrival time is taken under the lock, so arrival order is the order of the decisions and
        the log's sliding-window counts see exactly what the limiter saw."""
        applying = [(i, lim) for i, lim in enumerate(self.limits) if lim.paths is None or path in lim.paths]
        keys = [headers.get(lim.key_header.lower()) if lim.key_header else None for _, lim in applying]
        with self._lock:
            now = time.monotonic()
            windows = []
            for (i, lim), key in zip(applying, keys, strict=True):
                window = self._accepted.setdefault((i, key), deque())
                while window and window[0] <= now - lim.per:
                    window.popleft()
                windows.append((lim, window))
            wait = max((w[0] + lim.per - now for lim, w in windows if len(w) >= lim.requests), default=0.0)
            accepted = wait <= 0
            if accepted:
                for _, window in windows:
                    window.append(now)
            states = [
                WindowState(lim, max(0, lim.requests - len(w)), (w[0] + lim.per - now) if w else 0.0)
                for lim, w in windows
            ]
        states.sort(key=lambda s: (s.remaining, -s.reset))
        key = next((k for k in keys if k is not None), None)
        return now, accepted, max(wait, 0.0), states, key


# --- requests, responses, log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A request as a route handler sees it."""

    method: str
    path: str
    """Path without ``base_path``, e.g. ``/next``."""
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    """Names lower-cased."""
    body: bytes
    server: HttpTestServer

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter."""
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    """What a route answers: ``body`` is bytes, or anything orjson serialises (sent as JSON)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON

    def encoded(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


Handler = Callable[[Request], Response]
"""A route: a plain function from request to response (httpx ``MockTransport`` style)."""


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered."""

    number: int
    """Order of logging, from 1 (counted since the server started)."""
    at: float
    """``time.monotonic()`` at arrival, as the rate limiter saw it (the clock the politeness assertions use)."""
    method: str
    path: str
    query: Mapping[str, list[str]]
    target: str
    """Path and query exactly as requested."""
    headers: Mapping[str, str]
    status: int
    fault: FaultKind | None
    key: str | None
    """The rate-limit client key (the key header's value), if any."""
    response_headers: Mapping[str, str]
    body: bytes


# --- the server ----------------------------------------------------------------------------------------------


class HttpTestServer(LocalServer):
    """The JSON test upstream. ``start()`` binds ``host:port`` (port 0: the OS picks) and serves in a thread.

    Use as a context manager or call ``stop()``. ``url`` is ``http://127.0.0.1:PORT`` plus ``base_path``.
    """

    def __init__(
        self,
        records: int | Sequence[Mapping[str, Any]] = 25,
        *,
        page_size: int = 10,
        max_page_size: int = 1000,
        faults: Faults | None = None,
        rate_limits: Sequence[RateLimit] = (),
        rate_limit_headers: Sequence[str | HeaderStyle] = (),
        total: TotalMode = "accurate",
        routes: Mapping[str, Handler] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "",
    ) -> None:
        super().__init__(_RequestHandler, host=host, port=port, thread_name="http-test-server", poll_interval=0.01)
        if isinstance(records, int):
            self.records: list[Mapping[str, Any]] = [{"id": i, "name": f"item-{i:05d}"} for i in range(1, records + 1)]
        else:
            self.records = list(records)
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.faults = faults if faults is not None else Faults()
        self.total: TotalMode = total
        self._limiter = _Limiter(rate_limits)
        self._header_styles = [HEADER_STYLES[s] if isinstance(s, str) else s for s in rate_limit_headers]
        self._routes: dict[str, Handler] = {
            "/next": self._next,
            "/fhir": self._fhir,
            "/odata4": self._odata4,
            "/odata2": self._odata2,
            "/offset": self._offset,
            "/page": self._page,
            "/cursor": self._cursor,
            "/loop": self._loop,
            "/forever": self._forever,
            "/echo": _echo,
        }
        self._get_only = frozenset(self._routes) - {"/echo"} - set(routes or {})
        self._routes.update(routes or {})
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._log: list[RequestRecord] = []
        self._arrivals = 0
        self._connections: set[socket.socket] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL."""
        self._serve()
        self._port = super().port
        return self.url

    def _closed(self) -> None:
        # Idle keep-alive connections would keep their handler threads for `timeout` seconds: end them now.
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @property
    def port(self) -> int:
        """The bound port (still known after ``stop()``; a restart binds it again)."""
        if not self._port:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL: origin plus ``base_path``."""
        return self.origin + self.base_path

    def route(self, path: str, handler: Handler) -> None:
        """Serve ``path`` (without base_path) with ``handler``, for any method; replaces a built-in route."""
        with self._lock:
            self._routes[path] = handler
            self._get_only -= {path}

    # -- observation --------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, in arrival order (a copy)."""
        with self._lock:
            return sorted(self._log, key=lambda r: (r.at, r.number))

    def paths(self) -> list[str]:
        """Path and query of every request so far, in arrival order."""
        return [r.target for r in self.requests]

    @property
    def counts(self) -> Counter[str]:
        """Requests by ``path``, ``status:<code>`` and ``fault:<kind>``."""
        counter: Counter[str] = Counter()
        for r in self.requests:
            counter[r.path] += 1
            counter[f"status:{r.status}"] += 1
            if r.fault:
                counter[f"fault:{r.fault}"] += 1
        return counter

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def max_in_window(
        self, window: float = 1.0, *, key: str | None = None, path: str | None = None, accepted_only: bool = True
    ) -> int:
        """The most requests that arrived within any ``window`` seconds (sliding, half-open), optionally only
        those of one client key or path, and by default only those not refused with 429 by the rate limit."""
        times = sorted(
            r.at
            for r in self.requests
            if (key is None or r.key == key)
            and (path is None or r.path == path)
            and not (accepted_only and r.fault == "rate_limited")
        )
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- one request ----------------------------------------------------------------------------------------

    def _respond(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Response, FaultKind | None, float]:
        """The response, the fault injected (if any) and how long to hold it; logs the request."""
        split = urlsplit(target)
        path = split.path
        if self.base_path and (path == self.base_path or path.startswith(self.base_path + "/")):
            path = path[len(self.base_path) :] or "/"
        query = parse_qs(split.query, keep_blank_values=True)
        request = Request(method, path, query, headers, body, self)
        fault: FaultKind | None = None
        delay = 0.0
        arrived, accepted, wait, states, key = self._limiter.admit(path, headers)
        if not accepted:
            fault = "rate_limited"
            as_date = any(s.limit.retry_after_date for s in states)
            retry = http_date(wait) if as_date else str(max(1, math.ceil(wait)))  # never early: rounded up
            response = Response(
                429, {"error": "rate limited", "retry_after_seconds": round(wait, 3)}, {"Retry-After": retry}
            )
        else:
            faults = self.faults
            if faults.applies_to(path):
                _, fault, delay = faults.decide()
            if fault == "status":
                response = Response(faults.status, {"error": f"injected fault: HTTP {faults.status}"})
                if (retry_after := faults.retry_after_value()) is not None:
                    response.headers["Retry-After"] = retry_after
            else:
                response = self._dispatch(request)
                if fault == "wrong_type":
                    response.content_type = faults.wrong_type
                    if faults.wrong_type_html:
                        response.body = MAINTENANCE_PAGE
                elif fault == "oversize":
                    encoded = response.encoded()
                    response.body = encoded + b" " * max(0, faults.oversize_bytes - len(encoded))
        if states:
            for style in self._header_styles:
                response.headers.update(style(states))
        with self._lock:
            self._arrivals += 1
            self._log.append(
                RequestRecord(
                    self._arrivals,
                    arrived,
                    method,
                    path,
                    query,
                    target,
                    dict(headers),
                    response.status,
                    fault,
                    key,
                    dict(response.headers),
                    body,
                )
            )
        return response, fault, delay

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            handler = self._routes.get(request.path)
        if handler is None and request.path.startswith("/status/") and request.path[8:].isdigit():
            return Response(int(request.path[8:]), {"status": int(request.path[8:])})
        if handler is None:
            return Response(404, {"error": f"unknown path {request.path}"})
        if request.method not in ("GET", "HEAD") and request.path in self._get_only:
            return Response(405, {"error": f"{request.method} is not supported on {request.path}"})
        try:
            return handler(request)
        except _BadRequest as exc:
            return Response(400, {"error": str(exc)})

    # -- built-in endpoints ---------------------------------------------------------------------------------

    def _size(self, request: Request, *names: str) -> int:
        for name in names:
            if (raw := request.arg(name)) is not None:
                return min(_int(name, raw, minimum=1), self.max_page_size)
        return self.page_size

    def _link(self, request: Request, **changes: Any) -> str:
        """The URL of the same endpoint with ``changes`` to its query, in the style ``links=`` asks for."""
        query = {name: values[-1] for name, values in request.query.items()}
        query.update({name: str(value) for name, value in changes.items()})
        qs = urlencode(query)
        style = request.arg("links", "absolute")
        if style == "root":
            return f"{self.base_path}{request.path}?{qs}"
        if style == "relative":
            return f"{request.path.rsplit('/', 1)[-1]}?{qs}"
        if style == "query":
            return f"?{qs}"
        if style != "absolute":
            raise _BadRequest(f"links must be absolute, root, relative or query, got {style!r}")
        return f"{self.url}{request.path}?{qs}"

    def _self_url(self, request: Request) -> str:
        return f"{self.url}{request.path}?{urlencode({n: v[-1] for n, v in request.query.items()})}"

    def _slice(self, offset: int, size: int) -> list[Mapping[str, Any]]:
        return self.records[offset : offset + size]

    def _next(self, request: Request) -> Response:
        page = _int("page", request.arg("page", "1"), minimum=1)
        size = self._size(request, "size")
        body: dict[str, Any] = {
            "items": self._slice((page - 1) * size, size),
            "links": {"self": self._self_url(request)},
        }
        if page * size < len(self.records):
            body["links"]["next"] = self._link(request, page=page + 1)
        return Response(body=body)

    def _loop(self, request: Request) -> Response:
        page = _int("page", request.arg("page", "1"), minimum=1)
        size = self._size(request, "size")
        body: dict[str, Any] = {
            "items": self._slice((page - 1) * size, size),
            "links": {"self": self._self_url(request)},
        }
        body["links"]["next"] = self._link(request, page=2 if page >= 3 else page + 1)
        return Response(body=body)

    def _fhir(self, request: Request) -> Response:
        page = _int("page", request.arg("page", "1"), minimum=1)
        size = self._size(request, "_count")
        links = [{"relation": "self", "url": self._self_url(request)}]
        if page * size < len(self.records):
            links.append({"relation": "next", "url": self._link(request, page=page + 1)})
        body: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(self.records),
            "link": links,
        }
        entries = [
            {
                "fullUrl": f"{self.url}/fhir/Basic/{r.get('id')}",
                "resource": {"resourceType": "Basic", **r},
                "search": {"mode": "match"},
            }
            for r in self._slice((page - 1) * size, size)
        ]
        if entries:  # FHIR omits an empty array
            body["entry"] = entries
        return Response(body=body, content_type=FHIR_JSON)

    def _odata(self, request: Request) -> tuple[list[Mapping[str, Any]], str | None]:
        skip = _int("$skiptoken", request.arg("$skiptoken", "0"), minimum=0)
        size = self._size(request, "$top")
        items = self._slice(skip, size)
        more = skip + size < len(self.records)
        return items, self._link(request, **{"$skiptoken": skip + size}) if more else None

    def _odata4(self, request: Request) -> Response:
        items, next_link = self._odata(request)
        body: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#Items", "value": items}
        if next_link:
            body["@odata.nextLink"] = next_link
        return Response(body=body, content_type="application/json; odata.metadata=minimal")

    def _odata2(self, request: Request) -> Response:
        items, next_link = self._odata(request)
        d: dict[str, Any] = {"results": items}
        if next_link:
            d["__next"] = next_link
        return Response(body={"d": d})

    def _offset(self, request: Request) -> Response:
        offset = _int("offset", request.arg("offset", request.arg("$skip", "0")), minimum=0)
        size = self._size(request, "limit", "$top")
        body: dict[str, Any] = {"items": self._slice(offset, size)}
        totals = {"accurate": len(self.records), "high": 2 * len(self.records), "low": len(self.records) // 2}
        if self.total in totals:
            body["total"] = totals[self.total]
        return Response(body=body)

    def _page(self, request: Request) -> Response:
        page = _int("page", request.arg("page", "1"), minimum=1)
        size = self._size(request, "size")
        return Response(body={"results": self._slice((page - 1) * size, size), "page": page})

    def _cursor(self, request: Request) -> Response:
        offset = _decode_cursor(request.arg("cursor"))
        size = self._size(request, "size")
        body: dict[str, Any] = {"data": self._slice(offset, size), "meta": {}}
        if offset + size < len(self.records):
            body["meta"]["next_cursor"] = _encode_cursor(offset + size)
        else:
            end = request.arg("end", "null")
            if end not in ("null", "missing", "empty"):
                raise _BadRequest(f"end must be null, missing or empty, got {end!r}")
            if end != "missing":
                body["meta"]["next_cursor"] = None if end == "null" else ""
        return Response(body=body)

    def _forever(self, request: Request) -> Response:
        n = _decode_cursor(request.arg("cursor"))
        return Response(
            body={"data": [{"id": n + 1, "name": f"forever-{n + 1}"}], "meta": {"next_cursor": _encode_cursor(n + 1)}}
        )


class _RequestHandler(LocalHandler):
    server: LocalHTTPServer[HttpTestServer]
    timeout = 60  # idle keep-alive connections are dropped after this

    def setup(self) -> None:
        super().setup()
        self.server.app._connections.add(self.connection)

    def finish(self) -> None:
        self.server.app._connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _handle(self) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response, fault, delay = app._respond(self.command, self.path, headers, body)
        except Exception as exc:
            app._record_error(repr(exc))
            response, fault, delay = Response(500, {"error": f"test server bug: {exc!r}"}), None, 0.0
        if delay > 0 and app._stopping.wait(delay):
            self.close_connection = True
            return
        payload = response.encoded()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        chunked = fault == "oversize" and app.faults.oversize_chunked
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if fault == "truncated":
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncated":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if chunked:
            step = 64 * 1024
            for start in range(0, len(payload), step):
                part = payload[start : start + step]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.wfile.write(payload)


# --- helpers -------------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """A client error in a built-in endpoint's parameters: answered 400."""


def _int(name: str, raw: str | None, *, minimum: int) -> int:
    try:
        value = int(raw or "")
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise _BadRequest(f"{name} must be >= {minimum}, got {value}")
    return value


def _encode_cursor(offset: int) -> str:
    return f"c{offset:x}"  # opaque enough: clients must not compute cursors


def _decode_cursor(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        if raw.startswith("c"):
            return int(raw[1:], 16)
    except ValueError:
        pass
    raise _BadRequest(f"unknown cursor {raw!r}")


def _echo(request: Request) -> Response:
    return Response(
        body={
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body": request.body.decode("utf-8", "replace"),
        }
    )
