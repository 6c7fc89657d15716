"""HTTP for connectors: one httpx client per integration, with bounds and retries a plugin cannot forget.

What a connector gets from :class:`HttpClient`:
- timeouts per request and a cap on response size (read streaming, refused past the cap);
- retries with jittered exponential backoff (tenacity) on connect errors, timeouts, bodies cut short,
  429 and 5xx, honouring ``Retry-After``; a bounded number of attempts, then a retriable
  :class:`~core.errors.UpstreamError` (the supervisor backs off and resumes from the checkpoint);
- non-retriable statuses (4xx other than 408/429) fail fast with :class:`UpstreamRefused`;
- replay from recorded fixtures (``replay:`` in settings) through httpx's transport layer.

What to do per status is data (:data:`STATUS_ACTIONS`), not if/else. Shared per-upstream rate limits,
auth flows and pagination strategies build on this (issue 5).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_base, wait_exponential_jitter

from core.connector import IntegrationContext, PluginSettings
from core.errors import InletError, UpstreamError
from core.secrets import Secret

__all__ = ["STATUS_ACTIONS", "HttpClient", "HttpSettings", "UpstreamRefused"]

log = structlog.get_logger("inlet.http")

Action = Literal["retry", "fail"]

STATUS_ACTIONS: Mapping[int, Action] = {408: "retry", 425: "retry", 429: "retry",
                                        **{s: "retry" for s in range(500, 600)}}
"""Status code → action; anything >= 400 not listed fails fast."""


class UpstreamRefused(InletError):
    """The upstream answered with a status that retrying will not fix (401, 403, 404, 422, ...)."""


class _Retryable(UpstreamError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HttpSettings(PluginSettings):
    """How to reach an upstream over HTTP."""

    base_url: str
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_retry_seconds: float = Field(default=300.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token: Secret | None = None
    replay: str | None = None
    """Directory of recorded exchanges to replay instead of the network (fixtures, the bundled example)."""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _WaitRetryAfter(wait_base):
    """Jittered exponential backoff, but never shorter than the server's ``Retry-After``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._exp = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self._exp(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable)


class HttpClient:
    """An integration's HTTP client. Use as ``async with HttpClient(settings, ctx) as http``."""

    def __init__(self, settings: HttpSettings, ctx: IntegrationContext,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.log = ctx.logger()
        transport = transport or ctx.http_transport
        if transport is None and settings.replay:
            from core.recording import ReplayTransport

            transport = ReplayTransport(ctx.path(settings.replay) / "http.jsonl")
        headers = {"User-Agent": "inlet/0.1", **settings.headers}
        if settings.bearer_token is not None:
            headers["Authorization"] = f"Bearer {settings.bearer_token.get_secret_value()}"
        self._client = httpx.AsyncClient(base_url=settings.base_url, headers=headers, transport=transport,
                                         timeout=settings.timeout_seconds, follow_redirects=False)
        self.retries = 0

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; idempotent."""
        await self._client.aclose()

    async def _once(self, url: str, params: Mapping[str, Any] | None) -> tuple[bytes, httpx.Headers]:
        s = self.settings
        try:
            async with self._client.stream("GET", url, params=params) as resp:
                action = STATUS_ACTIONS.get(resp.status_code, "fail" if resp.status_code >= 400 else None)
                if action is not None:
                    body = (await resp.aread())[:2000].decode("utf-8", "replace")
                    msg = f"GET {resp.request.url} answered {resp.status_code}: {body}"
                    if action == "retry":
                        raise _Retryable(msg, _retry_after(resp.headers.get("Retry-After")))
                    raise UpstreamRefused(msg)
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > s.max_response_bytes:
                    raise UpstreamRefused(f"GET {resp.request.url}: response of {declared} bytes exceeds "
                                          f"max_response_bytes={s.max_response_bytes}")
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > s.max_response_bytes:
                        raise UpstreamRefused(f"GET {resp.request.url}: response exceeds "
                                              f"max_response_bytes={s.max_response_bytes}")
                    chunks.append(chunk)
                return b"".join(chunks), resp.headers
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # Connect errors, timeouts and bodies cut short (RemoteProtocolError) are worth another try.
            raise _Retryable(f"GET {url}: {type(exc).__name__}: {exc}") from exc

    async def get(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[bytes, httpx.Headers]:
        """GET ``url`` (relative to ``base_url`` or absolute) with retries; the body and headers."""
        s = self.settings
        started = time.monotonic()

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning("upstream request failed; retrying", url=url, attempt=state.attempt_number,
                             wait=round(state.next_action.sleep, 2) if state.next_action else None,
                             error=str(exc)[:300])

        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.max_attempts) | stop_after_delay(s.max_retry_seconds),
            wait=_WaitRetryAfter(s.backoff_initial, s.backoff_max),
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(url, params)
        except _Retryable as exc:
            raise UpstreamError(f"{exc} (gave up after {s.max_attempts} attempts, "
                                f"{time.monotonic() - started:.1f} s)") from exc
        raise AssertionError("unreachable")  # pragma: no cover
