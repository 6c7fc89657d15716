"""Shared, adaptive rate limits per upstream: one token bucket and one concurrency cap per host + credential.

An upstream counts requests per account, not per integration, so every integration calling one
:func:`upstream_key` (scheme, host, port, credential fingerprint) gets the *same* :class:`UpstreamLimiter` from
:func:`limiter_for`; differing settings combine to the most restrictive (:func:`most_restrictive`, logged).

* Callers queue first in, first out. The concurrency slot (``max_concurrency``) is taken before the token, so a
  granted token is a request that starts now.
* :meth:`UpstreamLimiter.pause_for` (a ``Retry-After``) stops every caller of the upstream, for at most
  ``max_pause_seconds``; no tokens are saved up meanwhile. :func:`paused_for` names the integrations it holds up.
* :meth:`UpstreamLimiter.observe` reads each response's rate-limit headers (:func:`limits_from_headers`: pure,
  garbage ignored) and slows the bucket to remaining / reset, never below ``min_requests_per_second`` and
  never above the configured rate.
* Use a limiter from one thread and one event loop at a time; it remakes its asyncio primitives for a new loop.

The headers read, the metrics and the log levels: docs/http.md, "Rate limits in detail".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import structlog
from prometheus_client import Counter
from pydantic import Field

from inlet.core.config import RenamedKeys, renames
from inlet.core.connector import PluginSettings

__all__ = [
    "MAX_PAUSE_SECONDS",
    "MAX_RESET_SECONDS",
    "RateLimitSettings",
    "UpstreamLimiter",
    "WindowLimit",
    "limiter_for",
    "limits_from_headers",
    "most_restrictive",
    "paused_for",
    "reset_limiters",
    "upstream_key",
]

log = structlog.get_logger("inlet.http.ratelimit")

WAIT_SECONDS = Counter(
    "inlet_http_rate_limit_wait_seconds",
    "Seconds requests waited for a rate-limit token, a concurrency slot or a pause",
    ("upstream",),
)
PAUSES = Counter(
    "inlet_http_rate_limit_pauses",
    "Pauses of a whole upstream bucket (Retry-After, budget exhausted)",
    ("upstream", "reason"),
)

MAX_RESET_SECONDS: Final = 86_400.0
"""A window reset further away than this (a day) is read as this: bounds pauses caused by bogus values."""
MAX_PAUSE_SECONDS: Final = 86_400.0
"""Longest pause :meth:`UpstreamLimiter.pause_for` applies; longer requests are clipped to it."""

_EPS: Final = 1e-9  # token arithmetic tolerance: a timer may fire a hair early, don't loop for 1e-12 tokens
_EPOCH_SECONDS: Final = 1e9
_EPOCH_MILLIS: Final = 1e12
_DAY: Final = 86_400.0
_MAX_HEADER_CHARS: Final = 8192  # longer values are not rate-limit headers; bounds the parser's work
_NUMBER: Final = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?")  # ASCII only: float() would take "inf", "1_0", "٣"


# --- settings ------------------------------------------------------------------------------------------------


class RateLimitSettings(RenamedKeys, PluginSettings):
    """How fast an integration may call its upstream. Shared upstreams take the most restrictive settings."""

    renamed_keys = renames(max_pause_minutes=("max_pause_seconds", 60))

    requests_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Steady rate; None: no configured limit (adaptive slowing and pauses still apply)."""
    burst: int | None = Field(default=None, ge=1)
    """Tokens that may be saved up; default ``max(1, ceil(requests_per_second))``."""
    max_concurrency: int = Field(default=8, ge=1)
    adaptive: bool = True
    """Slow down from ``RateLimit-*`` / ``X-RateLimit-*`` / Xero headers before a 429 happens."""
    min_requests_per_second: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    """Floor for adaptive slowing (never raises the configured rate)."""
    max_pause_seconds: float = Field(default=900.0, gt=0, le=86_400, allow_inf_nan=False)
    """Longest pause of the whole upstream (a ``Retry-After``, an exhausted window); longer ones are clipped to
    it, with a warning. Requests keep failing and retrying past it if the upstream still refuses."""

    @property
    def effective_burst(self) -> int:
        """The bucket size actually used."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.requests_per_second or 1.0))


def most_restrictive(a: RateLimitSettings, b: RateLimitSettings) -> RateLimitSettings:
    """The settings that satisfy both ``a`` and ``b``: lowest rate, burst and concurrency, adaptive if either."""
    limited = [(s.requests_per_second, s.effective_burst) for s in (a, b) if s.requests_per_second is not None]
    rps = min((r for r, _ in limited), default=None)
    # A side without a rate has no meaningful burst; the bucket size comes from the limited sides.
    burst = min((size for _, size in limited), default=None)
    return RateLimitSettings(
        requests_per_second=rps,
        burst=burst,
        max_concurrency=min(a.max_concurrency, b.max_concurrency),
        adaptive=a.adaptive or b.adaptive,
        # A lower floor lets adaptive slowing go slower: that is the stricter one.
        min_requests_per_second=min(a.min_requests_per_second, b.min_requests_per_second),
        # A shorter bound surfaces a stuck upstream sooner: that is the stricter one.
        max_pause_seconds=min(a.max_pause_seconds, b.max_pause_seconds),
    )


# --- header parsing (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """One window an upstream reported: ``remaining`` requests until it resets in ``reset_seconds``."""

    window: str
    """Which window, e.g. ``ratelimit``, ``ratelimit:day``, ``x-ratelimit``, ``xero:minute``, ``xero:day``."""
    remaining: float
    reset_seconds: float
    """Always > 0 and <= :data:`MAX_RESET_SECONDS`."""
    limit: float | None = None

    @property
    def rate(self) -> float:
        """The highest rate that does not run out before the reset: ``remaining / reset_seconds``."""
        return self.remaining / self.reset_seconds


def _number(text: str | None) -> float | None:
    """A non-negative decimal number, or None (garbage, signs, exponents, non-ASCII digits)."""
    if text is None:
        return None
    text = text.strip().strip('"').strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _reset_delta(value: float | None, now: float) -> float | None:
    """Seconds until a reset given as delta seconds, epoch seconds or epoch milliseconds (by magnitude)."""
    if value is None:
        return None
    if value >= _EPOCH_MILLIS:
        value = value / 1000.0 - now
    elif value >= _EPOCH_SECONDS:
        value -= now
    return value if math.isfinite(value) else None


def _window(
    window: str, remaining: float | None, reset: float | None, limit: float | None = None
) -> WindowLimit | None:
    """A validated :class:`WindowLimit`, or None when a value is missing or meaningless."""
    if remaining is None or reset is None or not math.isfinite(reset) or reset <= 0:
        return None  # no window to spread over, or it has already reset: no constraint
    return WindowLimit(window, remaining, min(reset, MAX_RESET_SECONDS), limit)


def _members(value: str) -> list[list[str]]:
    """Split a structured-field list (RFC 8941, leniently) into members, each a list of ``;`` parts.

    Commas and semicolons inside quoted strings do not split. Empty members are dropped.
    """
    members: list[list[str]] = []
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in value:
        if quoted:
            buf.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            buf.append(ch)
        elif ch in ";,":
            parts.append("".join(buf).strip())
            buf = []
            if ch == ",":
                members.append(parts)
                parts = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    members.append(parts)
    return [m for m in members if any(m)]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def _params(parts: list[str]) -> dict[str, str]:
    """``key=value`` parts as a dict (keys lower-cased, values unquoted); bare parts are skipped."""
    out: dict[str, str] = {}
    for part in parts:
        key, sep, val = part.partition("=")
        if sep and not key.lstrip().startswith('"'):
            out.setdefault(key.strip().lower(), _unquote(val))
    return out


def _first_item(value: str | None) -> tuple[str, dict[str, str]] | None:
    """The bare item and the parameters of a list's first member (``100;w=60, ...`` -> ``100``, {w: 60})."""
    if not value or len(value) > _MAX_HEADER_CHARS:
        return None
    members = _members(value)
    if not members:
        return None
    return members[0][0], _params(members[0][1:])


