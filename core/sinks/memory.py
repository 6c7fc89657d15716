"""A sink that keeps events in memory: for replaying fixtures offline and comparing with golden events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from inlet.core.envelope import Event
from inlet.core.sinks import Rejected, Sink, reject_oversized

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Accepts every batch at once and keeps its events, in order, in ``events``.

    ``max_event_bytes`` refuses events with a larger value, as a broker refuses one over ``message.max.bytes``:
    they are reported (and kept in ``rejected``), not stored, so the pipeline's handling of refused events can be
    exercised without a broker.
    """

    def __init__(self, *, max_event_bytes: int | None = None) -> None:
        self.events: list[Event] = []
        self.rejected: list[Event] = []
        self.max_event_bytes = max_event_bytes

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        refused: list[Rejected] = []
        if self.max_event_bytes is None:
            self.events.extend(events)
        else:
            refused = reject_oversized(events, self.max_event_bytes, "this memory sink")
            skip = {r.index for r in refused}
            self.events.extend(e for i, e in enumerate(events) if i not in skip)
            self.rejected.extend(events[i] for i in sorted(skip))
        done: asyncio.Future[Sequence[Rejected]] = asyncio.get_running_loop().create_future()
        done.set_result(refused)
        return done
