"""core.ratelimit: the shared token bucket, pauses, the concurrency cap, header parsing and the registry.

Timing tests run on the real clock and stay well under 2 s each. Grant times are taken inside ``slot()``,
where a request would start. Lower bounds are tight (a limiter may be late, never early); upper bounds are
generous, since a loaded CI machine may wake tasks late.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Mapping
from datetime import datetime

import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from inlet.core.ratelimit import (
    MAX_RESET_SECONDS,
    RateLimitSettings,
    UpstreamLimiter,
    WindowLimit,
    limiter_for,
    limits_from_headers,
    most_restrictive,
    reset_limiters,
    upstream_key,
)

EARLY = 0.003  # grants may not come earlier than this before their due time (float and timer slack)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    reset_limiters()
    yield
    reset_limiters()


def make(key: str, **settings: object) -> UpstreamLimiter:
    return UpstreamLimiter(key, RateLimitSettings.model_validate(settings))


async def grants(limiter: UpstreamLimiter, n: int, hold: float = 0.0) -> list[float]:
    """Start ``n`` tasks at once through ``limiter``; the monotonic time each was granted, in start order."""
    stamps: list[float] = [math.nan] * n

    async def one(i: int) -> None:
        async with limiter.slot():
            stamps[i] = time.monotonic()
            if hold:
                await asyncio.sleep(hold)

    await asyncio.gather(*(one(i) for i in range(n)))
    return stamps


def max_in_window(stamps: list[float], width: float) -> int:
    """The most grants in any half-open window [t, t + width) starting at a grant."""
    ordered = sorted(stamps)
    return max(sum(1 for s in ordered if t <= s < t + width) for t in ordered)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the token bucket ----------------------------------------------------------------------------------------


async def test_concurrent_callers_never_exceed_rate_plus_burst_in_any_sliding_window() -> None:
    rate, burst, n = 50, 1, 60
    limiter = make("test://window", requests_per_second=rate, burst=burst)
    started = time.monotonic()
    stamps = await grants(limiter, n)
    assert max_in_window(stamps, 1.0) <= rate + burst
    for width in (0.1, 0.25, 0.5):  # the bound holds for every window length, not only 1 s
        assert max_in_window(stamps, width) <= math.floor(burst + rate * width + 0.01), width
    # ... and the rate is actually used, not undershot by a lot.
    assert max(stamps) - started >= (n - burst) / rate - EARLY
    assert max(stamps) - started < (n - burst) / rate + 0.5


async def test_a_full_bucket_lets_the_burst_go_at_once_then_spaces_the_rest() -> None:
    limiter = make("test://burst", requests_per_second=10, burst=4)
    started = time.monotonic()
    stamps = sorted(await grants(limiter, 6))
    assert stamps[3] - started < 0.05  # the four saved-up tokens
    assert stamps[4] - started >= 0.1 - EARLY
    assert stamps[5] - started >= 0.2 - EARLY
    assert stamps[5] - started < 0.45


def test_default_burst_is_the_rate_rounded_up() -> None:
    assert RateLimitSettings(requests_per_second=2.5).effective_burst == 3
    assert RateLimitSettings(requests_per_second=0.2).effective_burst == 1
    assert RateLimitSettings(requests_per_second=5, burst=2).effective_burst == 2
    with pytest.raises(ValueError, match="greater than 0"):
        RateLimitSettings(requests_per_second=0)
    with pytest.raises(ValueError, match="Extra inputs"):
        RateLimitSettings.model_validate({"rps": 3})


async def test_callers_are_served_in_arrival_order() -> None:
    limiter = make("test://fifo", requests_per_second=100, burst=1)
    order: list[int] = []

    async def one(i: int) -> None:
        async with limiter.slot():
            order.append(i)

    await asyncio.gather(*(one(i) for i in range(12)))
    assert order == list(range(12))


async def test_no_rate_configured_means_no_waiting() -> None:
    limiter = make("test://free")
    started = time.monotonic()
    stamps = await grants(limiter, 50)
    assert max(stamps) - started < 0.05
    assert limiter.current_rate() is None
    assert limiter.wait_seconds == 0.0


async def test_waits_are_counted_logged_and_yielded() -> None:
    key = "test://visible-wait"
    limiter = make(key, requests_per_second=20, burst=1)
    before = counter("inlet_http_rate_limit_wait_seconds_total", upstream=key)
    waited: list[float] = []

    async def one() -> None:
        async with limiter.slot() as w:
            waited.append(w)

    with structlog.testing.capture_logs() as logs:
        await asyncio.gather(one(), one(), one())
    assert sorted(waited)[0] == 0.0
    assert sorted(waited)[-1] >= 0.1 - EARLY  # the third waited for two intervals
    total = counter("inlet_http_rate_limit_wait_seconds_total", upstream=key) - before
    assert total == pytest.approx(sum(waited))
    assert limiter.wait_seconds == pytest.approx(sum(waited))
    lines = [e for e in logs if e["event"] == "rate limit wait"]
    assert len(lines) == 2
    assert all(e["upstream"] == key and e["seconds"] > 0 and "rate" in e["reason"] for e in lines)


# --- pauses --------------------------------------------------------------------------------------------------


async def test_pause_blocks_every_caller_including_those_already_waiting() -> None:
    key = "test://pause"
    limiter = make(key, requests_per_second=20, burst=1)
    before = counter("inlet_http_rate_limit_pauses_total", upstream=key, reason="retry_after")
    started = time.monotonic()
    queued = asyncio.create_task(grants(limiter, 5))  # one goes at once, four queue for tokens
    await asyncio.sleep(0.02)
    paused_at = time.monotonic()
    limiter.pause_for(0.3, "retry_after")
    late = asyncio.create_task(grants(limiter, 1))  # a caller arriving during the pause
    stamps = sorted(await queued) + await late
    assert stamps[0] - started < 0.02  # granted before the pause
    assert all(s >= paused_at + 0.3 - EARLY for s in stamps[1:])
    # No burst after the pause: one at expiry, then the rate again (the k-th no sooner than k intervals later).
    for k, stamp in enumerate(sorted(stamps[1:])):
        assert stamp >= paused_at + 0.3 + k / 20 - EARLY
    assert counter("inlet_http_rate_limit_pauses_total", upstream=key, reason="retry_after") - before == 1
    assert limiter.pauses == 1


async def test_no_tokens_are_saved_up_during_a_pause() -> None:
    limiter = make("test://pause-no-burst", requests_per_second=20, burst=5)  # a full bucket of five
    paused_at = time.monotonic()
    limiter.pause_for(0.1)
    stamps = sorted(await grants(limiter, 3))
    for k, stamp in enumerate(stamps):  # one at expiry, then one per interval: the saved-up five are gone
        assert stamp >= paused_at + 0.1 + k / 20 - EARLY


async def test_pause_blocks_callers_waiting_for_a_concurrency_slot_too() -> None:
    limiter = make("test://pause-gate", max_concurrency=1)
    stamps: list[float] = []

    async def holder() -> None:
        async with limiter.slot():
            await asyncio.sleep(0.1)

    async def waiter() -> None:
        async with limiter.slot():
            stamps.append(time.monotonic())

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0.02)
    paused_at = time.monotonic()
    limiter.pause_for(0.25)
    await asyncio.gather(first, second)
    assert stamps[0] >= paused_at + 0.25 - EARLY


async def test_a_shorter_pause_never_shortens_a_running_one_and_garbage_is_ignored() -> None:
    limiter = make("test://pause-extend")
    limiter.pause_for(0.4)
    limiter.pause_for(0.05)
    limiter.pause_for(-3)
    limiter.pause_for(math.nan)
    assert 0.3 < limiter.paused_seconds() <= 0.4
    assert limiter.pauses == 1
    with structlog.testing.capture_logs() as logs:
        limiter.pause_for(0.6)
        limiter.pause_for(0.1, "retry_after")
    assert limiter.paused_seconds() > 0.5
    assert limiter.pauses == 1  # one pause, extended
    assert [e["event"] for e in logs] == ["upstream rate limit pause extended", "rate limit pause already covers this"]


async def test_pause_is_logged_with_upstream_reason_and_seconds() -> None:
    limiter = make("test://pause-log")
    with structlog.testing.capture_logs() as logs:
        limiter.pause_for(0.05, "retry_after", detail="429 from GET /x")
    until = logs[0].pop("until")  # the end time, at the start of the pause
    assert abs(datetime.fromisoformat(until).timestamp() - time.time()) < 2
    assert logs == [
        {
            "event": "upstream rate limit pause",
            "upstream": "test://pause-log",
            "reason": "retry_after",
            "detail": "429 from GET /x",
            "seconds": 0.05,
            "log_level": "warning",
        }
    ]


# --- the concurrency cap -------------------------------------------------------------------------------------


async def test_concurrency_cap_holds_and_is_used_fully() -> None:
    limiter = make("test://cap", max_concurrency=3)
    in_flight = peak = 0
    order: list[int] = []

    async def one(i: int) -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            order.append(i)
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    await asyncio.gather(*(one(i) for i in range(10)))
    assert peak == 3
    assert order == list(range(10))


async def test_cancelled_waiters_give_back_nothing_they_did_not_take() -> None:
    limiter = make("test://cancel", max_concurrency=1, requests_per_second=50, burst=1)
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    async def waiter() -> None:
        async with limiter.slot():
            pass

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = [asyncio.create_task(waiter()) for _ in range(3)]
    await asyncio.sleep(0.01)
    for task in cancelled:
        task.cancel()
    release.set()
    await held
    for task in cancelled:
        with pytest.raises(asyncio.CancelledError):
            await task
    # The slot and the queue are free again: two more requests go through, one at a time.
    stamps = await asyncio.wait_for(grants(limiter, 2, hold=0.01), 1.0)
    assert len(stamps) == 2


# --- header parsing (pure) -----------------------------------------------------------------------------------

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
UNTIL_MIDNIGHT = 86_400 - NOW % 86_400  # 6400 s


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "50", "RateLimit-Reset": "30"},
            [("ratelimit", 50, 30)],
            id="ietf-split",
        ),
        pytest.param(
            {"ratelimit-remaining": "50", "ratelimit-policy": "100;w=60"},
            [("ratelimit", 50, 60)],
            id="ietf-split-window-from-policy",
        ),
        pytest.param(
            {"RateLimit-Limit": "10, 10;w=1, 50;w=60", "RateLimit-Remaining": "4"},
            [("ratelimit", 4, 1)],
            id="ietf-split-window-from-limit-list",
        ),
        pytest.param(
            {"RateLimit-Remaining": "7", "RateLimit-Reset": str(int(NOW) + 45)},
            [("ratelimit", 7, 45)],
            id="ietf-split-epoch-reset-by-magnitude",
        ),
        pytest.param(
            {"RateLimit": "limit=100, remaining=50, reset=30"}, [("ratelimit", 50, 30)], id="ietf-combined-dict"
        ),
        pytest.param(
            {"RateLimit": "limit=100, remaining=50", "RateLimit-Policy": "100;w=60"},
            [("ratelimit", 50, 60)],
            id="ietf-combined-dict-window-from-policy",
        ),
        pytest.param(
            {
                "RateLimit": '"default";r=50;t=30, "day";r=900',
                "RateLimit-Policy": '"default";q=100;w=60, "day";q=1000;w=86400',
            },
            [("ratelimit:default", 50, 30), ("ratelimit:day", 900, 86_400)],
            id="ietf-combined-named",
        ),
        pytest.param({"RateLimit": "quota;r=0;t=12"}, [("ratelimit:quota", 0, 12)], id="ietf-combined-bare-name"),
        pytest.param(
            {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(int(NOW) + 1800)},
            [("x-ratelimit", 4999, 1800)],
            id="github-epoch-seconds",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "20"},
            [("x-ratelimit", 10, 20)],
            id="x-ratelimit-delta",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": str(int(NOW * 1000) + 5000)},
            [("x-ratelimit", 10, 5)],
            id="x-ratelimit-epoch-millis",
        ),
        pytest.param(
            {"x-rate-limit-remaining": "3", "x-rate-limit-reset": str(int(NOW) + 900)},
            [("x-ratelimit", 3, 900)],
            id="x-rate-limit-spelling",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "2", "X-RateLimit-Reset-After": "1.5", "X-RateLimit-Reset": "1700000001.5"},
            [("x-ratelimit", 2, 1.5)],
            id="reset-after-wins",
        ),
        pytest.param(
            {"X-MinLimit-Remaining": "59", "X-AppMinLimit-Remaining": "9999", "X-DayLimit-Remaining": "4999"},
            [("xero:minute", 59, 60), ("xero:app-minute", 9999, 60), ("xero:day", 4999, UNTIL_MIDNIGHT)],
            id="xero",
        ),
        pytest.param(
            {
                "RateLimit-Remaining": "50",
                "RateLimit-Reset": "30",
                "X-RateLimit-Remaining": "5",
                "X-RateLimit-Reset": "60",
            },
            [("ratelimit", 50, 30), ("x-ratelimit", 5, 60)],
            id="several-families",
        ),
        pytest.param(
            {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "99999999"},
            [("x-ratelimit", 1, MAX_RESET_SECONDS)],
            id="reset-capped-at-a-day",
        ),
        # Garbage and meaningless values are ignored, never errors.
        pytest.param({"X-RateLimit-Remaining": "abc", "X-RateLimit-Reset": "10"}, [], id="non-numeric"),
        pytest.param({"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "10"}, [], id="negative"),
        pytest.param({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW) - 5)}, [], id="reset-past"),
        pytest.param({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "0"}, [], id="reset-now"),
        pytest.param({"X-RateLimit-Remaining": "5"}, [], id="no-reset-no-window"),
        pytest.param({"RateLimit-Remaining": "nan", "RateLimit-Reset": "inf"}, [], id="nan-inf"),
        pytest.param({"RateLimit-Remaining": "\u0663", "RateLimit-Reset": "1e3"}, [], id="non-ascii-digits-exponent"),
        pytest.param({"RateLimit": "limit=, remaining=x, reset=30"}, [], id="combined-garbage"),
        pytest.param({"Content-Type": "application/json"}, [], id="no-rate-limit-headers"),
    ],
)
def test_header_variants(headers: dict[str, str], expected: list[tuple[str, float, float]]) -> None:
    found = limits_from_headers(headers, NOW)
    assert [(w.window, w.remaining) for w in found] == [(name, float(r)) for name, r, _ in expected]
    assert [w.reset_seconds for w in found] == pytest.approx([float(t) for _, _, t in expected])


def test_headers_are_case_insensitive_and_httpx_headers_work() -> None:
    headers = httpx.Headers([("x-RATELIMIT-remaining", "8"), ("X-RateLimit-Reset", "16")])
    assert limits_from_headers(headers, NOW) == [WindowLimit("x-ratelimit", 8.0, 16.0)]
    assert WindowLimit("x", 8.0, 16.0).rate == 0.5


def test_xero_day_window_ends_at_the_next_utc_midnight() -> None:
    midnight = 1_699_920_000.0  # 2023-11-14 00:00:00 UTC
    for offset, expected in ((0.0, 86_400.0), (3600.0, 82_800.0), (86_399.0, 1.0)):
        (day,) = limits_from_headers({"X-DayLimit-Remaining": "100"}, midnight + offset)
        assert day.reset_seconds == pytest.approx(expected)


HEADER_NAMES = [
    "RateLimit",
    "RateLimit-Policy",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "X-MinLimit-Remaining",
    "X-DayLimit-Remaining",
    "X-AppMinLimit-Remaining",
]
# Values that look almost right are where parsers break: numbers, separators, quotes, keys, and plain noise.
FRAGMENTS = st.one_of(
    st.sampled_from(
        [
            '"',
            ",",
            ";",
            "=",
            " ",
            "\\",
            "r",
            "t",
            "w",
            "q",
            "limit",
            "remaining",
            "reset",
            "-",
            ".",
            "e",
            "inf",
            "nan",
            '"default"',
        ]
    ),
    st.integers(min_value=-(10**22), max_value=10**22).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=8),
)
VALUES = st.one_of(st.text(), st.lists(FRAGMENTS, max_size=12).map("".join))


@given(
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), VALUES, max_size=8),
    now=st.one_of(st.floats(min_value=0, max_value=4e9), st.sampled_from([math.nan, math.inf, -1.0, NOW])),
)
def test_header_parser_never_raises_and_gives_sane_windows(headers: Mapping[str, str], now: float) -> None:
    for w in limits_from_headers(headers, now):
        assert math.isfinite(w.remaining) and w.remaining >= 0
        assert math.isfinite(w.reset_seconds) and 0 < w.reset_seconds <= MAX_RESET_SECONDS
        assert math.isfinite(w.rate) and w.rate >= 0


# --- adaptive slowing ----------------------------------------------------------------------------------------


async def test_adaptive_slowing_lowers_the_rate_then_expires_at_the_reset() -> None:
    limiter = make("test://adaptive", requests_per_second=100, burst=5)
    observed_at = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        limiter.observe({"RateLimit-Remaining": "2", "RateLimit-Reset": "0.5"})
    assert limiter.current_rate() == pytest.approx(4.0)  # 2 remaining over 0.5 s
    assert any(e["event"] == "adaptive rate limit engaged" for e in logs)
    slow = sorted(await grants(limiter, 2))
    assert slow[1] - slow[0] >= 0.25 - EARLY  # spread evenly: no burst while the window binds
    await asyncio.sleep(max(0.0, observed_at + 0.5 - time.monotonic()) + 0.01)
    assert limiter.current_rate() == 100
    fast = await grants(limiter, 5)
    assert max(fast) - min(fast) < 0.1


async def test_nothing_remaining_pauses_until_the_reset() -> None:
    key = "test://exhausted"
    limiter = make(key, requests_per_second=100)
    before = counter("inlet_http_rate_limit_pauses_total", upstream=key, reason="exhausted")
    observed_at = time.monotonic()
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0.3"})
    (stamp,) = await grants(limiter, 1)
    assert stamp >= observed_at + 0.3 - EARLY
    assert counter("inlet_http_rate_limit_pauses_total", upstream=key, reason="exhausted") - before == 1


def test_the_most_restrictive_window_wins_and_the_floor_applies() -> None:
    limiter = make("test://xero", requests_per_second=10)
    limiter.observe(
        {"X-MinLimit-Remaining": "30", "X-AppMinLimit-Remaining": "9000", "X-DayLimit-Remaining": "1000000"}
    )
    assert limiter.current_rate() == pytest.approx(0.5)  # 30 per 60 s
    floored = make("test://floor", requests_per_second=10, min_requests_per_second=2)
    floored.observe({"RateLimit-Remaining": "1", "RateLimit-Reset": "100"})
    assert floored.current_rate() == 2  # 0.01/s would be, the floor says 2
    unconfigured = make("test://adaptive-only")
    unconfigured.observe({"RateLimit-Remaining": "30", "RateLimit-Reset": "10"})
    assert unconfigured.current_rate() == pytest.approx(3.0)
    # The floor never raises a configured rate.
    slow = make("test://slow", requests_per_second=0.02, min_requests_per_second=1)
    slow.observe({"RateLimit-Remaining": "1", "RateLimit-Reset": "100"})
    assert slow.current_rate() == 0.02


def test_a_new_reading_of_a_window_replaces_the_old_one() -> None:
    limiter = make("test://replace", requests_per_second=100)
    limiter.observe({"RateLimit-Remaining": "2", "RateLimit-Reset": "10"})
    assert limiter.current_rate() == pytest.approx(0.2)
    limiter.observe({"RateLimit-Remaining": "50", "RateLimit-Reset": "10"})
    assert limiter.current_rate() == pytest.approx(5.0)
    limiter.observe({"Content-Type": "text/plain"})  # a response without the headers changes nothing
    assert limiter.current_rate() == pytest.approx(5.0)


async def test_a_waiting_caller_wakes_when_a_new_reading_allows_more() -> None:
    limiter = make("test://wake", requests_per_second=100, burst=1)
    limiter.observe({"RateLimit-Remaining": "1", "RateLimit-Reset": "10"})  # 0.1/s: the next token in 10 s
    await grants(limiter, 1)
    waiting = asyncio.create_task(grants(limiter, 1))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    woken_at = time.monotonic()
    limiter.observe({"RateLimit-Remaining": "100", "RateLimit-Reset": "10"})  # 10/s
    (stamp,) = await asyncio.wait_for(waiting, 1.0)
    assert stamp - woken_at < 0.15


def test_adaptive_off_ignores_headers() -> None:
    limiter = make("test://not-adaptive", requests_per_second=10, adaptive=False)
    assert limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"}) == []
    assert limiter.current_rate() == 10
    assert limiter.paused_seconds() == 0


# --- the registry and upstream keys --------------------------------------------------------------------------


def test_registry_shares_one_limiter_per_upstream_and_the_strictest_settings_win() -> None:
    key = upstream_key("https://erp.example.com/api/v1", "key-1")
    first = limiter_for(key, RateLimitSettings(requests_per_second=10, max_concurrency=8))
    assert limiter_for(key, RateLimitSettings(requests_per_second=10, max_concurrency=8)) is first
    with structlog.testing.capture_logs() as logs:
        second = limiter_for(
            key, RateLimitSettings(requests_per_second=20, burst=2, max_concurrency=2, min_requests_per_second=0.01)
        )
    assert second is first
    assert first.settings == RateLimitSettings(
        requests_per_second=10, burst=2, max_concurrency=2, min_requests_per_second=0.01
    )
    (line,) = [e for e in logs if e["event"].startswith("upstream shared with different rate limit settings")]
    assert line["upstream"] == key and line["effective"]["requests_per_second"] == 10
    # A looser newcomer loosens nothing.
    limiter_for(key, RateLimitSettings())
    assert first.settings.requests_per_second == 10 and first.settings.max_concurrency == 2
    other = limiter_for(upstream_key("https://erp.example.com", "key-2"), RateLimitSettings())
    assert other is not first


def test_most_restrictive_settings() -> None:
    unlimited = RateLimitSettings(max_concurrency=4, adaptive=False)
    limited = RateLimitSettings(requests_per_second=3, max_concurrency=16, adaptive=False)
    merged = most_restrictive(unlimited, limited)
    assert merged == RateLimitSettings(requests_per_second=3, burst=3, max_concurrency=4, adaptive=False)
    assert most_restrictive(unlimited, unlimited).requests_per_second is None
    assert most_restrictive(unlimited, RateLimitSettings()).adaptive is True


def test_one_limiter_works_across_event_loops() -> None:
    limiter = limiter_for("test://loops", RateLimitSettings(requests_per_second=100, max_concurrency=1))
    for _ in range(3):  # a fresh loop each time, like one loop per test
        stamps = asyncio.run(grants(limiter, 3, hold=0.001))
        assert len(stamps) == 3


async def test_stricter_settings_apply_to_callers_already_queued() -> None:
    key = "test://tighten"
    limiter = limiter_for(key, RateLimitSettings(requests_per_second=1000, burst=1))
    task = asyncio.create_task(grants(limiter, 4))
    await asyncio.sleep(0)
    limiter_for(key, RateLimitSettings(requests_per_second=10, burst=1))
    stamps = sorted(await task)
    assert stamps[-1] - stamps[0] >= 0.2 - EARLY  # at least two of three intervals at the new 10/s


def test_upstream_key_hides_the_credential() -> None:
    secret = "sk_live_51HxTopSecretValue"
    key = upstream_key("https://API.Example.com/v2/orders?page=1", secret)
    assert key.startswith("https://api.example.com:443#")
    assert secret not in key and "TopSecret" not in key
    assert len(key.split("#")[1]) == 12
    assert upstream_key("https://api.example.com:443/other", secret) == key  # path and default port don't matter
    assert upstream_key("https://api.example.com", "another") != key
    assert upstream_key("http://api.example.com", None) == "http://api.example.com:80"
    assert upstream_key("https://user:pw@[::1]:8443/x", None) == "https://[::1]:8443"
    with pytest.raises(ValueError, match="must be absolute") as exc:
        upstream_key("api.example.com/path", secret)
    assert secret not in str(exc.value)