def _policy_windows(value: str | None) -> dict[str, float]:
    """``RateLimit-Policy`` windows by policy name (``""`` for unnamed items); the first item is also ``""``."""
    out: dict[str, float] = {}
    if not value or len(value) > _MAX_HEADER_CHARS:
        return out
    for member in _members(value):
        params = _params(member[1:])
        w = _number(params.get("w"))
        if w is None:
            continue
        head = member[0]
        name = "" if (_number(head) is not None or "=" in head) else _unquote(head)
        out.setdefault(name, w)
        out.setdefault("", w)  # for a remaining count that does not name its policy: the first window
    return out


def _ietf_split(h: Mapping[str, str], now: float) -> list[WindowLimit]:
    """``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` (drafts -00 to -06)."""
    remaining_item = _first_item(h.get("ratelimit-remaining"))
    if remaining_item is None:
        return []
    remaining = _number(remaining_item[0])
    reset_item = _first_item(h.get("ratelimit-reset"))
    reset = _reset_delta(_number(reset_item[0]), now) if reset_item else None
    limit_item = _first_item(h.get("ratelimit-limit"))
    limit = _number(limit_item[0]) if limit_item else None
    if reset is None:
        # No reset: assume the whole window lies ahead (the conservative reading).
        # Draft -03 lists quota policies in RateLimit-Limit too: "10, 10;w=1, 50;w=60".
        reset = _policy_windows(h.get("ratelimit-policy")).get("")
        if reset is None:
            reset = _policy_windows(h.get("ratelimit-limit")).get("")
    found = _window("ratelimit", remaining, reset, limit)
    return [found] if found else []


