"""Counters of what every integration did, as Prometheus metrics and as plain numbers for the CLI.

:class:`Stats` is the per-integration tally the supervisor prints and tests assert on; every update
also moves the matching Prometheus counter, so the two never disagree.

Accounting invariant (per batch and in total): ``records_in == records_mapped + dlq + filtered``,
where a mapped record produced one or more events (``events_out`` counts those events).
"""

from __future__ import annotations

from collections import Counter as _Tally
from dataclasses import dataclass, field

from prometheus_client import Counter

__all__ = ["BatchCounts", "Stats"]

_LABELS = ("customer", "integration")
RECORDS_IN = Counter("inlet_records_in", "Source records read and handled", _LABELS)
EVENTS_OUT = Counter("inlet_events_out", "Events durably accepted by the sink", _LABELS)
DLQ = Counter("inlet_dlq_records", "Records sent to the dead-letter queue", (*_LABELS, "stage"))
FILTERED = Counter("inlet_filtered_records", "Records left out on purpose", (*_LABELS, "reason"))
BATCHES = Counter("inlet_batches", "Batches committed", _LABELS)
RESTARTS = Counter("inlet_restarts", "Integration restarts after an error", (*_LABELS, "error"))


@dataclass
class BatchCounts:
    """What one batch turned into."""

    records_in: int = 0
    records_mapped: int = 0
    events_out: int = 0
    dlq: _Tally[str] = field(default_factory=_Tally)  # by stage
    filtered: _Tally[str] = field(default_factory=_Tally)  # by reason
    drift: int = 0  # upstream drift changes alerted (not records: a drifted record is still counted once)

    def balanced(self) -> bool:
        """The accounting invariant: every record is an event source, a DLQ record or filtered."""
        return self.records_in == self.records_mapped + self.dlq.total() + self.filtered.total()


@dataclass
class Stats:
    """Running totals of one integration (committed batches only)."""

    customer: str
    integration: str
    totals: BatchCounts = field(default_factory=BatchCounts)
    batches: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_position: object = None
    healthy: bool = True
    interrupted: str | None = None
    """Set when a stop ended the run while the integration was not caught up in a way the books cannot show
    (waiting out an upstream pause): the run summary then does not call it balanced."""

    def add(self, counts: BatchCounts) -> None:
        """Add a committed batch."""
        t = self.totals
        t.records_in += counts.records_in
        t.records_mapped += counts.records_mapped
        t.events_out += counts.events_out
        t.dlq.update(counts.dlq)
        t.filtered.update(counts.filtered)
        t.drift += counts.drift
        self.batches += 1
        self.healthy = True
        labels = (self.customer, self.integration)
        RECORDS_IN.labels(*labels).inc(counts.records_in)
        EVENTS_OUT.labels(*labels).inc(counts.events_out)
        BATCHES.labels(*labels).inc()
        for stage, n in counts.dlq.items():
            DLQ.labels(*labels, stage).inc(n)
        for reason, n in counts.filtered.items():
            FILTERED.labels(*labels, reason).inc(n)

    def restarted(self, error: BaseException) -> None:
        """Count a restart after ``error``."""
        self.restarts += 1
        self.healthy = False
        self.last_error = f"{type(error).__name__}: {error}"
        RESTARTS.labels(self.customer, self.integration, type(error).__name__).inc()
