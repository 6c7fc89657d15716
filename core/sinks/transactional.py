"""Exactly-once delivery for one integration: its events, DLQ records and new position in one Kafka transaction.

The KIP-618 model (Kafka Connect's exactly-once source connectors): the position is a record in the compacted
positions topic, written by the same transactional producer as the events it stands for, so a
``read_committed`` consumer sees a batch's events exactly when the position that skips them is visible too.
A crash before the commit leaves neither (the batch is read again from the old position); a crash after leaves
both (the batch is not read again).

One transactional id per integration (``<prefix>.<customer>/<integration>``): a new owner's producer bumps the
id's epoch when it starts, which aborts an open transaction of the old owner and makes the old owner's next
commit fail with ``ProducerFenced`` — the fencing a fleet needs when a frozen replica wakes up after its
integrations moved (:class:`~core.errors.Fenced`). The position is read only after that, so it is the last
committed one.

The pipeline sees this object as its sink and as its position store: ``submit`` stages a batch (the events are
not durable yet, the pipeline runs it with ``max_in_flight`` 1 so nothing else is staged meanwhile) and ``save``
commits the staged events, the batch's DLQ records and the position in one transaction; the pipeline
acknowledges upstream only after ``save`` returned. Events over :data:`MAX_EVENT_BYTES` are refused before
sending (a refused record would abort the whole transaction) and become DLQ records in the same transaction; any
other failure aborts it and the integration restarts from its committed position.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from inlet.core.config import KafkaSettings
from inlet.core.envelope import Event
from inlet.core.errors import Fenced, SinkRefused, SinkUnavailable
from inlet.core.kafka_client import connection_options, describe, start_client
from inlet.core.positions import SAVE_FAILPOINT, KafkaPositions, PositionRecord, PositionStore
from inlet.core.sinks import Rejected, Sink, reject_oversized
from inlet.core.sinks.kafka import KeyHashPartitioner, action_for, topic_partitions
from inlet.core.types import Position

__all__ = ["MAX_EVENT_BYTES", "ExactlyOnce"]

log = structlog.get_logger("inlet.sink.exactly_once")

MAX_EVENT_BYTES = 1_000_000
"""Events larger than this go to the DLQ (truncated) instead of into the transaction: Kafka's default limits
(``max.request.size``, ``message.max.bytes``) are 1 MiB, and one refused record would abort the whole batch."""


class ExactlyOnce(Sink, PositionStore):
    """One integration's transactional producer: its sink and its position store (see the module docstring)."""

    def __init__(self, settings: KafkaSettings, transactional_id: str, positions: PositionStore) -> None:
        if not isinstance(positions, KafkaPositions):
            raise TypeError("exactly-once delivery keeps its positions in Kafka (a fleet's positions topic)")
        self.settings = settings
        self.transactional_id = transactional_id
        self.positions = positions
        self._producer: Any = None
        self._staged: list[Event] = []
        self._partitioner = KeyHashPartitioner()

    async def start(self) -> None:
        if self._producer is not None:
            return
        await self.positions.start()
        producer = AIOKafkaProducer(
            **connection_options(self.settings),
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self.settings.linger_ms,
            max_batch_size=self.settings.max_batch_size,
            partitioner=self._partitioner,
        )
        await start_client(producer, self.settings)
        try:
            # An empty transaction waits for the producer id: the broker has then fenced (and aborted the open
            # transaction of) any older producer with this id, so the position read next is the last committed.
            await producer.begin_transaction()
            await producer.commit_transaction()
        except (KafkaError, OSError) as exc:
            await producer.stop()
            raise self._failure(exc) from exc
        self._producer = producer
        log.info("exactly-once producer started", transactional_id=self.transactional_id)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        self._staged = []
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=self.settings.request_timeout_ms / 1000 + 5)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("exactly-once producer did not stop cleanly", error=repr(exc))

    async def aclose(self) -> None:
        await self.stop()

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        rejected = reject_oversized(events, MAX_EVENT_BYTES, "an exactly-once transaction")
        refused = {r.index for r in rejected}
        self._staged.extend(e for i, e in enumerate(events) if i not in refused)
        settled: asyncio.Future[Sequence[Rejected]] = asyncio.get_running_loop().create_future()
        settled.set_result(rejected)
        return settled

    async def load(self, customer: str, integration: str) -> Position | None:
        return await self.positions.load(customer, integration)

    async def save(self, customer: str, integration: str, position: Position) -> None:
        """Commit the staged events and DLQ records with ``position``; durable (or raised) when this returns."""
        producer = self._producer
        if producer is None:
            raise SinkUnavailable(f"the exactly-once producer {self.transactional_id} is not started")
        staged, self._staged = self._staged, []
        topic, key, value = self.positions.record(customer, integration, position)
        try:
            await producer.begin_transaction()
            await self._send_batches(producer, staged)
            await producer.send(topic, value, key=key)
            SAVE_FAILPOINT.hit()  # crash tests: the batch is sent, its transaction not committed
            await producer.commit_transaction()
        except (KafkaError, OSError) as exc:
            failure = self._failure(exc)
            if not isinstance(failure, Fenced):
                with contextlib.suppress(KafkaError, OSError):  # else the next producer with this id aborts it
                    await producer.abort_transaction()
            raise failure from exc

    async def _send_batches(self, producer: Any, events: Sequence[Event]) -> None:
        """Queue ``events`` as record batches built here, one per partition at a time, like the at-least-once sink
        (a ``send()`` per event cost ~9 µs more CPU each); per-partition order holds, the commit flushes them."""
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], Any] = {}
        for e in events:
            parts = partitions.get(e.topic)
            if parts is None:
                parts = partitions[e.topic] = await topic_partitions(producer, e.topic)
            tp = (e.topic, self._partitioner(e.key, parts, parts))
            builder = open_batches.get(tp)
            if builder is None:
                builder = open_batches[tp] = producer.create_batch()
            if builder.append(timestamp=None, key=e.key, value=e.value, headers=e.headers) is None:
                await producer.send_batch(builder, tp[0], partition=tp[1])
                builder = open_batches[tp] = producer.create_batch()
                builder.append(timestamp=None, key=e.key, value=e.value, headers=e.headers)  # the first always fits
        for (topic, partition), builder in open_batches.items():
            await producer.send_batch(builder, topic, partition=partition)

    async def reset(self, customer: str, integration: str) -> None:
        await self.positions.reset(customer, integration)

    async def snapshot(self) -> dict[str, PositionRecord]:
        return await self.positions.snapshot()

    def _failure(self, exc: BaseException) -> Exception:
        if isinstance(exc, (ProducerFenced, InvalidProducerEpoch)):
            return Fenced(
                f"transactional id {self.transactional_id} is in use by a newer producer (another replica took "
                f"the integration over); this replica's open transaction is aborted"
            )
        if action_for(exc) == "fatal":
            return SinkRefused(f"{describe(self.settings)} refused the exactly-once producer: {exc!r}")
        return SinkUnavailable(f"the transaction of {self.transactional_id} failed: {exc!r}")
