"""Progress of long reads (a backfill, a bulk export): what each integration has done so far, and how it is shown.

Every integration the supervisor runs has an :class:`IntegrationProgress`. Most of it is read, not reported: the
records, events and batches are the integration's :class:`~core.metrics.Stats`, which the pipeline keeps anyway.
What only the reading code knows comes through cheap hooks that find the current integration in a context
variable (set in the integration's own task by :func:`enter`, so they cost nothing — and do nothing — outside a
supervised run):

- :func:`page` — one more page of a listing read (``core.pagination.paginate`` calls it, so every FHIR search and
  OData first sync counts its pages);
- :func:`report` — a connector's own state: a ``phase`` ("waiting for the export"), ``done`` of ``total``
  ``unit`` (files), bytes, a ``note`` from the upstream (a bulk export's ``X-Progress``);
- :func:`committed` — called by the pipeline per committed batch: the time of the last progress (the lag gauge,
  :mod:`core.gauges`) and the position bound to the integration's log lines.

Hooks are per page, per file or per batch, never per record. Two views show it: :class:`RichView`, progress bars
on a terminal, and :class:`LogView`, a structured ``progress`` line per integration every ``interval_seconds``
(and a last one when the run ends) for logs that are not a terminal. ``inlet run --once`` picks one.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from inlet.core.logging import bind_integration, bind_position
from inlet.core.metrics import Stats

__all__ = [
    "IntegrationProgress",
    "LogView",
    "ProgressView",
    "RichView",
    "caught_up",
    "committed",
    "current",
    "enter",
    "page",
    "report",
    "show",
    "view_for",
]

log = structlog.get_logger("inlet.progress")

_current: ContextVar[IntegrationProgress | None] = ContextVar("inlet_progress", default=None)


@dataclass
class IntegrationProgress:
    """What one integration has done so far; counts come from its ``stats``."""

    key: str
    stats: Stats
    phase: str = "starting"
    done: int | None = None
    total: int | None = None
    unit: str = ""
    bytes: int = 0
    pages: int = 0
    note: str | None = None
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    """Monotonic time of the last committed batch or of the last time the source was found caught up."""
    finished: bool = False

    def caught_up(self) -> None:
        """The integration has read everything its source had (a pull source's pass ended)."""
        self.last_progress = time.monotonic()
        self.phase, self.note, self.done, self.total = "caught up", None, None, None

    def lag_seconds(self, now: float | None = None) -> float:
        """Seconds since the last committed batch or the last caught-up pass (:mod:`core.gauges`)."""
        return max(0.0, (time.monotonic() if now is None else now) - self.last_progress)

    def state(self) -> str:
        """The phase, or that the integration is failing (its error's type: the message may be long)."""
        s = self.stats
        if not s.healthy and s.last_error and not self.finished:
            return f"failing ({s.last_error.split(':', 1)[0]}), restarting"
        return self.phase

    def fields(self) -> dict[str, Any]:
        """The counts and state as log fields (only what is known)."""
        t = self.stats.totals
        out: dict[str, Any] = {
            "phase": self.state(),
            "records": t.records_in,
            "events": t.events_out,
            "batches": self.stats.batches,
        }
        if t.dlq:
            out["dlq"] = t.dlq.total()
        if self.pages:
            out["pages"] = self.pages
        if self.total is not None:
            out.update(done=self.done or 0, total=self.total, unit=self.unit)
        if self.bytes:
            out["bytes"] = self.bytes
        if self.note:
            out["note"] = self.note
        out["seconds"] = round(time.monotonic() - self.started, 1)
        return out

    def detail(self) -> str:
        """One line for a progress bar: the state, then the counts that are not zero."""
        t = self.stats.totals
        parts = [self.state(), f"{t.records_in:,} records", f"{t.events_out:,} events"]
        if t.dlq:
            parts.append(f"{t.dlq.total():,} DLQ")
        if self.pages:
            parts.append(f"{self.pages:,} pages")
        if self.total is not None:
            parts.append(f"{self.done or 0:,}/{self.total:,} {self.unit}".rstrip())
        if self.bytes:
            parts.append(_size(self.bytes))
        if self.note:
            parts.append(self.note)
        return " · ".join(parts)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


# --- hooks (cheap: a context variable look-up; nothing outside a supervised integration) ----------------------


def current() -> IntegrationProgress | None:
    """The progress of the integration whose task this is, if any."""
    return _current.get()


def enter(
    progress: IntegrationProgress, *, customer: str, integration: str, contract: str | None, log_level: str | None
) -> None:
    """At the top of an integration's task: its progress for the hooks, its names and level for its log lines."""
    _current.set(progress)
    progress.phase = "reading"
    bind_integration(customer, integration, contract=contract, log_level=log_level)


def page() -> None:
    """One more page of a listing read."""
    p = _current.get()
    if p is not None:
        p.pages += 1


def report(
    *,
    phase: str | None = None,
    done: int | None = None,
    total: int | None = None,
    unit: str | None = None,
    bytes_done: int | None = None,
    note: str | None = None,
) -> None:
    """A connector's state: only the arguments given change (``note=""`` clears the note)."""
    p = _current.get()
    if p is None:
        return
    if phase is not None:
        p.phase = phase
    if done is not None:
        p.done = done
    if total is not None:
        p.total = total
    if unit is not None:
        p.unit = unit
    if bytes_done is not None:
        p.bytes = bytes_done
    if note is not None:
        p.note = note or None


def caught_up() -> None:
    """The pipeline's pass ended with the source caught up (per pass)."""
    p = _current.get()
    if p is not None:
        p.caught_up()
        log.debug("caught up", **p.fields())


def committed(position: object) -> None:
    """The pipeline committed a batch at ``position`` (per batch)."""
    p = _current.get()
    if p is not None:  # a supervised integration (not a replay or a test's own pipeline)
        p.last_progress = time.monotonic()
        if p.phase == "caught up":  # the next pass of a daemon
            p.phase = "reading"
        bind_position(position)


# --- views ------------------------------------------------------------------------------------------------------


class ProgressView(Protocol):
    """How progress is shown: refreshed every ``tick_seconds`` by the supervisor while it runs."""

    tick_seconds: float

    def start(self, items: Iterable[IntegrationProgress]) -> None:
        """Before the integrations start."""

    def refresh(self, items: Iterable[IntegrationProgress]) -> None:
        """Every ``tick_seconds``."""

    def stop(self, items: Iterable[IntegrationProgress]) -> None:
        """When the run ends (before the summary)."""


class LogView:
    """A ``progress`` log line (info) per running integration every ``interval_seconds``, and a last one each at
    the end: for logs that are not a terminal."""

    tick_seconds = 1.0

    def __init__(self, interval_seconds: float = 10.0) -> None:
        self.interval_seconds = interval_seconds
        self._last = time.monotonic()

    def start(self, items: Iterable[IntegrationProgress]) -> None:
        self._last = time.monotonic()

    def refresh(self, items: Iterable[IntegrationProgress]) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_seconds:
            return
        self._last = now
        for p in items:
            if not p.finished:
                self._line(p)

    def stop(self, items: Iterable[IntegrationProgress]) -> None:
        for p in items:
            self._line(p, final=True)

    @staticmethod
    def _line(p: IntegrationProgress, *, final: bool = False) -> None:
        extra = {"final": True} if final else {}
        log.info("progress", customer=p.stats.customer, integration=p.stats.integration, **p.fields(), **extra)


class RichView:
    """A progress bar per integration on the terminal (stderr): a bar where a total is known (bulk export files),
    a pulse where not; records, events, pages, bytes and the connector's phase beside it. Log lines print above."""

    tick_seconds = 0.25

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(finished_text="✓"),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console or Console(stderr=True),
            auto_refresh=False,
            redirect_stdout=False,
        )
        self._tasks: dict[str, Any] = {}

    def start(self, items: Iterable[IntegrationProgress]) -> None:
        for p in items:
            self._tasks[p.key] = self._progress.add_task(p.key, total=None, detail=p.detail())
        self._progress.start()

    def refresh(self, items: Iterable[IntegrationProgress]) -> None:
        for p in items:
            task = self._tasks[p.key]
            if p.finished:
                self._progress.update(task, total=1, completed=1, detail=p.detail())
            elif p.total:
                self._progress.update(task, total=p.total, completed=p.done or 0, detail=p.detail())
            else:
                self._progress.update(task, total=None, detail=p.detail())
        self._progress.refresh()

    def stop(self, items: Iterable[IntegrationProgress]) -> None:
        self.refresh(items)
        self._progress.stop()


async def show(view: ProgressView, items: Sequence[IntegrationProgress]) -> None:
    """Run ``view`` over ``items`` until cancelled; the view's last refresh and stop happen then."""
    view.start(items)
    try:
        while True:
            await asyncio.sleep(view.tick_seconds)
            view.refresh(items)
    finally:
        view.stop(items)


def view_for(enabled: bool, console: Any = None) -> ProgressView | None:
    """The view ``inlet run`` shows: bars when stderr is a terminal, log lines when not; None when not ``enabled``."""
    if not enabled:
        return None
    return RichView(console) if sys.stderr.isatty() else LogView()
