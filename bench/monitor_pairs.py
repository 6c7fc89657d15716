"""What the data-quality monitors (``core.monitors``) cost per event: shared by ``bench_mqtt`` and ``bench_fhir_bulk``.

Each of those benchmarks runs its own measured inlet pass (the real ``Pipeline`` into a real Kafka) once with
monitors and once without, in pairs whose order alternates (:func:`order`: on-off, off-on, ...), so a neighbour's
load that drifts during the run hits both sides alike; :func:`overhead` reduces the pairs to CPU µs per event on
each side and the ratio on / off of every pair. Off is ``Pipeline(monitors=None)``, what ``monitors: {enabled:
false}`` makes the supervisor do; on is a :class:`Monitors` as the supervisor builds it (the integration's zone,
default :class:`MonitorSettings`), restored from a state learnt on the benchmark's own events
(:func:`learnt_state`), so the monitors hold a running integration's series, not a fresh one's (their state is
written beside the position once per window, so not within a benchmark's short drains). The benches build them
once the harness's data is frozen out of the collector (the supervisor builds them after ``tune_gc``'s freeze), so
the collector walks them as in ``inlet run``. The supervisor's tick between batches (at most every 30 s) is per
integration, not per event, and is left out. :func:`observe_profile` says where ``observe``'s own time goes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Sequence
from typing import Any

import orjson

from inlet.contracts.base import Contract
from inlet.core.config import MonitorSettings
from inlet.core.monitors import Monitors

__all__ = [
    "LEARN_EVENTS",
    "learnt_state",
    "observe_profile",
    "order",
    "overhead",
    "overhead_lines",
    "passes_line",
    "state_bytes",
]

LEARN_EVENTS = 30_000
"""Events the learnt state is taught in each of its windows: enough for a numeric series to get the values it needs
to be judged (``numeric_min_count``, 5) even when, as in ``bench_mqtt``, the events cycle through 4,000 series."""
PROFILE_EVENTS = 10_000


def order(pair: int) -> tuple[bool, bool]:
    """Monitors on first in even pairs, off first in odd ones."""
    return (True, False) if pair % 2 == 0 else (False, True)


def learnt_state(
    customer: str,
    integration: str,
    zone: str,
    models: Sequence[Contract],
    settings: MonitorSettings,
    *,
    windows: int = 3,
    batch: int = 500,
) -> dict[str, Any]:
    """The state of monitors that watched ``models`` (the first :data:`LEARN_EVENTS`) in each of ``windows`` windows
    before now: baselines of volume, lag, categories, nulls and the numeric series that got enough values.

    Still learning (a week by default), so restored monitors raise no alert and a pass's events stay its own."""
    teacher = Monitors(customer, integration, settings, zone=zone)
    models = models[:LEARN_EVENTS]
    now = time.time()
    for k in range(windows, 0, -1):
        for i in range(0, len(models), batch):
            teacher.observe(models[i : i + batch], now=now - k * settings.window_seconds)
    teacher.tick(now=now)
    return teacher.saved


def state_bytes(state: dict[str, Any]) -> int:
    """The monitors' share of every stored position, as the checkpoint store writes it (JSON)."""
    return len(orjson.dumps(state))


def observe_profile(monitors: Monitors, batches: Sequence[Sequence[Contract]], top: int = 10) -> str:
    """cProfile of ``monitors.observe`` over the first :data:`PROFILE_EVENTS` events of ``batches``: the top
    functions by own time (the profiler's overhead inflates calls, so compare shares, not µs)."""
    profiler = cProfile.Profile()
    seen = 0
    profiler.enable()
    for b in batches:
        monitors.observe(b)
        seen += len(b)
        if seen >= PROFILE_EVENTS:
            break
    profiler.disable()
    buf = io.StringIO()
    buf.write(f"cProfile of Monitors.observe over {seen} events, top {top} by own time\n")
    pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def _spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "each": [round(v, digits) for v in values],
    }


def overhead(pairs: Sequence[tuple[float, float]], events_per_unit: float) -> dict[str, Any]:
    """``pairs`` of (on, off) CPU µs per unit (a message, a resource), in run order: each side's median and range,
    per unit and per event, and the ratio on / off of every pair with its median and range (the headline: the
    pairs' own ratios, not a ratio of medians)."""
    on, off = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "pairs": len(pairs),
        "events_per_unit": round(events_per_unit, 3),
        "on_cpu_us": _spread(on),
        "off_cpu_us": _spread(off),
        "on_cpu_us_per_event": _spread([v / events_per_unit for v in on], 2),
        "off_cpu_us_per_event": _spread([v / events_per_unit for v in off], 2),
        "ratio_on_off": _spread([a / b for a, b in pairs], 3),
    }


def overhead_lines(o: dict[str, Any], unit: str) -> list[str]:
    """The overhead as a few lines for a benchmark's table."""

    def side(name: str, key: str) -> str:
        s, e = o[f"{key}_cpu_us"], o[f"{key}_cpu_us_per_event"]
        return (
            f"  {name:<4} CPU µs per {unit}: median {s['median']} ({s['min']}-{s['max']}); per event "
            f"{e['median']} ({e['min']}-{e['max']})"
        )

    r = o["ratio_on_off"]
    verdict = "under" if r["median"] < 1.10 else "NOT under"
    return [
        side("on", "on"),
        side("off", "off"),
        f"  on / off per pair: {', '.join(f'{x:.3f}' for x in r['each'])}; median {r['median']:.3f} "
        f"({r['min']:.3f}-{r['max']:.3f}): {(r['median'] - 1) * 100:+.1f} % CPU per event, {verdict} the 10 % goal",
    ]


def passes_line(passes: Sequence[dict[str, Any]], rate_key: str, label: str) -> str:
    """Each pass's rate in run order, on or off, and the cores other processes used meanwhile (the load)."""
    rates = ", ".join(f"{'on' if p['monitors'] else 'off'} {p[rate_key]:,}" for p in passes)
    others = ", ".join(f"{p['others_cores']:.2f}" for p in passes)
    return f"  {label} in run order: {rates}; cores used by other processes: {others}"
