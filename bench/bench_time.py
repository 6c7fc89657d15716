"""Benchmark core.time.normalise against datetime.fromisoformat (python bench/bench_time.py).

The values are generated here from a fixed seed, shaped after the sample feeds (Business Central
``...Z`` with 0-3 fractional digits, Synthea ``+00:00``, FHIR ``-05:00``, Xero ``/Date(ms+0000)/``,
epoch milliseconds, Tasmota naive local times with a zone), so runs are comparable. Rates, best of several
rounds, each round bounded in time, with the collector set up as ``inlet run`` does (``tune_gc``):

* normalise on the realistic mix;
* datetime.fromisoformat on the ISO-with-offset subset (the C parser alone: no UTC conversion, no
  precision, no validation);
* normalise on the same ISO subset, and its ratio to fromisoformat (target >= 30 %); the same with the Python
  function alone (what ``normalise`` is without the compiled front, core/_speedups.c). normalise keeps the
  results of offset-bearing strings (a bounded cache by string); every pass here starts with it emptied, so
  each value is new to it and this row is the cost of a value never seen before;
* normalise on the ISO subset in pages of 500, each page twice (the ERP and FHIR read loops normalise each
  record's modification time for the watermark, then the mapping does it again): the cache's effect;
* normalise on the timestamp-like strings of the real sample feeds in file order (when ``../shared/data`` or
  ``$INLET_SAMPLE_DATA`` is there), with the share the cache answered;
* three references on that subset: a bare Python function returning fromisoformat(v) (what a Python-level
  call adds); fromisoformat(v).astimezone(UTC) (the least code giving a UTC datetime, with no validation or
  precision); and a function with normalise's signature returning an Instant of fromisoformat(v) built as
  normalise builds it (no check, no UTC conversion for offsets, a fixed precision): the floor for a
  normaliser written in Python that returns an Instant.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inlet.core import time as core_time
from inlet.core.supervisor import tune_gc
from inlet.core.time import Instant, TimestampError, normalise
from tools.servers import sample_data_dir

SEED = 20240229
N = 5_000
ROUND_SECONDS = 0.25
ROUNDS = 5
ZONE = "Europe/Berlin"
PAGE = 500
TIME_LIKE = re.compile(r'"((?:[0-9]{4}-[0-9]{2}|/Date\()[^"\\]{0,40})"')


def real_values() -> list[str]:
    """Timestamp-like JSON strings of the sample feeds, file by file in order (empty without the data)."""
    root = sample_data_dir()
    if not root.is_dir():
        return []
    out: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix in (".json", ".jsonl", ".ndjson") and path.is_file() and path.stat().st_size < 20_000_000:
            out += [json.loads(f'"{raw}"') for raw in TIME_LIKE.findall(path.read_text("utf-8", errors="replace"))]
    return out


def make_values(n: int) -> tuple[list[object], list[str | None], list[str]]:
    """(mixed values, zone per value, ISO-with-offset subset)."""
    rng = random.Random(SEED)
    start = datetime(2015, 1, 1, tzinfo=UTC)
    values: list[object] = []
    zones: list[str | None] = []
    iso: list[str] = []
    for _ in range(n):
        moment = start + timedelta(seconds=rng.randrange(12 * 365 * 86400), milliseconds=rng.randrange(1000))
        ms = int(moment.timestamp() * 1000)
        kind = rng.random()
        zone: str | None = None
        value: object
        if kind < 0.30:  # Business Central lastModifiedDateTime: Z with 0-3 fractional digits
            digits = rng.choice((0, 2, 3, 3))
            frac = f".{moment.microsecond // 1000:03d}"[: digits + 1] if digits else ""
            value = moment.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"
        elif kind < 0.50:  # Synthea / FHIR: +00:00, or a local offset
            offset = timedelta(hours=rng.choice((0, 0, 1, 2, -5, -4)))
            value = moment.astimezone(timezone(offset)).isoformat(timespec="seconds")
        elif kind < 0.65:  # Xero /Date(ms+0000)/
            value = f"/Date({ms}+0000)/"
        elif kind < 0.80:  # epoch ms from a JSON number
            value = ms
        else:  # Tasmota: naive local time, zone from the integration config
            value = moment.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")
            zone = ZONE
        values.append(value)
        zones.append(zone)
        if isinstance(value, str) and zone is None and not value.startswith("/Date"):
            iso.append(value)
    return values, zones, iso


def accepted(value: str) -> bool:
    try:
        normalise(value, ZONE)
    except TimestampError:
        return False
    return True


def rates(runs: dict[str, Callable[[], int]]) -> dict[str, float]:
    """Best values/s of each run over ROUNDS rounds of about ROUND_SECONDS each.

    The runs are interleaved round by round, so a noisy neighbour slows all of them alike and the ratios
    stay meaningful on a shared machine.
    """
    best = dict.fromkeys(runs, 0.0)
    for _ in range(ROUNDS):
        for name, run in runs.items():
            done, began = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - began) < ROUND_SECONDS:
                done += run()
            best[name] = max(best[name], done / elapsed)
    return best


def main() -> None:
    values, zones, iso = make_values(N)
    pairs = list(zip(values, zones, strict=True))
    fromiso = datetime.fromisoformat

    seen = core_time._SEEN  # the fast path's cache: emptied before every pass that must not profit from it

    def mix() -> int:
        seen.clear()
        for value, zone in pairs:
            normalise(value, zone)
        return len(pairs)

    def iso_fromisoformat() -> int:
        for value in iso:
            fromiso(value)
        return len(iso)

    def iso_normalise() -> int:
        seen.clear()
        for value in iso:
            normalise(value)
        return len(iso)

    python_front = core_time._normalise

    def iso_python_front() -> int:
        seen.clear()
        for value in iso:
            python_front(value)
        return len(iso)

    pages = [iso[i : i + PAGE] for i in range(0, len(iso), PAGE)]

    def iso_twice() -> int:
        seen.clear()
        for page in pages:
            for value in page:  # the read loop's watermark
                normalise(value)
            for value in page:  # the mapping
                normalise(value)
        return 2 * len(iso)

    real = [value for value in real_values() if accepted(value)]  # the few broken ones would time the DLQ path

    def real_feeds() -> int:
        seen.clear()
        for value in real:
            normalise(value, ZONE)
        return len(real)

    # References that show where the time goes: any Python-level function around fromisoformat pays a call,
    # and turning the result into UTC (what .utc needs) costs about as much again.
    def wrapped(value: str) -> datetime:
        return fromiso(value)

    def iso_wrapped() -> int:
        for value in iso:
            wrapped(value)
        return len(iso)

    new_instant = tuple.__new__

    def bare_instant(
        value: str,
        zone: str | None = None,
        *,
        ambiguous: str = "raise",
        nonexistent: str = "raise",
        now: datetime | None = None,
        max_future_seconds: float | None = None,
        near: datetime | None = None,
    ) -> Instant:
        return new_instant(Instant, (fromiso(value), "second"))

    def iso_bare_instant() -> int:
        for value in iso:
            bare_instant(value)
        return len(iso)

    def iso_to_utc() -> int:
        for value in iso:
            fromiso(value).astimezone(UTC)
        return len(iso)

    runs = {"mix": mix, "base": iso_fromisoformat, "ours": iso_normalise, "python": iso_python_front}
    runs["twice"] = iso_twice
    runs |= {"floor": iso_wrapped, "to_utc": iso_to_utc, "bare": iso_bare_instant} | (
        {"real": real_feeds} if real else {}
    )
    tune_gc()  # the collector settings of `inlet run`, as the other benchmarks: the harness's data frozen
    r = rates(runs)
    mixed, base, ours, floor, to_utc = r["mix"], r["base"], r["ours"], r["floor"], r["to_utc"]
    print(f"python {sys.version.split()[0]}, {N} values ({len(iso)} ISO with offset), best of {ROUNDS}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    print(f"normalise, realistic mix             : {mixed:12,.0f} values/s ({1e6 / mixed:.2f} µs/value)")
    print(f"datetime.fromisoformat, ISO subset   : {base:12,.0f} values/s ({1e6 / base:.2f} µs/value)")
    print(f"normalise, ISO subset                : {ours:12,.0f} values/s ({1e6 / ours:.2f} µs/value)")
    print(f"ratio normalise / fromisoformat      : {ours / base:12.0%} (target >= 30 %)")
    py = r["python"]
    built = "built" if core_time.COMPILED else "NOT BUILT: normalise is the Python function"
    print(f"  compiled front (core/_speedups.c)     : {built}")
    print(f"  the Python function alone          : {py:12,.0f} values/s ({py / base:.0%} of fromisoformat)")
    twice = r["twice"]
    print(f"normalise, ISO pages of {PAGE} twice     : {twice:12,.0f} values/s ({twice / base:.0%} of fromisoformat)")
    if real:
        seen.clear()
        hits = 0
        for value in real:
            hits += value in seen
            normalise(value, ZONE)
        rate = r["real"]
        print(
            f"normalise, {len(real):,} real feed strings: {rate:12,.0f} values/s "
            f"({1e6 / rate:.2f} µs/value; {hits / len(real):.0%} answered by the cache)"
        )
    print("references on the ISO subset:")
    print(f"  def f(v): return fromisoformat(v)  : {floor:12,.0f} values/s ({floor / base:.0%} of fromisoformat)")
    print(f"  fromisoformat(v).astimezone(UTC)   : {to_utc:12,.0f} values/s ({to_utc / base:.0%} of fromisoformat)")
    bare = r["bare"]
    print(f"  normalise's signature, Instant only: {bare:12,.0f} values/s ({bare / base:.0%} of fromisoformat)")


if __name__ == "__main__":
    main()
