"""Gauges computed when Prometheus scrapes: ``inlet_lag_seconds``, ``inlet_stalled_seconds`` and ``inlet_ready``.

The counters of :mod:`core.metrics` move with every batch; these are states, so they are read from the running
supervisor at scrape time instead of being kept up to date on the hot path:

- ``inlet_lag_seconds{customer,integration}`` — now minus the newest source time among the events delivered (the
  API's ``lag_seconds``); no sample while an integration has delivered no event with a time.
- ``inlet_stalled_seconds{customer,integration}`` — seconds since the integration last committed a batch or last found
  its source caught up (:class:`core.progress.IntegrationProgress`). Healthy, it stays below the integration's
  ``poll_interval_seconds`` plus the time of one read pass; it grows while the integration fails, waits out a
  pause or is stuck. A push source (MQTT) commits only when messages arrive, so a quiet source shows lag too.
- ``inlet_ready{customer,integration}`` — 1 while the integration is healthy, 0 while it backs off after an error,
  waits out an upstream pause or was stopped for good: ``/readyz``, per integration.

In a fleet each replica reports only the integrations it runs (none of those in state ``elsewhere``), so an
integration's samples come from one replica at a time. A supervisor is watched from the start of its run to its
end (:func:`watch`, :func:`unwatch`); with none running, the gauges have no samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inlet.core.progress import IntegrationProgress

__all__ = ["LAG", "READY", "STALLED", "unwatch", "watch"]

LAG = "inlet_lag_seconds"
STALLED = "inlet_stalled_seconds"
READY = "inlet_ready"
_LABELS = ["customer", "integration"]


class Watched(Protocol):
    """What the gauges read of a running supervisor."""

    @property
    def progress(self) -> Mapping[str, IntegrationProgress]:
        """Per integration key: what it has done so far."""
        ...

    def status(self) -> dict[str, str | None]:
        """Per integration key: None when healthy, else why not."""
        ...


_watched: list[Watched] = []
_lock = threading.Lock()  # the scrape runs in the probes' thread


def watch(supervisor: Watched) -> None:
    """Report ``supervisor``'s integrations from now on."""
    with _lock:
        _watched.append(supervisor)


def unwatch(supervisor: Watched) -> None:
    """Stop reporting ``supervisor``'s integrations (its run ended)."""
    with _lock:
        if supervisor in _watched:
            _watched.remove(supervisor)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(LAG, "Now minus the newest source time among the events delivered", labels=_LABELS),
        GaugeMetricFamily(
            STALLED,
            "Seconds since the integration last committed a batch or found its source caught up",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            READY, "1 while the integration is healthy, 0 while failing, paused or stopped", labels=_LABELS
        ),
    )


class _Collector(Collector):
    def collect(self) -> Iterator[Metric]:
        lag, stalled, ready = _families()
        now, wall = time.monotonic(), datetime.now(UTC)
        with _lock:
            watched = list(_watched)
        for supervisor in watched:
            status = supervisor.status()
            for key, p in list(supervisor.progress.items()):
                if p.stats.state == "elsewhere":  # another replica of the fleet runs it, and reports it
                    continue
                labels = [p.stats.customer, p.stats.integration]
                if (newest := p.stats.newest_event_time) is not None:
                    lag.add_metric(labels, round((wall - newest).total_seconds(), 3))
                stalled.add_metric(labels, round(p.lag_seconds(now), 3))
                ready.add_metric(labels, 0.0 if status.get(key) else 1.0)
        yield lag
        yield stalled
        yield ready

    def describe(self) -> Iterator[Metric]:
        yield from _families()


REGISTRY.register(_Collector())