def _ietf_combined(h: Mapping[str, str], now: float) -> list[WindowLimit]:
    """``RateLimit: limit=100, remaining=50, reset=30`` (draft -07) or ``"name";r=50;t=30`` items (-08+)."""
    value = h.get("ratelimit")
    if not value or len(value) > _MAX_HEADER_CHARS:
        return []
    members = _members(value)
    policies = _policy_windows(h.get("ratelimit-policy"))
    out: list[WindowLimit] = []
    if all("=" in m[0] and not m[0].startswith('"') for m in members):
        # Dictionary form: every member is key=value (parameters too), one window.
        fields: dict[str, str] = {}
        for m in members:
            for key, val in _params(m).items():
                fields.setdefault(key, val)
        remaining = _number(fields.get("remaining", fields.get("r")))
        reset = _reset_delta(_number(fields.get("reset", fields.get("t"))), now)
        found = _window(
            "ratelimit",
            remaining,
            reset if reset is not None else policies.get(""),
            _number(fields.get("limit", fields.get("q"))),
        )
        return [found] if found else []
    for m in members:
        if "=" in m[0] and not m[0].startswith('"'):
            continue  # a stray key=value among named items: not a window
        name = _unquote(m[0])
        params = _params(m[1:])
        reset = _reset_delta(_number(params.get("t")), now)
        if reset is None:
            reset = policies.get(name, policies.get(""))
        found = _window(f"ratelimit:{name}" if name else "ratelimit", _number(params.get("r")), reset)
        if found:
            out.append(found)
    return out


def _x_ratelimit(h: Mapping[str, str], now: float) -> list[WindowLimit]:
    """``X-RateLimit-Remaining`` + ``X-RateLimit-Reset`` / ``-Reset-After`` (and ``X-Rate-Limit-*``)."""
    for prefix in ("x-ratelimit-", "x-rate-limit-"):
        remaining_item = _first_item(h.get(prefix + "remaining"))
        if remaining_item is None:
            continue
        after = _first_item(h.get(prefix + "reset-after"))
        reset_item = _first_item(h.get(prefix + "reset"))
        if after is not None and _number(after[0]) is not None:
            reset = _number(after[0])  # explicitly a delta, whatever its size
        else:
            reset = _reset_delta(_number(reset_item[0]), now) if reset_item else None
        limit_item = _first_item(h.get(prefix + "limit"))
        found = _window(
            "x-ratelimit", _number(remaining_item[0]), reset, _number(limit_item[0]) if limit_item else None
        )
        return [found] if found else []
    return []


