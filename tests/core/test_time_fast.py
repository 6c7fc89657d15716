"""core.time's fast paths and its cache give exactly what the strict (checked) path gives, byte for byte.

``normalise`` reads the common extended ISO shapes with C ``fromisoformat``, epoch s/ms integers with one
``timedelta``, and keeps aware results by string; ``_strict`` is the full path. Both are compared on generated
values (valid, near-valid and mutated spellings, integers of every magnitude) and on every timestamp-like string
of the real sample feeds (read in place via ``sample_data``): the same Instant (UTC value, tzinfo, precision,
repr) or the same error class and message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inlet.core import time as core_time
from inlet.core.time import Instant, TimestampError, normalise

ZONES = (None, "Europe/Berlin", "America/New_York", "UTC", "Mars/Olympus")


def outcome(fn: object, value: object, zone_name: str | None, **kwargs: object) -> tuple[object, ...]:
    """What a call gives, as comparable data: the Instant's every detail, or the error's class and message."""
    try:
        got = fn(value, zone_name, **kwargs)  # type: ignore[operator]
    except TimestampError as exc:
        return ("error", type(exc), str(exc))
    assert isinstance(got, Instant)
    return ("ok", repr(got), got.utc.tzinfo is UTC, got.utc.utcoffset(), got.utc.fold, got.isoformat())


def strict(value: object, zone_name: str | None, **kwargs: object) -> Instant:
    """The checked path alone: no fast path, no cache."""
    return core_time._strict(
        value,
        zone_name,
        kwargs.get("ambiguous", "raise"),  # type: ignore[arg-type]
        kwargs.get("nonexistent", "raise"),  # type: ignore[arg-type]
        kwargs.get("now"),  # type: ignore[arg-type]
        kwargs.get("max_future_seconds"),  # type: ignore[arg-type]
        None,
        kwargs.get("near"),  # type: ignore[arg-type]
    )


# Both fronts: the compiled one (core/_speedups.c, what ``normalise`` is when built) and the Python function it
# hands every other value to, which is also what an installation without a C compiler uses.
FRONTS = (normalise, core_time._normalise) if core_time.COMPILED else (normalise,)


def assert_same(value: object, zone_name: str | None = None, **kwargs: object) -> None:
    expected = outcome(strict, value, zone_name, **kwargs)
    for front in FRONTS:
        core_time._SEEN.clear()
        assert outcome(front, value, zone_name, **kwargs) == expected, (front, value)  # cold: the fast path
        assert outcome(front, value, zone_name, **kwargs) == expected, (front, value)  # warm: the cache, if kept


def test_the_compiled_front_is_built_in_ci() -> None:
    """CI installs with a C compiler, so the compiled front must be there (a missing one is a failure there)."""
    if os.environ.get("CI") == "true":
        assert core_time.COMPILED, "core/_speedups.c was not built by `pip install -e .` (see setup.py)"
    front = getattr(core_time, "_speedups", None)
    assert normalise is (front.normalise if core_time.COMPILED and front is not None else core_time._normalise)


@pytest.mark.skipif(not core_time.COMPILED, reason="the compiled front is not built here (CI requires it)")
def test_the_compiled_front_hands_on_what_it_does_not_answer() -> None:
    """Calls the C front does not answer behave exactly as the Python function: keyword errors, the future bound."""
    value = "2024-02-29T10:20:30.123+01:00"
    for args, kwargs in (((value, "UTC", "raise"), {}), ((value, "UTC"), {"zone": "UTC"}), ((value,), {"zonee": 1})):
        with pytest.raises(TypeError) as compiled:
            normalise(*args, **kwargs)
        with pytest.raises(TypeError) as python:
            core_time._normalise(*args, **kwargs)
        assert str(compiled.value) == str(python.value)
    now = datetime(2024, 2, 29, 9, 20, tzinfo=UTC)
    core_time._SEEN.clear()
    with pytest.raises(TimestampError, match="no later than 1 s"):
        normalise(value, now=now, max_future_seconds=1)
    got = normalise(value, "Europe/Berlin", ambiguous="latest", nonexistent="snap_forward", near=now, now=None)
    assert got == core_time._normalise(value) and core_time._SEEN[value] is got  # the cache is the one dict
    assert normalise(value, max_future_seconds=None) is got


offsets = st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def iso_like(draw: st.DrawFn) -> str:
    """Extended ISO date-times in every shape the fast path reads, and their near misses."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    text = moment.isoformat(sep=draw(st.sampled_from("Tt X")), timespec=draw(st.sampled_from(["minutes", "seconds"])))
    if draw(st.booleans()):
        text += draw(st.sampled_from(".,")) + draw(st.text("0123456789", min_size=0, max_size=11))
    tz = draw(
        st.one_of(
            st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+18:00", "-18:00", "+18:01", "+0100", "+01"]),
            offsets.map(lambda tz: datetime(2000, 1, 1, tzinfo=tz).isoformat()[19:]),
        )
    )
    text += tz
    if draw(st.booleans()):  # mutate: replace or insert characters anywhere
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            char = draw(st.sampled_from("0123456789-:.,+TtZz /W60249x\u0663"))
            text = text[:at] + char + text[at + draw(st.integers(0, 1)) :]
    return text


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=iso_like(),
    zone_name=st.sampled_from(ZONES),
    ambiguous=st.sampled_from(["raise", "earliest", "latest"]),
    nonexistent=st.sampled_from(["raise", "shift_forward", "snap_backward"]),
)
def test_fast_path_equals_checked_path_on_generated_values(
    value: str, zone_name: str | None, ambiguous: str, nonexistent: str
) -> None:
    assert_same(value, zone_name, ambiguous=ambiguous, nonexistent=nonexistent)


