"""Sinks: where events go. :class:`Sink` is the contract the pipeline relies on.

``submit(events)`` hands a batch over and returns an awaitable that resolves once the sink has *settled*
every event of it: durably accepted (Kafka: acks=all from the broker; outbox: committed to disk) or refused
for good. It resolves to the refused ones, as :class:`Rejected` (their index in the batch and the sink's
reason); empty when everything is durable. ``submit`` itself may wait — that is the backpressure that stops
connectors from reading while the sink cannot keep up.

Two kinds of failure, kept apart:

- **Refused for good** (an event larger than the broker accepts, a topic the broker will never take it on):
  retrying cannot help and the event is to blame, so it is *reported*, not raised. The pipeline turns each one
  into a DLQ record at stage ``sink`` and commits the position once those are durable: the batch's other events
  are delivered and the stream goes on.
- **The sink as a whole** cannot take the batch: :class:`~core.errors.SinkUnavailable` (for now: the batch is
  redelivered from its uncommitted position) or :class:`~core.errors.SinkRefused` (for good: inlet itself is
  refused, no event is to blame). Both are raised by the awaitable (or by ``submit``).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from inlet.core.envelope import Event

__all__ = ["EventTooLarge", "Rejected", "Sink", "reject_oversized"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event of a submitted batch that the sink refused for good: sending it again cannot succeed."""

    index: int
    """Its position in the sequence handed to ``submit``."""
    error_type: str
    """What refused it, e.g. ``MessageSizeTooLargeError`` (the broker's error class)."""
    message: str
    """Why, in the sink's (the broker's) words."""


EventTooLarge = "EventTooLarge"
"""``Rejected.error_type`` of an event over a sink's own size limit (outbox, memory)."""


def reject_oversized(events: Sequence[Event], limit: int, where: str) -> list[Rejected]:
    """The events whose value is over ``limit`` bytes, refused (for sinks with a size limit of their own)."""
    return [
        Rejected(i, EventTooLarge, f"{len(e.value)} bytes is more than the {limit} bytes {where} takes")
        for i, e in enumerate(events)
        if len(e.value) > limit
    ]


class Sink(abc.ABC):
    """Base of every sink. ``start``/``stop`` are idempotent."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect / open files."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush what was submitted and close."""

    @abc.abstractmethod
    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        """Hand over a batch; the result resolves when all of it is durable or refused, to the refused ones."""

    async def send(self, events: Sequence[Event]) -> Sequence[Rejected]:
        """Submit and wait for the outcome: the events refused for good (empty: all durable)."""
        return await (await self.submit(events))
