"""The data-quality monitors as people read them: ``inlet monitors``, ``GET /api/monitors`` and the console.

:func:`describe` turns one integration's :class:`~inlet.core.monitors.Monitors` into a JSON document — each
monitor's baseline next to the window in progress — and :func:`open_alerts` lists what is open across several.
Kept apart from the monitors themselves: this runs when someone asks (on the event loop, so it is bounded: at most
:data:`MAX_SERIES_SHOWN` numeric series, their window medians computed only for those), the monitors on every batch.
Timestamps are written like the status document's (UTC, ``Z``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from inlet.core.monitor_stats import quantiles

if TYPE_CHECKING:
    from inlet.core.monitors import Monitors

__all__ = ["MAX_SERIES_SHOWN", "describe", "open_alerts"]

MAX_SERIES_SHOWN: Final = 200
"""Numeric series listed per integration (``numeric_series`` says how many there are)."""
TOP_CODES: Final = 20


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def describe(m: Monitors, now: float) -> dict[str, Any]:
    """Each monitor's baseline and current window, and the open alerts."""
    from inlet.core.monitors import series_name

    s = m.settings
    start = (m.window if m.window is not None else int(now // s.window_seconds)) * s.window_seconds
    learn_end = None if m.started_at is None else m.started_at + s.learn_seconds
    listed = sorted(
        ((name, series_name(key), one) for name, series in m.numeric.items() for key, one in series.items()),
        key=lambda entry: (entry[0], entry[1]),
    )
    numeric = []
    for name, series, one in listed[:MAX_SERIES_SHOWN]:
        contract, field = name.split("|", 1)
        band = None if one.band is None else dict(zip(("median", "p05", "p95"), one.band, strict=True))
        median = quantiles(one.window)[2] if one.window else None
        numeric.append(
            {
                "contract": contract,
                "field": field,
                "series": series,
                "baseline": band,
                "windows_learnt": one.windows,
                "window": {"values": len(one.window), "median": median},
            }
        )
    shares = []
    for name, sh in m.shares.items():
        kind, contract, field = name.split("|", 2)
        base = sorted(sh.base.items(), key=lambda kv: -kv[1])[:TOP_CODES]
        counts = sorted(sh.counts.items(), key=lambda kv: -kv[1])[:TOP_CODES]
        shares.append(
            {
                "monitor": kind,
                "contract": contract,
                "field": field,
                "baseline": {k: round(v, 4) for k, v in base},
                "window": {"events": sh.total, "counts": dict(counts)},
            }
        )
    return {
        "customer": m.customer,
        "integration": m.integration,
        "learning": learn_end is None or now < learn_end,
        "learning_until": _iso(learn_end),
        "window": {"start": _iso(start), "seconds": s.window_seconds, "events": m.count},
        "volume": {
            "expected_in_window": m.expected(start, start + s.window_seconds),
            "baseline_per_hour": m.rate,
            "dispersion": max(m.burst or 1.0, 1.0),
        },
        "freshness": {
            "last_event_at": _iso(m.last_event_at),
            "lag_baseline_seconds": m.lag_base,
            "lag_window_median_seconds": quantiles(m.lags)[2] if m.lags else None,
        },
        "numeric": numeric,
        "numeric_series": len(listed),
        "shares": shares,
        "open_alerts": [a.model_dump(mode="json") for a in m.open.values()],
    }


def open_alerts(monitors: Iterable[Monitors]) -> list[dict[str, Any]]:
    """Every open alert of ``monitors``, oldest first (the status API and the console)."""
    alerts = [a for m in monitors for a in m.open.values()]
    return [a.model_dump(mode="json") for a in sorted(alerts, key=lambda a: a.observed_at)]
