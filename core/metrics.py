"""Counters of what every integration did, as Prometheus metrics and as plain numbers for the CLI.

:class:`Stats` is the per-integration tally the supervisor prints and tests assert on; every update
also moves the matching Prometheus counter, so the two never disagree.

Accounting invariant (per batch and in total): ``records_in == records_mapped + dlq + filtered``,
where a mapped record produced one or more events (``events_out`` counts those events).
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter

__all__ = [
    "DLQ_REASON_KEYS",
    "DLQ_SAMPLE_BYTES",
    "OTHER_REASON",
    "REASON_MESSAGE_CHARS",
    "RECENT_DLQ",
    "BatchCounts",
    "DlqSample",
    "Reason",
    "Stats",
    "dlq_reason",
]

Reason = tuple[str, str, str]
"""Why a record went to the DLQ: ``(stage, error type, message)``."""
DLQ_REASON_KEYS = 100
"""How many distinct reasons an integration's totals keep; the rest count under :data:`OTHER_REASON`."""
OTHER_REASON: Reason = ("*", "*", "other reasons")
REASON_MESSAGE_CHARS = 300
"""A reason's message is kept to this many characters (a DLQ header keeps 4 KiB of it)."""


def dlq_reason(stage: str, error_type: str, message: str) -> Reason:
    """The reason key of one DLQ record, its message bounded."""
    if len(message) > REASON_MESSAGE_CHARS:
        message = message[: REASON_MESSAGE_CHARS - 1] + "…"
    return (stage, error_type, message)


RECENT_DLQ = 20
"""How many of its latest DLQ records an integration keeps in memory for ``core.status`` (a ring buffer)."""
DLQ_SAMPLE_BYTES = 8192
"""How much of a DLQ record's payload that ring buffer keeps (the status shows a redacted preview of it)."""
_RATE_SAMPLES = 62  # one per second at most: the events-per-second window of core.status


@dataclass(slots=True)
class DlqSample:
    """One recent DLQ record, for the status page: when, why, and the start of its payload (not redacted yet)."""

    at: float
    stage: str
    error_type: str
    message: str
    payload: bytes


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
    reasons: _Tally[Reason] = field(default_factory=_Tally)  # by (stage, error type, message); per DLQ record
    samples: list[DlqSample] = field(default_factory=list)  # the batch's DLQ records, at most RECENT_DLQ
    drifts: list[dict[str, Any]] = field(default_factory=list)  # the batch's drift alerts (core.status)

    def sample(self, stage: str, error_type: str, message: str, payload: bytes) -> None:
        """Keep one DLQ record for the status page (the last :data:`RECENT_DLQ` of the batch stay)."""
        if len(self.samples) >= RECENT_DLQ:
            del self.samples[0]
        self.samples.append(DlqSample(time.time(), stage, error_type, message[:4096], payload[:DLQ_SAMPLE_BYTES]))

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
    state: str = "stopped"
    """What the supervisor does with it (``core.status``): running, backing_off, failed, paused, caught_up, stopped;
    in a fleet also elsewhere (another replica runs it) and fenced."""
    last_success: float | None = None
    """Unix time of the last committed batch."""
    newest_event_time: datetime | None = None
    """The newest event time (CloudEvents ``time``) among committed batches' last events; None: none seen."""
    recent_dlq: deque[DlqSample] = field(default_factory=lambda: deque(maxlen=RECENT_DLQ))
    recent_drift: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_DLQ))
    rate_samples: deque[tuple[float, int]] = field(
        default_factory=lambda: deque([(time.monotonic(), 0)], maxlen=_RATE_SAMPLES)
    )
    """``(monotonic time, events_out)``, at most one a second: the events-per-second window of ``core.status``."""

    def add(self, counts: BatchCounts) -> None:
        """Add a committed batch."""
        t = self.totals
        t.records_in += counts.records_in
        t.records_mapped += counts.records_mapped
        t.events_out += counts.events_out
        t.dlq.update(counts.dlq)
        t.filtered.update(counts.filtered)
        t.drift += counts.drift
        for why, n in counts.reasons.items():  # capped: messages may name records, so keys need not repeat
            if why in t.reasons or len(t.reasons) < DLQ_REASON_KEYS:
                t.reasons[why] += n
            else:
                t.reasons[OTHER_REASON] += n
        self.batches += 1
        self.healthy = True
        self.last_success = time.time()
        if counts.samples:
            self.recent_dlq.extend(counts.samples)
        if counts.drifts:
            self.recent_drift.extend(counts.drifts)
        now = time.monotonic()
        if now - self.rate_samples[-1][0] >= 1.0:
            self.rate_samples.append((now, t.events_out))
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