@settings(max_examples=1000, deadline=None)
@given(value=st.text("0123456789-:.,+TtZz ", min_size=16, max_size=36), zone_name=st.sampled_from(ZONES))
def test_fast_path_equals_checked_path_on_arbitrary_text(value: str, zone_name: str | None) -> None:
    assert_same(value, zone_name)


@settings(max_examples=2000, deadline=None)
@given(
    value=st.one_of(
        st.integers(),
        st.integers(-(10**15), 10**15),
        st.sampled_from([0, 10**11 - 1, 10**11, 10**14 - 1, 10**14, -1, 253402300799, 253402300800]),
        st.booleans(),
    ),
    zone_name=st.sampled_from(ZONES),
)
def test_epoch_int_fast_path_equals_checked_path(value: int, zone_name: str | None) -> None:
    assert_same(value, zone_name)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert outcome(normalise, value, zone_name, now=now, max_future_seconds=60) == outcome(
        strict, value, zone_name, now=now, max_future_seconds=60
    )


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    seconds=st.floats(-1e6, 1e6),
)
def test_the_future_bound_is_checked_on_every_call(moment: datetime, seconds: float) -> None:
    """A kept result is reused, the bound is not: the same string passes or fails by the ``now`` given."""
    text = moment.isoformat().replace("+00:00", "Z")
    now = moment + timedelta(seconds=seconds)
    for _ in range(2):
        assert outcome(normalise, text, None, now=now, max_future_seconds=0) == outcome(
            strict, text, None, now=now, max_future_seconds=0
        )
    assert normalise(text) == strict(text, None)


def test_the_cache_is_bounded_and_keeps_only_aware_successes() -> None:
    core_time._SEEN.clear()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(core_time._SEEN_MAX + 10):
        normalise((start + timedelta(seconds=i)).isoformat())
    assert 0 < len(core_time._SEEN) <= core_time._SEEN_MAX
    core_time._SEEN.clear()
    normalise("2024-02-29T10:20:30", "Europe/Berlin")  # local: zone-dependent, not kept
    with pytest.raises(TimestampError):
        normalise("2024-02-29T25:20:30Z")
    assert not core_time._SEEN
    normalise("20240229T102030", "Europe/Berlin")  # local on the strict path: not kept either
    assert not core_time._SEEN
    for value in ("2024-02-29T10:20:30+01:00", "20240229T102030+0100", "/Date(0)/", "1700000000"):
        normalise(value, "Europe/Berlin")  # an offset (fast or strict path), /Date()/, an epoch: kept
    assert list(core_time._SEEN) == ["2024-02-29T10:20:30+01:00", "20240229T102030+0100", "/Date(0)/", "1700000000"]


# --- real values from the sample feeds ------------------------------------------------------------------------

TIME_LIKE = re.compile(r'"((?:[0-9]{4}-[0-9]{2}|/Date\()[^"\\]{0,40})"')


def real_values(root: Path) -> Iterator[str]:
    """Every JSON string in the sample feeds that starts like a date (``YYYY-MM``) or ``/Date(``."""
    for path in sorted(root.rglob("*")):
        if path.suffix in (".json", ".jsonl", ".ndjson") and path.is_file() and path.stat().st_size < 20_000_000:
            for raw in TIME_LIKE.findall(path.read_text("utf-8", errors="replace")):
                yield json.loads(f'"{raw}"')


def test_fast_path_equals_checked_path_on_real_values(sample_data: Path) -> None:
    values = sorted(set(real_values(sample_data)))
    assert len(values) > 1000, len(values)
    shapes = {(v[-1] == "Z", len(v)) for v in values}
    assert (True, 20) in shapes and (True, 24) in shapes and (False, 25) in shapes  # Z, Z + ms, ±HH:MM
    for value in values:
        for zone_name in (None, "Europe/Berlin"):
            assert_same(value, zone_name)
