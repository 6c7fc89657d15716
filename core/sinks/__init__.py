"""Sinks: where events go. :class:`Sink` is the contract the pipeline relies on.

``submit(events)`` hands a batch over and returns an awaitable that resolves once the sink has
*durably* accepted every event of it (Kafka: acks=all from the broker; outbox: committed to disk),
or raises :class:`~core.errors.SinkUnavailable`. ``submit`` itself may wait — that is the
backpressure that stops connectors from reading while the sink cannot keep up.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence

from inlet.core.envelope import Event

__all__ = ["Sink"]


class Sink(abc.ABC):
    """Base of every sink. ``start``/``stop`` are idempotent."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect / open files."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush what was submitted and close."""

    @abc.abstractmethod
    async def submit(self, events: Sequence[Event]) -> Awaitable[None]:
        """Hand over a batch; the result resolves when all of it is durable."""

    async def send(self, events: Sequence[Event]) -> None:
        """Submit and wait for the acknowledgement."""
        await (await self.submit(events))
