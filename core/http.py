"""HTTP for connectors: one client per integration, with the politeness a plugin cannot forget.

What :class:`HttpClient` does on every request, in this order:

1. waits for the upstream's **shared rate limit** (``core.ratelimit``: one token bucket and concurrency
   cap per upstream = host + credentials, shared by every integration hitting it; a ``Retry-After``
   pauses it for all of them; ``RateLimit-*`` style headers slow it down before a 429 happens);
2. sends with the integration's **auth** (``core.auth``: bearer, API key, basic, OAuth2 client
   credentials, SMART Backend Services, session login), a per-request timeout and a response-size cap;
3. decides what a failure means from two tables, :data:`STATUS_ACTIONS` and :data:`EXCEPTION_ACTIONS`
   (policy as data): retry with jittered exponential backoff (tenacity) within ``max_attempts`` and a
   total ``deadline_seconds``, or fail fast;
4. checks the declared content type, so an HTML maintenance page is not parsed as data.

Three ways in, one policy: :meth:`HttpClient.get` (body and headers; any status >= 400 raises, the content
type is checked), :meth:`HttpClient.request` (any method and headers; a status the policy does not retry is
*returned*, for protocols that speak in 202s and 4xx bodies) and :meth:`HttpClient.stream` (the body left
unread for line-by-line downloads; credentials kept to the upstream's own origin unless told otherwise).

Errors carry ``retriable`` on the class: :class:`~core.errors.UpstreamError` (retriable: the supervisor
backs off and resumes from the checkpoint) or :class:`UpstreamRefused` (not: 401/403/404/422...).
Every retry, wait and refusal is a log line and a Prometheus counter. ``replay:`` in the settings
answers from recorded fixtures through httpx's transport layer instead of the network.

Idle, a client costs little: every client verifies with one TLS context per CA source (:func:`tls_context`), and
one with nothing in flight for :data:`IDLE_RELEASE_SECONDS` closes its connection pool (the next request opens
a new one), so an integration sleeping between polls holds no socket.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, TypeVar

import httpx
import structlog
from prometheus_client import Counter
from pydantic import Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_base, wait_exponential_jitter

from inlet.core.auth import AuthSettings, HttpUrl, build_auth, credential_id
from inlet.core.config import RenamedKeys, renames
from inlet.core.connector import IntegrationContext, PluginSettings
from inlet.core.errors import InletError, UnexpectedContent, UpstreamError, UpstreamRefused
from inlet.core.ratelimit import RateLimitSettings, limiter_for, upstream_key
from inlet.core.secrets import mask

__all__ = [
    "EXCEPTION_ACTIONS",
    "STATUS_ACTIONS",
    "FinalStatus",
    "HttpClient",
    "HttpResponse",
    "HttpSettings",
    "UnexpectedContent",
    "UpstreamRefused",
    "tls_context",
]

log = structlog.get_logger("inlet.http")

Action = Literal["retry", "fail"]

STATUS_ACTIONS: Mapping[int, Action] = {
    408: "retry",
    425: "retry",
    429: "retry",
    **{s: "retry" for s in range(500, 600)},
}
"""Status code → action; any other status >= 400 fails fast."""

EXCEPTION_ACTIONS: Mapping[type[Exception], Action] = {
    httpx.TimeoutException: "retry",  # connect, read, write and pool timeouts
    httpx.NetworkError: "retry",  # connection refused / reset
    httpx.RemoteProtocolError: "retry",  # a body cut short, a connection closed mid-response
    httpx.DecodingError: "retry",  # a corrupted compressed body
}
"""Transport exception → action (checked with isinstance, first match); anything else propagates."""

REQUESTS = Counter("inlet_http_requests", "HTTP responses received, by status", ("upstream", "status"))
RETRIES = Counter("inlet_http_retries", "HTTP requests retried, by reason", ("upstream", "reason"))


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What :meth:`HttpClient.request` returns: the final answer, whatever its status, body read in full."""

    status: int
    headers: httpx.Headers
    body: bytes


FinalStatus = Callable[[HttpResponse], bool]
"""A caller's say on a status the policy would retry: True keeps that answer (returned, not retried)."""