def _xero(h: Mapping[str, str], now: float) -> list[WindowLimit]:
    """Xero's counters: per tenant per minute, per app per minute, per tenant per (UTC) day."""
    out: list[WindowLimit] = []
    until_midnight = _DAY - (now % _DAY) if math.isfinite(now) else None
    for header, window, reset in (
        ("x-minlimit-remaining", "xero:minute", 60.0),
        ("x-appminlimit-remaining", "xero:app-minute", 60.0),
        ("x-daylimit-remaining", "xero:day", until_midnight),
    ):
        item = _first_item(h.get(header))
        if item is not None:
            found = _window(window, _number(item[0]), reset)
            if found:
                out.append(found)
    return out


_FAMILIES: Final = (_ietf_split, _ietf_combined, _x_ratelimit, _xero)


def limits_from_headers(headers: Mapping[str, str], now: float) -> list[WindowLimit]:
    """Every rate-limit window the response headers report (see the module docstring for the rules).

    ``now`` is the wall clock in Unix seconds (``time.time()``), used for epoch resets and UTC midnight.
    Pure and total: arbitrary header values give a (possibly empty) list, never an exception.
    """
    # A plain dict is case-sensitive; httpx.Headers merges repeated fields with ", " in items().
    h = {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}
    out: list[WindowLimit] = []
    for family in _FAMILIES:
        out.extend(family(h, now))
    return out


# --- the limiter ---------------------------------------------------------------------------------------------


