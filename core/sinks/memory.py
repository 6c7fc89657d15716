"""A sink that keeps events in memory: for replaying fixtures offline and comparing with golden events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from inlet.core.envelope import Event
from inlet.core.sinks import Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Accepts every batch at once and keeps its events, in order, in ``events``."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, events: Sequence[Event]) -> Awaitable[None]:
        self.events.extend(events)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