class _Retryable(UpstreamError):
    """One failed attempt worth retrying; ``reason`` labels the metric, ``retry_after`` bounds the wait.

    A local signal: the retry loop of :meth:`HttpClient._attempts` catches it, and past the attempts or the
    deadline raises an :class:`UpstreamError` (or :class:`UnexpectedContent`) in its place.
    """

    def __init__(self, message: str, reason: str, retry_after: float | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail


class HttpSettings(RenamedKeys, PluginSettings):
    """How to reach an upstream over HTTP."""

    renamed_keys = renames(backoff_initial="backoff_initial_seconds", backoff_max="backoff_max_seconds")

    base_url: HttpUrl
    """The upstream's absolute http(s) URL; requests are relative to it."""
    auth: AuthSettings | None = None
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    timeout_seconds: float = Field(default=30.0, gt=0)
    """Per request: connect, read and write each."""
    deadline_seconds: float = Field(default=300.0, gt=0)
    """Per logical request, all attempts and waits included."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    """Wait before the first retry; doubling (jittered) after each failed attempt. A ``Retry-After`` wins."""
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    """The retry wait's ceiling."""
    content_types: list[str] = Field(default_factory=lambda: ["application/json", "application/fhir+json"])
    """Accepted response media types (parameters ignored); empty accepts anything."""
    headers: dict[str, str] = Field(default_factory=dict)
    replay: str | None = None
    """Directory of recorded exchanges to replay instead of the network (fixtures, the bundled example)."""


EPOCH_HORIZON_SECONDS = 86_400.0
"""A ``Retry-After`` number read as an epoch (s or ms) must lie at most this far ahead (and at most
:data:`EPOCH_SLACK_SECONDS` behind) to be believed; otherwise it is ignored with a warning."""
EPOCH_SLACK_SECONDS = 300.0
_RETRY_NUMBER = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?")


def retry_after_seconds(value: str | None, now: float | None = None, *, where: str = "") -> float | None:
    """Seconds to wait from a ``Retry-After`` header, read by what it can plausibly mean; None when absent or
    not believable (that is logged as a warning naming ``where`` and the value, and the caller's own backoff
    applies).

    * a number below 1e9: delay-seconds (RFC 9110; decimals accepted);
    * a number from 1e12: an epoch in milliseconds, from 1e9: an epoch in seconds (servers that send the
      moment the block lifts, like the SMART Bulk Data reference server) — believed only when it lies in the
      near future (at most :data:`EPOCH_HORIZON_SECONDS` ahead; up to :data:`EPOCH_SLACK_SECONDS` in the past
      reads as 0, a clock skew);
    * an HTTP-date: the seconds until it (0 when past).

    ``now`` is the wall clock (``time.time()``). The caller bounds the wait (``max_pause_seconds``).
    """
    if not value:
        return None
    value = value.strip()
    if _RETRY_NUMBER.fullmatch(value):
        number = float(value)
        if number < 1e9:
            return number
        now = time.time() if now is None else now
        unit = "ms" if number >= 1e12 else "s"
        ahead = (number / 1000.0 if unit == "ms" else number) - now
        if -EPOCH_SLACK_SECONDS <= ahead <= EPOCH_HORIZON_SECONDS:
            return max(0.0, ahead)
        log.warning(
            "Retry-After ignored: a number too large for a delay that is no epoch in the near future",
            where=mask(where),
            retry_after=value[:40],
            read_as=f"epoch {unit}",
            seconds_ahead=round(ahead),
        )
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None or when.tzinfo is None:
        log.warning(
            "Retry-After ignored: neither delay-seconds, an epoch nor an HTTP-date",
            where=mask(where),
            retry_after=value[:40],
        )
        return None
    current = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return max(0.0, (when - current).total_seconds())


def _said(body: bytes) -> str:
    """What an error body says, for a log line: a JSON error document's message (a FHIR OperationOutcome's
    diagnostics, ``error_description``, ``message``...), else the text of its first bytes, markup stripped."""
    text = ""
    try:
        doc = json.loads(body[:65536]) if body[:1] in (b"{", b"[") else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        issues = doc.get("issue") if doc.get("resourceType") == "OperationOutcome" else None
        if isinstance(issues, list):
            text = "; ".join(
                str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
                for i in issues
                if isinstance(i, dict)
            )
        for key in ("error_description", "message", "detail", "error", "title"):
            if not text and isinstance(doc.get(key), str):
                text = doc[key]
    if not text:
        text = re.sub(r"<[^>]*>", " ", body[:2000].decode("utf-8", "replace"))
    return " ".join(text.split())[:300] or "no body"


class _WaitRetryAfter(wait_base):
    """Jittered exponential backoff, never shorter than the server's ``Retry-After``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._exp = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self._exp(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


def tls_context() -> ssl.SSLContext:
    """The verifying TLS context of every :class:`HttpClient`: one per process and CA source, not one per client.

    What httpx builds for a client by default (``verify=True``, ``trust_env=True``): the CAs of
    ``SSL_CERT_FILE``, else of ``SSL_CERT_DIR``, else certifi's bundle. httpx builds that context for every
    client, even one that only talks plain http, and loading the CA bundle costs ~0.85 MB of native memory each
    time: with a client per integration, a thousand idle integrations held ~850 MB of identical CA stores
    (``bench/bench_idle.py``). A context is safe to share: it holds the verification policy and the trusted CAs,
    no credentials. Settings that change either (a private CA, a client certificate) must get a context of
    their own, keyed by those settings like the CA source here.
    """
    return _tls_context(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # httpx's own choice for verify=True, trust_env=True, with the CA source as the cache key.
    if cert_file:
        return ssl.create_default_context(cafile=cert_file)
    if cert_dir:
        return ssl.create_default_context(capath=cert_dir)
    return httpx.create_ssl_context(verify=True, trust_env=False)  # certifi's bundle


def _exception_action(exc: BaseException) -> Action | None:
    for kind, action in EXCEPTION_ACTIONS.items():
        if isinstance(exc, kind):
            return action
    return None


def _target(exc: httpx.HTTPError, url: str) -> str:
    """The URL a transport error happened on: the token endpoint when the auth flow's own call failed."""
    try:
        return str(exc.request.url)
    except RuntimeError:  # raised by httpx when the error carries no request
        return url


def _transport_error(method: str, url: str, exc: httpx.HTTPError) -> InletError:
    """A transport exception as ``_Retryable`` or :class:`UpstreamRefused`, per :data:`EXCEPTION_ACTIONS`."""
    message = mask(f"{method} {_target(exc, url)}: {type(exc).__name__}: {exc}")
    if _exception_action(exc) == "retry":
        return _Retryable(message, type(exc).__name__)
    return UpstreamRefused(message)


IDLE_RELEASE_SECONDS = 10.0
"""An :class:`HttpClient` idle this long (no request, no open stream) closes its connection pool; twice httpcore's
keep-alive expiry (5 s), after which a pooled connection would not be reused anyway."""
_RELEASING: set[asyncio.Task[None]] = set()  # pools being closed in the background (a reference keeps the task)


class HttpClient:
    """An integration's HTTP client. Use as ``async with HttpClient(settings, ctx) as http``."""

    def __init__(
        self, settings: HttpSettings, ctx: IntegrationContext, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.log = ctx.logger()
        transport = transport or ctx.http_transport
        if transport is None and settings.replay:
            from inlet.core.recording import ReplayTransport

            transport = ReplayTransport(ctx.path(settings.replay) / "http.jsonl")
        # Same host and credentials share one bucket; another tenant's credentials get their own.
        self.upstream = upstream_key(settings.base_url, credential_id(settings.auth) if settings.auth else None)
        self.limiter = limiter_for(self.upstream, settings.rate_limit)
        self.limiter.users.add((ctx.customer, ctx.integration))  # whose status a pause of this upstream holds
        self._origin = httpx.URL(settings.base_url)
        self._label = self._origin.host or "local"
        self._accept = {t.lower() for t in settings.content_types}
        self._auth = build_auth(settings.auth, logger=self.log)  # one per HttpClient: renewed tokens live on it
        self._transport = transport
        self._client: httpx.AsyncClient | None = None  # made on first use, dropped when idle (own transport only)
        self._closed = False
        self._busy = 0  # logical requests and open streams
        self._idle: asyncio.TimerHandle | None = None
        self.retries = 0

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; idempotent."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._client is None:  # never used, or released while idle: a closed one refuses further requests
            self._client = self._new_client()
        await self._client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.settings.base_url,
            headers={"User-Agent": "inlet/0.1", **self.settings.headers},
            auth=self._auth,
            transport=self._transport,
            timeout=self.settings.timeout_seconds,
            follow_redirects=False,
            verify=tls_context(),
        )

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _enter(self) -> None:
        self._busy += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._transport is None and self._client is not None and not self._closed:
            self._idle = asyncio.get_running_loop().call_later(IDLE_RELEASE_SECONDS, self._release)

    def _release(self) -> None:
        """Idle for :data:`IDLE_RELEASE_SECONDS`: close the pool (its keep-alive connections have expired by then,
        but httpcore only notices at the next request, so each would hold a socket, and the upstream a
        connection, until the next poll). The next request makes a new one. An injected transport (replay,
        recording, a test's) is never closed here: it may not open again."""
        self._idle = None
        if self._busy or self._closed or self._client is None:
            return
        client, self._client = self._client, None
        task = asyncio.get_running_loop().create_task(client.aclose())
        _RELEASING.add(task)
        task.add_done_callback(_RELEASING.discard)

    async def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        final: FinalStatus | None,
        strict: bool,
    ) -> HttpResponse:
        """One attempt; raises ``_Retryable`` for what the policy retries. ``strict`` is ``get()``'s contract:
        any status >= 400 raises and a 2xx must have a declared content type."""
        try:
            async with self.limiter.slot(), self._http.stream(method, url, headers=headers, params=params) as resp:
                REQUESTS.labels(self._label, str(resp.status_code)).inc()
                self.limiter.observe(resp.headers)
                if strict:
                    return await self._read_strict(resp)
                answer = HttpResponse(resp.status_code, resp.headers, await self._read_body(method, resp))
                self._judge(method, resp, answer.body, final)
                return answer
        except _Retryable as exc:
            self._pause(exc)
            raise
        except UpstreamError as exc:  # the auth flow's token endpoint answered 5xx / 429
            raise _Retryable(mask(str(exc)), "auth") from exc
        except httpx.HTTPError as exc:
            raise _transport_error(method, url, exc) from exc

    def _pause(self, exc: _Retryable) -> None:
        if exc.retry_after is None:
            return
        if exc.reason in ("429", "503"):
            # The upstream asked everyone to wait: pause the shared bucket, not just this request (clipped and
            # logged there).
            self.limiter.pause_for(exc.retry_after, "retry_after", detail=f"{exc.reason} {exc.detail}")
        # Never wait longer than a pause may last: past it, the next attempt asks the upstream again.
        exc.retry_after = min(exc.retry_after, self.limiter.max_pause_seconds)

    @staticmethod
    def _judge(method: str, resp: httpx.Response, body: bytes, final: FinalStatus | None) -> None:
        """Raise ``_Retryable`` for a status the policy retries, unless ``final`` says this answer is final."""
        status = resp.status_code
        if STATUS_ACTIONS.get(status) != "retry":
            return
        if final is not None and final(HttpResponse(status, resp.headers, body)):
            return
        where = f"{method} {resp.request.url}"
        said = resp.headers.get("Retry-After")
        raise _Retryable(
            mask(f"{where} answered {status}: {_said(body)}"),
            str(status),
            retry_after_seconds(said, where=where),
            mask(f"from {where}" + (f", Retry-After: {said[:40]}" if said else "")),
        )

    async def _read_body(self, method: str, resp: httpx.Response) -> bytes:
        cap = self.settings.max_response_bytes
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise UpstreamRefused(f"{method} {resp.request.url}: response exceeds max_response_bytes={cap}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_strict(self, resp: httpx.Response) -> HttpResponse:
        s = self.settings
        status = resp.status_code
        if status >= 400:
            raw = (await resp.aread())[:2000]
            # mask(): an API key sent as a query parameter is part of the URL.
            msg = mask(f"GET {resp.request.url} answered {status}: {raw.decode('utf-8', 'replace')}")
            if STATUS_ACTIONS.get(status) == "retry":
                where = f"GET {resp.request.url}"
                said = resp.headers.get("Retry-After")
                raise _Retryable(
                    msg,
                    str(status),
                    retry_after_seconds(said, where=where),
                    mask(f"from {where}" + (f", Retry-After: {said[:40]}" if said else "")),
                )
            raise UpstreamRefused(msg, status, raw)
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > s.max_response_bytes:
            raise UpstreamRefused(
                f"GET {resp.request.url}: response of {declared} bytes exceeds "
                f"max_response_bytes={s.max_response_bytes}"
            )
        ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if self._accept and ctype not in self._accept:
            preview = (await resp.aread())[:200].decode("utf-8", "replace")
            raise _Retryable(
                f"GET {resp.request.url}: expected {' or '.join(sorted(self._accept))}, received "
                f"{ctype or 'no content type'}: {preview!r}",
                "content-type",
            )
        return HttpResponse(status, resp.headers, await self._read_body("GET", resp))

    async def _attempts(self, method: str, url: str, once: Callable[[], Awaitable[_T]]) -> _T:
        """``once()`` until it succeeds, within ``max_attempts`` and ``deadline_seconds``; every retry logged."""
        started = time.monotonic()

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, _Retryable) else "error"
            RETRIES.labels(self._label, reason).inc()
            self.log.warning(
                "upstream request failed; retrying",
                method=method,
                url=mask(url),
                attempt=state.attempt_number,
                reason=reason,
                error=str(exc)[:300],
                wait=round(state.next_action.sleep, 2) if state.next_action else None,
            )

        self._enter()
        try:
            return await self._retrying(method, url, once, started, before_sleep)
        finally:
            self._leave()

    async def _retrying(
        self,
        method: str,
        url: str,
        once: Callable[[], Awaitable[_T]],
        started: float,
        before_sleep: Callable[[RetryCallState], None],
    ) -> _T:
        s = self.settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.max_attempts) | stop_before_delay(s.deadline_seconds),  # never sleep past it
            wait=_WaitRetryAfter(s.backoff_initial_seconds, s.backoff_max_seconds),
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await once()
        except _Retryable as exc:
            kind = UnexpectedContent if exc.reason == "content-type" else UpstreamError
            spent = time.monotonic() - started
            why = ""
            if exc.retry_after is not None and spent + exc.retry_after > s.deadline_seconds:
                why = (
                    f"; the upstream asked to wait {exc.retry_after:.0f} s, past deadline_seconds="
                    f"{s.deadline_seconds:g}"
                )
            raise kind(
                f"{exc} (gave up after {attempt.retry_state.attempt_number} attempts, {spent:.1f} s{why})"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(
        self, url: str, params: Mapping[str, Any] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> tuple[bytes, httpx.Headers]:
        """GET ``url`` (relative to ``base_url`` or absolute) with retries; the body and headers. ``headers`` are
        added to this request only (e.g. Xero's ``If-Modified-Since``).

        Stricter than :meth:`request`: any status >= 400 raises, and the content type must be a declared one.
        """
        answer = await self._attempts("GET", url, lambda: self._once("GET", url, headers, params, None, strict=True))
        return answer.body, answer.headers

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        final: FinalStatus | None = None,
    ) -> HttpResponse:
        """One request (relative to ``base_url`` or absolute) with the client's limiter, auth, retries and size cap.

        Unlike :meth:`get`, every status the policy does not retry is *returned*, 4xx included, so protocols
        that speak in status codes (``202 Accepted``, a FHIR OperationOutcome with a 4xx) can read the answer.
        A retried status (:data:`STATUS_ACTIONS`) that is still failing after the last attempt raises
        :class:`~core.errors.UpstreamError`. ``final`` lets a caller declare such an answer final after all
        (e.g. a 500 whose body says the job failed for good): it is then returned, not retried.
        """
        return await self._attempts(method, url, lambda: self._once(method, url, headers, params, final, strict=False))

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        send_auth: bool | Literal["cross-origin"] = True,
        final: FinalStatus | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """GET ``url`` with the body left unread: ``async with http.stream(url) as resp``; closed on exit.

        Opening is retried like :meth:`request` (a status the policy does not retry is yielded, its body
        already read into ``resp.content`` when >= 400); reading the body is the caller's, and a failure
        while reading is not retried here (the caller resumes from its checkpoint). The limiter slot is
        held for the response head only: a paused pipeline holding a half-read file must not block other
        integrations sharing the upstream's concurrency cap.

        ``send_auth``: True sends the client's credentials, but only to its own origin (``base_url``'s
        scheme, host and port) — another origin raises :class:`UpstreamRefused`, nothing is sent; False
        sends none (a pre-signed URL); ``"cross-origin"`` sends them to any origin, an explicit decision.
        """
        target = self._http.build_request("GET", url, headers=headers).url
        if send_auth is True and (target.scheme, target.netloc) != (self._origin.scheme, self._origin.netloc):
            raise UpstreamRefused(
                mask(
                    f"GET {url}: credentials are only sent to {self._origin.scheme}://"
                    f"{self._origin.netloc.decode()}; pass send_auth=False (or "
                    f"'cross-origin' to send them anyway)"
                )
            )
        auth: Any = httpx.USE_CLIENT_DEFAULT if send_auth else None

        async def once() -> httpx.Response:
            request = self._http.build_request("GET", url, headers=headers)
            try:
                async with self.limiter.slot():
                    resp = await self._http.send(request, stream=True, auth=auth)
            except UpstreamError as exc:  # the auth flow's token endpoint answered 5xx / 429
                raise _Retryable(mask(str(exc)), "auth") from exc
            except httpx.HTTPError as exc:
                raise _transport_error("GET", url, exc) from exc
            REQUESTS.labels(self._label, str(resp.status_code)).inc()
            self.limiter.observe(resp.headers)
            if resp.status_code >= 400:
                try:
                    body = await resp.aread()
                    self._judge("GET", resp, body, final)
                except _Retryable as exc:
                    self._pause(exc)
                    raise
                except httpx.HTTPError as exc:
                    raise _transport_error("GET", url, exc) from exc
                finally:
                    await resp.aclose()
            return resp

        self._enter()  # until the caller has read the body: the pool must stay open
        try:
            resp = await self._attempts("GET", url, once)
            try:
                yield resp
            finally:
                await resp.aclose()
        finally:
            self._leave()
