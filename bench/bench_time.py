"""Benchmark core.time.normalise against datetime.fromisoformat (python bench/bench_time.py).

The values are generated here from a fixed seed, shaped after the sample feeds (Business Central
``...Z`` with 0-3 fractional digits, Synthea ``+00:00``, FHIR ``-05:00``, Xero ``/Date(ms+0000)/``,
epoch milliseconds, Tasmota naive local times with a zone), so runs are comparable. Three rates, best of
several rounds, each round bounded in time:

* normalise on the realistic mix;
* datetime.fromisoformat on the ISO-with-offset subset (the C parser alone: no UTC conversion, no
  precision, no validation);
* normalise on the same ISO subset, and its ratio to fromisoformat (target >= 50 %);
* two references on that subset: a bare Python function returning fromisoformat(v) (the floor for any
  pure-Python normaliser: on CPython 3.11 the call alone costs about as much as the C parse) and
  fromisoformat(v).astimezone(UTC) (the least code giving a UTC datetime, with no validation or precision).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inlet.core.time import normalise

SEED = 20240229
N = 5_000
ROUND_SECONDS = 0.25
ROUNDS = 5
ZONE = "Europe/Berlin"


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

    def mix() -> int:
        for value, zone in pairs:
            normalise(value, zone)
        return len(pairs)

    def iso_fromisoformat() -> int:
        for value in iso:
            fromiso(value)
        return len(iso)

    def iso_normalise() -> int:
        for value in iso:
            normalise(value)
        return len(iso)

    # References that show where the time goes: any Python-level function around fromisoformat pays a call,
    # and turning the result into UTC (what .utc needs) costs about as much again.
    def wrapped(value: str) -> datetime:
        return fromiso(value)

    def iso_wrapped() -> int:
        for value in iso:
            wrapped(value)
        return len(iso)

    def iso_to_utc() -> int:
        for value in iso:
            fromiso(value).astimezone(UTC)
        return len(iso)

    r = rates(
        {"mix": mix, "base": iso_fromisoformat, "ours": iso_normalise, "floor": iso_wrapped, "to_utc": iso_to_utc}
    )
    mixed, base, ours, floor, to_utc = r["mix"], r["base"], r["ours"], r["floor"], r["to_utc"]
    print(f"python {sys.version.split()[0]}, {N} values ({len(iso)} ISO with offset), best of {ROUNDS}")
    print(f"normalise, realistic mix             : {mixed:12,.0f} values/s ({1e6 / mixed:.2f} µs/value)")
    print(f"datetime.fromisoformat, ISO subset   : {base:12,.0f} values/s ({1e6 / base:.2f} µs/value)")
    print(f"normalise, ISO subset                : {ours:12,.0f} values/s ({1e6 / ours:.2f} µs/value)")
    print(f"ratio normalise / fromisoformat      : {ours / base:12.0%} (target >= 50 %)")
    print("references on the ISO subset:")
    print(f"  def f(v): return fromisoformat(v)  : {floor:12,.0f} values/s ({floor / base:.0%} of fromisoformat)")
    print(f"  fromisoformat(v).astimezone(UTC)   : {to_utc:12,.0f} values/s ({to_utc / base:.0%} of fromisoformat)")


if __name__ == "__main__":
    main()