class _LoopState:
    """The asyncio side of a limiter, bound to one event loop: the FIFO token queue and the concurrency gate."""

    __slots__ = ("changed", "in_flight", "lock", "loop", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = asyncio.Lock()  # FIFO: its waiters are served in arrival order
        self.changed = asyncio.Event()  # wakes the queue head when a pause, headers or settings change
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class _Slot:
    """``async with limiter.slot() as waited`` — see :meth:`UpstreamLimiter.slot`."""

    __slots__ = ("_limiter", "_state", "waited")

    def __init__(self, limiter: UpstreamLimiter) -> None:
        self._limiter = limiter
        self._state: _LoopState | None = None
        self.waited = 0.0

    async def __aenter__(self) -> float:
        self._state, self.waited = await self._limiter._acquire()
        return self.waited

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state is not None:
            self._limiter._release(self._state)
            self._state = None


class UpstreamLimiter:
    """Token bucket + concurrency cap + pauses + adaptive slowing for one upstream (see module docstring)."""

    def __init__(self, key: str, settings: RateLimitSettings) -> None:
        self.key = key
        self._settings = settings
        now = time.monotonic()
        self._tokens = float(settings.effective_burst)  # start full: the first burst goes at once
        self._last = now
        self._paused_until = 0.0
        self._paused_until_wall = 0.0
        self._pause_reason = ""
        self._pause_detail = ""
        self.users: set[tuple[str, str]] = set()
        """(customer, integration) of every client on this upstream: whom a pause holds up (their status)."""
        self._pause_seq = 0
        self._adaptive: dict[str, tuple[float, float]] = {}  # window -> (rate, monotonic expiry)
        self._st: _LoopState | None = None
        self.wait_seconds = 0.0
        """Total seconds callers waited here (also the Prometheus counter)."""
        self.pauses = 0
        """Pauses started (extensions of a running pause are not counted)."""

    def __repr__(self) -> str:
        return f"UpstreamLimiter({self.key!r}, {self._settings!r})"

    @property
    def settings(self) -> RateLimitSettings:
        return self._settings

    # -- public API --------------------------------------------------------------------------------------------
    def slot(self) -> contextlib.AbstractAsyncContextManager[float]:
        """Wait for a concurrency slot, then a token; the body is the request. Yields the seconds waited.

        Hold it for the whole exchange, body included: the concurrency cap counts requests in flight.
        """
        return _Slot(self)

    @property
    def max_pause_seconds(self) -> float:
        """The longest pause: ``max_pause_seconds`` of the settings (never more than :data:`MAX_PAUSE_SECONDS`)."""
        return min(self._settings.max_pause_seconds, MAX_PAUSE_SECONDS)

    def pause_for(self, seconds: float, reason: str = "retry_after", detail: str = "") -> None:
        """Stop every caller of this upstream for ``seconds`` (clipped to :attr:`max_pause_seconds`, warned).

        Extends a shorter running pause, never shortens a longer one; only a pause that starts while not
        paused is counted in ``inlet_http_rate_limit_pauses`` (an extension is logged). ``reason`` is a metric
        label: keep it to a small fixed vocabulary (``retry_after``, ``exhausted``); ``detail`` says what asked
        for the pause (the response, the header as sent) and is logged with the pause's end time.
        """
        if math.isnan(seconds) or seconds <= 0:
            return
        bound = self.max_pause_seconds
        if seconds > bound:
            log.warning(
                "upstream pause clipped to max_pause_seconds",
                upstream=self.key,
                reason=reason,
                detail=detail,
                asked=round(seconds, 3),
                seconds=bound,
            )
            seconds = bound
        now = time.monotonic()
        until = now + seconds
        if until <= self._paused_until:
            log.debug(
                "rate limit pause already covers this",
                upstream=self.key,
                reason=reason,
                seconds=round(seconds, 3),
                remaining=round(self._paused_until - now, 3),
            )
            return
        extending = self._paused_until > now
        self._paused_until = until
        self._paused_until_wall = time.time() + seconds
        self._pause_reason = reason
        self._pause_detail = detail
        self._pause_seq += 1
        # Nothing is saved up during a pause: one request may go at expiry, the rest follow at the rate.
        self._tokens = 1.0
        self._last = until
        if extending:
            # Concurrent responses often all say "wait": one pause, not one per response.
            log.info(
                "upstream rate limit pause extended",
                upstream=self.key,
                reason=reason,
                detail=detail,
                seconds=round(seconds, 3),
                until=self.paused_until(),
            )
        else:
            self.pauses += 1
            PAUSES.labels(self.key, reason).inc()
            log.warning(
                "upstream rate limit pause",
                upstream=self.key,
                reason=reason,
                detail=detail,
                seconds=round(seconds, 3),
                until=self.paused_until(),
            )
        self._signal()

    def observe(self, headers: Mapping[str, str]) -> list[WindowLimit]:
        """Slow down from a response's rate-limit headers (call it for every response, errors too).

        Returns the windows read. A window with nothing remaining pauses the bucket until its reset.
        """
        if not self._settings.adaptive:
            return []
        limits = limits_from_headers(headers, time.time())
        if not limits:
            return limits
        now = time.monotonic()
        self._accrue(now)  # tokens earned so far were earned at the old rate
        was_slowed = self._limits(now)[2].startswith("adaptive")
        exhausted: WindowLimit | None = None
        for lim in limits:
            if lim.remaining < 1:
                self._adaptive.pop(lim.window, None)
                if exhausted is None or lim.reset_seconds > exhausted.reset_seconds:
                    exhausted = lim
            else:
                self._adaptive[lim.window] = (lim.rate, now + lim.reset_seconds)
        rate, _, why = self._limits(now)
        slowed = why.startswith("adaptive")
        if slowed and not was_slowed:
            log.info(
                "adaptive rate limit engaged",
                upstream=self.key,
                reason=why,
                requests_per_second=rate,
                windows=[(w.window, w.remaining, round(w.reset_seconds, 3)) for w in limits],
            )
        elif was_slowed and not slowed:
            log.info("adaptive rate limit lifted", upstream=self.key, requests_per_second=rate)
        if exhausted is not None:
            self.pause_for(exhausted.reset_seconds, reason="exhausted")
        self._signal()
        return limits

    def reconfigure(self, settings: RateLimitSettings) -> None:
        """Apply new settings (the registry does this when a stricter integration joins)."""
        now = time.monotonic()
        self._accrue(now)
        self._settings = settings
        if not settings.adaptive:
            self._adaptive.clear()
        self._tokens = min(self._tokens, float(settings.effective_burst))
        if self._st is not None and self._st.loop is _running_loop():
            self._wake_gate(self._st)
        self._signal()

    def current_rate(self) -> float | None:
        """The effective requests per second right now (None: unlimited); ignores a running pause."""
        return self._limits(time.monotonic())[0]

    def paused_seconds(self) -> float:
        """Seconds left in the running pause (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    def paused_until(self) -> str | None:
        """When the running pause ends (UTC, ISO 8601, whole seconds), None when not paused."""
        if self.paused_seconds() <= 0:
            return None
        return datetime.fromtimestamp(self._paused_until_wall, UTC).isoformat(timespec="seconds")

    def pause_status(self) -> str | None:
        """The running pause in words (``/readyz``, the status of the integrations it holds up); None if none."""
        until = self.paused_until()
        if until is None:
            return None
        said = f": {self._pause_detail}" if self._pause_detail else ""
        return f"upstream {self.key} paused until {until} ({self._pause_reason}{said})"

    # -- internals ---------------------------------------------------------------------------------------------
    def _limits(self, now: float) -> tuple[float | None, float, str]:
        """(rate or None for unlimited, bucket size, why) at ``now``; drops adaptive limits past their reset."""
        s = self._settings
        adaptive: float | None = None
        window = ""
        if self._adaptive:
            for name, (rate, expiry) in list(self._adaptive.items()):
                if expiry <= now:
                    del self._adaptive[name]
                elif adaptive is None or rate < adaptive:
                    adaptive, window = rate, name
        if adaptive is not None:
            adaptive = max(adaptive, s.min_requests_per_second)
            if s.requests_per_second is None or adaptive < s.requests_per_second:
                return adaptive, 1.0, f"adaptive:{window}"  # spread evenly: no saved-up burst
        if s.requests_per_second is None:
            return None, 0.0, "unlimited"
        return s.requests_per_second, float(s.effective_burst), "rate"

    def _accrue(self, now: float) -> None:
        """Add the tokens earned since the last update at the current rate."""
        if now < self._paused_until:
            return
        rate, capacity, _ = self._limits(now)
        if rate is not None:
            self._refill(now, rate, capacity)

    def _refill(self, now: float, rate: float, capacity: float) -> None:
        if now > self._last:
            self._tokens += (now - self._last) * rate
            self._last = now
        self._tokens = min(self._tokens, capacity)

    def _next_expiry(self, now: float) -> float | None:
        return min((exp for _, exp in self._adaptive.values() if exp > now), default=None)

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._st
        if st is None or st.loop is not loop:
            # A new loop (tests run one per test): fresh primitives; waiters of a dead loop are gone anyway.
            st = self._st = _LoopState(loop)
        return st

    def _signal(self) -> None:
        st = self._st
        # Only the loop that owns the waiters may wake them (a closed loop's futures must not be touched).
        if st is not None and st.loop is _running_loop():
            st.changed.set()

    async def _acquire(self) -> tuple[_LoopState, float]:
        st = self._loop_state()
        started = time.monotonic()
        reasons: list[str] = []
        if st.in_flight < self._settings.max_concurrency and not st.waiters:
            st.in_flight += 1
        else:
            reasons.append("concurrency")
            await self._enter_gate(st)
        try:
            await self._take_token(st, reasons)
        except BaseException:
            self._release(st)
            raise
        waited = 0.0
        if reasons:
            waited = time.monotonic() - started
            self.wait_seconds += waited
            WAIT_SECONDS.labels(self.key).inc(waited)
            reason = "+".join(reasons)
            # Waits are normal under a limit: per-request lines at debug, long ones at info.
            (log.info if waited >= 1.0 else log.debug)(
                "rate limit wait", upstream=self.key, reason=reason, seconds=round(waited, 4)
            )
        return st, waited

    async def _enter_gate(self, st: _LoopState) -> None:
        fut: asyncio.Future[None] = st.loop.create_future()
        st.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(st)  # granted, then cancelled before running: give the slot back
            else:
                with contextlib.suppress(ValueError):
                    st.waiters.remove(fut)
            raise

    def _wake_gate(self, st: _LoopState) -> None:
        while st.waiters and st.in_flight < self._settings.max_concurrency:
            fut = st.waiters.popleft()
            if not fut.done():
                st.in_flight += 1  # counted at grant time, so nobody can overtake the woken waiter
                fut.set_result(None)

    def _release(self, st: _LoopState) -> None:
        st.in_flight -= 1
        if st.waiters:
            self._wake_gate(st)

    async def _take_token(self, st: _LoopState, reasons: list[str]) -> None:
        pause_seq = self._pause_seq
        if st.lock.locked():
            reasons.append("queue")  # callers ahead of us are waiting for their tokens
        async with st.lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    wait = self._paused_until - now
                    why = f"pause:{self._pause_reason}"
                else:
                    rate, capacity, why = self._limits(now)
                    if rate is None:
                        break
                    self._refill(now, rate, capacity)
                    if self._tokens >= 1.0 - _EPS:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        break
                    wait = (1.0 - self._tokens) / rate
                    expiry = self._next_expiry(now)
                    if expiry is not None:
                        wait = min(wait, expiry - now)  # a lifted adaptive limit may make it due sooner
                if why not in reasons:
                    reasons.append(why)
                st.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await st.changed.wait()
        if self._pause_seq != pause_seq and reasons:
            why = f"pause:{self._pause_reason}"  # a pause held up the callers ahead of us
            if why not in reasons:
                reasons.append(why)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --- the process-wide registry -------------------------------------------------------------------------------

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_REGISTRY: dict[str, UpstreamLimiter] = {}
_REGISTRY_LOCK = threading.Lock()  # limiter_for may be called from a thread building clients


def upstream_key(base_url: str, credential: str | None) -> str:
    """``scheme://host:port`` plus ``#`` and a 12-hex-digit SHA-256 fingerprint of ``credential``.

    The credential is whatever the upstream counts limits by (API key, client id, user name); only the
    fingerprint appears in the key, so the key is safe in logs and metric labels. Paths, queries and
    user-info in ``base_url`` are ignored.
    """
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, without user-info or IPv6 brackets
    if not scheme or not host:
        # The URL itself is not echoed: it could carry user-info.
        raise ValueError("base_url must be absolute (scheme://host[:port]/...) to key its rate limit")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    key = f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"
    if credential:
        # Domain-separated so the fingerprint matches no other hash of the same secret.
        digest = hashlib.sha256(b"inlet.ratelimit.upstream\x00" + credential.encode("utf-8")).hexdigest()
        key += f"#{digest[:12]}"
    return key


def limiter_for(upstream: str, settings: RateLimitSettings) -> UpstreamLimiter:
    """The process-wide limiter of ``upstream`` (from :func:`upstream_key`), created on first use.

    Every caller with the same key gets the same limiter. Different settings are merged with
    :func:`most_restrictive` (logged); the merge is sticky for the life of the process.
    """
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get(upstream)
        if limiter is None:
            limiter = _REGISTRY[upstream] = UpstreamLimiter(upstream, settings)
            return limiter
        if limiter.settings == settings:
            return limiter
        merged = most_restrictive(limiter.settings, settings)
        log.warning(
            "upstream shared with different rate limit settings; the most restrictive win",
            upstream=upstream,
            existing=limiter.settings.model_dump(),
            requested=settings.model_dump(),
            effective=merged.model_dump(),
        )
        if merged != limiter.settings:
            limiter.reconfigure(merged)
        return limiter


def paused_for(customer: str, integration: str) -> str | None:
    """Why the upstream(s) an integration's HTTP clients use are paused right now; None when none is."""
    with _REGISTRY_LOCK:
        limiters = list(_REGISTRY.values())
    said = [st for lim in limiters if (customer, integration) in lim.users and (st := lim.pause_status())]
    return "; ".join(said) or None


def reset_limiters() -> None:
    """Forget every limiter (tests; a process never needs this)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
