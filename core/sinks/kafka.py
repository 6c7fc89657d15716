"""The Kafka sink (aiokafka): acks=all, idempotent, bounded in flight, recreated after failure.

Why these choices:
- ``acks="all"`` + idempotence: a batch is acknowledged only when every in-sync replica has it, and
  the broker drops the producer's own retried duplicates.
- ``max_batch_size`` 256 KB and ``linger_ms`` 5: aiokafka's 16 KB default halves throughput here
  (bench/README numbers).
- At most ``max_in_flight_events`` events are unacknowledged at once; ``submit`` waits beyond that.
  This is the backpressure that stops reading while Kafka is slow or gone, instead of buffering
  without bound.
- After any delivery failure the producer is thrown away and a fresh one is started on the next
  submit: an idempotent producer whose batch expired has an unknown sequence state, and a fresh
  producer id is the safe way back. Failed batches are redelivered from their uncommitted position.

Events the broker refuses for good (poison events). What a failed batch means is decided by one table,
:data:`ERROR_ACTIONS` (aiokafka error class → ``retry`` | ``dlq`` | ``fatal``, first ``isinstance`` match):

- ``retry``: Kafka is away, busy or electing. The submission fails with ``SinkUnavailable`` as above.
- ``fatal``: inlet itself is refused (cluster authorization, credentials, a broker too old): ``SinkRefused``;
  no event is to blame and none goes to the DLQ.
- ``dlq``: the broker refuses *this batch* for good (larger than ``message.max.bytes``, an invalid topic, no
  write permission on the topic). The events to blame are found and reported as
  :class:`~inlet.core.sinks.Rejected`; every other event of the submission is delivered, in order.

Finding them keeps per-partition order: a refused batch breaks the idempotent producer's sequence numbers on
its partition (later batches there fail with ``OutOfOrderSequenceNumber``, or — a broker without state for a
fresh producer — are stored ahead of the refused batch's good events), so the producer is retired, new
submissions wait (a barrier) until every submission queued before has been settled, and the refused batch
with everything after it on its partition is resent in submission order through a *careful* producer (not
idempotent, so a refused batch does not fail the ones after it; aiokafka sends one batch per partition at a
time, so order holds): the refused batch one event per batch, the rest in normal batches. An event refused
alone is rejected; a multi-event batch refused again is split the same way in another round, after which
everything behind it on that partition is resent once more. Resent events that had already arrived are
duplicates with the same ids (at-least-once), never out of order: the last copy of every event on a partition
comes after the last copy of every event submitted before it. This slow path runs only after a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from inlet.core.config import KafkaSettings
from inlet.core.envelope import Event
from inlet.core.errors import SinkRefused, SinkUnavailable
from inlet.core.kafka_client import connection_options, describe, start_client
from inlet.core.sinks import Rejected, Sink

try:  # the same hash in C (core/_speedups.c): ~0.05 µs a key instead of ~6.5
    from inlet.core._speedups import murmur2 as key_hash
except ImportError:  # pragma: no cover - a build without the extension
    key_hash = murmur2

__all__ = ["ERROR_ACTIONS", "KafkaSink", "SinkAction", "action_for", "key_hash", "rejection", "topic_partitions"]

log = structlog.get_logger("inlet.sink.kafka")

SinkAction = Literal["retry", "dlq", "fatal"]

_E = kafka_errors
ERROR_ACTIONS: Mapping[type[BaseException], SinkAction] = {
    # dlq: the broker refuses this event (its batch) for good; the same bytes to the same topic get the same answer.
    _E.MessageSizeTooLargeError: "dlq",  # over message.max.bytes (the topic's max.message.bytes)
    _E.RecordListTooLargeError: "dlq",  # a record batch over the broker's limit
    _E.RecordTooLargeError: "dlq",  # a record over the client's max_request_size
    _E.CorruptRecordException: "dlq",  # errno 2: a record the broker will not store (e.g. no key on a
    _E.InvalidMessageError: "dlq",  # ... compacted topic), both class names aiokafka uses for it
    _E.InvalidTimestampError: "dlq",  # outside the topic's message.timestamp.*.max.ms
    _E.InvalidTopicError: "dlq",  # a topic name Kafka does not allow
    _E.TopicAuthorizationFailedError: "dlq",  # no WRITE on this topic: its events are refused, the others flow
    _E.PolicyViolationError: "dlq",  # a broker-side policy refuses the record
    _E.UnsupportedForMessageFormatError: "dlq",  # headers on a topic kept in a pre-0.11 message format
    # fatal: inlet itself is refused; nothing passes until the configuration changes, no event is to blame.
    _E.ClusterAuthorizationFailedError: "fatal",  # e.g. IDEMPOTENT_WRITE (or CLUSTER_ACTION) not granted
    _E.TransactionalIdAuthorizationFailed: "fatal",
    _E.SaslAuthenticationFailed: "fatal",
    _E.AuthenticationFailedError: "fatal",
    _E.AuthenticationMethodNotSupported: "fatal",
    _E.UnsupportedSaslMechanismError: "fatal",
    _E.IllegalSaslStateError: "fatal",
    _E.SecurityDisabled: "fatal",
    _E.UnsupportedVersionError: "fatal",  # a broker too old for what the producer needs
    _E.IncompatibleBrokerVersion: "fatal",
    _E.UnrecognizedBrokerVersion: "fatal",
    _E.InvalidRequiredAcksError: "fatal",
    _E.KafkaConfigurationError: "fatal",
    _E.UnsupportedCodecError: "fatal",
    # retry: Kafka is away, busy or electing; the batch is redelivered from its position after a backoff.
    _E.UnknownTopicOrPartitionError: "retry",  # not (yet) known: the start-up check refuses missing topics
    _E.NotEnoughReplicasError: "retry",
    _E.NotEnoughReplicasAfterAppendError: "retry",
    _E.NotLeaderForPartitionError: "retry",
    _E.LeaderNotAvailableError: "retry",
    _E.RequestTimedOutError: "retry",
    _E.KafkaTimeoutError: "retry",
    _E.KafkaConnectionError: "retry",
    _E.NodeNotReadyError: "retry",
    _E.OutOfOrderSequenceNumber: "retry",  # the producer's sequence state is lost: a fresh producer
    _E.UnknownProducerId: "retry",
    _E.InvalidProducerEpoch: "retry",
    _E.ProducerFenced: "retry",
    _E.ProducerClosed: "retry",
    _E.KafkaError: "retry",  # anything else aiokafka raises is not assumed to be the event's fault
    OSError: "retry",
    TimeoutError: "retry",
}
"""aiokafka error class → what a failed batch means (first ``isinstance`` match in this order); anything not
listed: ``retry``. Policy as data, like ``core.http``'s status table: tests go through it case by case."""


def action_for(error: BaseException) -> SinkAction:
    """What :data:`ERROR_ACTIONS` says about ``error``."""
    for cls, action in ERROR_ACTIONS.items():
        if isinstance(error, cls):
            return action
    return "retry"


def _reason(error: BaseException) -> str:
    """The broker's error with its documented meaning (aiokafka's message alone is just the class name)."""
    text = str(error)
    description = getattr(error, "description", None)
    return f"{text}: {description}" if isinstance(description, str) and description not in text else text


def rejection(index: int, error: BaseException) -> Rejected:
    """An event refused for good by ``error``: its class name, and the broker's error with its meaning."""
    return Rejected(index, type(error).__name__, _reason(error))


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""What Kafka accepts as a topic name; aiokafka waits for metadata of any other name until it times out."""


async def topic_partitions(producer: Any, topic: str) -> list[int]:
    """The partitions of ``topic`` (sorted) through a started producer; ``InvalidTopicError`` at once for a name
    Kafka does not allow (``dlq`` in :data:`ERROR_ACTIONS`)."""
    if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise kafka_errors.InvalidTopicError(f"{topic!r} is not a valid Kafka topic name")
    return sorted(await producer.partitions_for(topic))


_Partition = tuple[str, int]


@dataclass(eq=False, slots=True)
class _Submission:
    """One ``submit``: its events, the batches they went in, and what became of them."""

    events: Sequence[Event]
    producer: Any
    order: dict[_Partition, list[int]] = field(default_factory=dict)
    """Per partition, the indices of its events in the order they were queued."""
    batches: list[tuple[_Partition, int, int, asyncio.Future[Any]]] = field(default_factory=list)
    """Queued batches in queue order: partition, slice of ``order[partition]``, delivery future."""
    refused: list[Rejected] = field(default_factory=list)
    """Events refused before sending (their topic was refused)."""
    retired: bool = False
    """Queued before a repair's resend (its producer may be retired): a failure of its batches is not its own, and
    what it queued on a partition the repair resent to goes again."""


class KeyHashPartitioner:
    """aiokafka's default partitioner (Java-compatible murmur2 of the key), without its per-message cost.

    aiokafka hashes every key in pure Python (~6 µs a message here), even for a one-partition topic.
    The hash of a key never changes, so it is cached (keys are entities: patients, meters, invoices);
    the cache is cleared when it reaches ``max_keys``; a new key is hashed in C where the compiled helpers are
    built (~0.05 µs). Same partitions as the Java client's default.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if len(all_partitions) == 1:
            return all_partitions[0]
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            h = self._hashes[key] = key_hash(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class KafkaSink(Sink):
    """Sends events to Kafka; one producer shared by every integration of the supervisor."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._starting = asyncio.Lock()
        self._in_flight = 0
        self._partitioner = KeyHashPartitioner()
        self._room = asyncio.Event()
        self._room.set()
        # Settling submissions in order, and the barrier of a repair after a refused batch (module docstring).
        self._unsettled: deque[_Submission] = deque()
        self._last: asyncio.Future[Sequence[Rejected]] | None = None
        self._open = asyncio.Event()  # cleared while a repair waits for the submissions queued before it
        self._open.set()
        self._sending = 0  # submissions queueing batches right now
        self._idle = asyncio.Event()
        self._idle.set()
        self._careful: Any = None  # the non-idempotent producer of a repair
        self._resent: set[_Partition] = set()  # partitions a repair resent to: what was queued before goes again

    async def start(self) -> None:
        async with self._starting:
            if self._producer is not None:
                return
            s = self.settings
            producer = AIOKafkaProducer(
                **connection_options(s),
                acks="all",
                enable_idempotence=True,
                linger_ms=s.linger_ms,
                max_batch_size=s.max_batch_size,
                partitioner=self._partitioner,
            )
            await start_client(producer, s)  # a refusal of inlet's credentials is fatal, an outage retried
            self._producer = producer
            if s.security_protocol.endswith("SSL") and not s.ssl_check_hostname:
                log.warning(
                    "kafka TLS without host name verification (ssl_check_hostname: false): any certificate "
                    "of a trusted CA is accepted for this broker",
                    bootstrap=s.bootstrap,
                )
            log.info(
                "kafka producer started",
                bootstrap=s.bootstrap,
                security_protocol=s.security_protocol,
                sasl_mechanism=s.sasl_mechanism,
            )

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # stop() flushes; bound it so a drain with Kafka gone cannot hang the shutdown.
            try:
                await asyncio.wait_for(producer.stop(), timeout=self.settings.request_timeout_ms / 1000 + 5)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("kafka producer did not stop cleanly", error=repr(exc))
        await self._close_careful()

    async def _discard(self, producer: Any) -> None:
        """Drop a producer after a failed delivery; the next submit starts a new one."""
        if producer is not None and producer is self._producer:
            self._producer = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=5)

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        limit = self.settings.max_in_flight_events
        while self._in_flight and self._in_flight + len(events) > limit:
            self._room.clear()
            await self._room.wait()
        while True:  # behind a repair's barrier; checked again after every wait
            await self._open.wait()
            if self._producer is None:
                await self.start()
                continue
            break
        producer = self._producer
        sub = _Submission(events, producer)
        self._unsettled.append(sub)
        self._in_flight += len(events)
        self._sending += 1
        self._idle.clear()
        try:
            await self._send_batches(producer, sub)
        except (KafkaError, OSError) as exc:
            await self._forget(sub)
            await self._discard(producer)
            if action_for(exc) == "fatal":
                raise self._refused(exc) from exc
            raise SinkUnavailable(f"Kafka refused a batch: {exc!r}") from exc
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()
        settled = asyncio.ensure_future(self._settle(sub, self._last))
        self._last = settled
        return settled

    async def _send_batches(self, producer: Any, sub: _Submission) -> None:
        """Build the record batches here (one future per batch, not per event) and hand them over whole.

        Partitions come from the same partitioner send() would use, so keys land where they always did;
        batches of one partition are queued in order, so per-key order holds. The events of a topic the broker
        refuses for good (``dlq`` in :data:`ERROR_ACTIONS`) are rejected without being sent.
        """
        partitions: dict[str, list[int]] = {}
        refused_topics: dict[str, BaseException] = {}
        open_batches: dict[_Partition, list[Any]] = {}  # partition -> [builder, first index into order]
        order = sub.order
        partitioner = self._partitioner
        for i, e in enumerate(sub.events):
            topic = e.topic
            parts = partitions.get(topic)
            if parts is None:
                try:
                    parts = await self._partitions(producer, topic)
                except (KafkaError, OSError) as exc:
                    if action_for(exc) != "dlq":
                        raise
                    refused_topics[topic], parts = exc, []
                partitions[topic] = parts
            if not parts:
                sub.refused.append(rejection(i, refused_topics[topic]))
                continue
            tp = (topic, partitioner(e.key, parts, parts))
            queued = order.get(tp)
            if queued is None:
                queued = order[tp] = []
            current = open_batches.get(tp)
            if current is None:
                current = open_batches[tp] = [producer.create_batch(), 0]
            if current[0].append(timestamp=None, key=e.key, value=e.value, headers=e.headers) is None:
                await self._queue(producer, sub, tp, current[0], current[1], len(queued))
                current = open_batches[tp] = [producer.create_batch(), len(queued)]
                # The first record of a batch always fits (aiokafka takes it whatever its size): the broker decides.
                current[0].append(timestamp=None, key=e.key, value=e.value, headers=e.headers)
            queued.append(i)
        for tp, (builder, first) in open_batches.items():
            await self._queue(producer, sub, tp, builder, first, len(order[tp]))

    @staticmethod
    async def _partitions(producer: Any, topic: str) -> list[int]:
        return await topic_partitions(producer, topic)

    @staticmethod
    async def _queue(producer: Any, sub: _Submission, tp: _Partition, builder: Any, first: int, end: int) -> None:
        future = await producer.send_batch(builder, tp[0], partition=tp[1])
        sub.batches.append((tp, first, end, future))

    async def _outcomes(self, futures: list[asyncio.Future[Any]]) -> list[BaseException | None]:
        """Each batch's failure (None: delivered), once all are settled; TimeoutError past the bound.

        aiokafka never expires a batch whose partition leader is known but unreachable (Kafka stopped):
        unbounded, an outage would stall the pipeline without an error (/readyz green) and make a SIGTERM
        drain wait forever. Past the bound the batches count as failed; they are redelivered (at-least-once).
        """
        gathered = asyncio.gather(*futures, return_exceptions=True)
        try:
            results = await asyncio.wait_for(
                asyncio.shield(gathered), timeout=2 * self.settings.request_timeout_ms / 1000
            )
        except TimeoutError:
            gathered.add_done_callback(_swallow)
            raise
        return [r if isinstance(r, BaseException) else None for r in results]

    async def _settle(
        self, sub: _Submission, previous: asyncio.Future[Sequence[Rejected]] | None
    ) -> Sequence[Rejected]:
        """Wait for a submission's batches, after the one submitted before it: its refused events, or raise."""
        try:
            if previous is not None:  # in submission order: a repair of an earlier one resends before this one
                await asyncio.wait([previous])
                previous = None
            try:
                outcomes = await self._outcomes([b[3] for b in sub.batches])
            except TimeoutError as exc:
                await self._discard(sub.producer)
                raise SinkUnavailable(f"Kafka did not acknowledge a batch: {exc!r}") from exc
            return await self._verdict(sub, outcomes)
        finally:
            await self._forget(sub)

    async def _verdict(self, sub: _Submission, outcomes: list[BaseException | None]) -> list[Rejected]:
        rejected = list(sub.refused)
        fatal: BaseException | None = None
        retry: BaseException | None = None
        broken: set[_Partition] = set()  # partitions with a failed batch: it and everything after it is resent
        work: list[tuple[int, _Partition, bool]] = []  # (event index, partition, alone in its batch), in order
        actions = [None if error is None else action_for(error) for error in outcomes]
        for (tp, first, end, _), error, action in zip(sub.batches, outcomes, actions, strict=True):
            if sub.retired and tp in self._resent:
                # An earlier submission's events were resent to this partition after these were queued (a broker
                # without state for a fresh producer even takes the batches behind a refused one): again, after.
                broken.add(tp)
            if action == "fatal":
                fatal = fatal or error
                continue
            if tp not in broken and (action is None or (action == "retry" and not sub.retired)):
                if action == "retry":
                    retry = retry or error
                continue
            indices = sub.order[tp][first:end]
            broken.add(tp)
            if error is not None and action == "dlq" and len(indices) == 1:
                rejected.append(rejection(indices[0], error))  # never stored: nothing after it is out of order
            else:  # refused with others (alone next time), or caught behind a refused batch (resent as it was)
                work.extend((i, tp, action == "dlq") for i in indices)
        if fatal is not None:
            await self._discard(sub.producer)
            raise self._refused(fatal) from fatal
        if retry is not None:
            await self._discard(sub.producer)
            raise SinkUnavailable(f"Kafka did not acknowledge a batch: {retry!r}") from retry
        if broken:
            if any(action == "dlq" for action in actions):  # its producer's sequence numbers are broken
                await self._retire(sub.producer)
            if work:
                rejected += await self._resend(sub, work)
                self._resent.update(tp for _, tp, _ in work)
        if rejected:
            log.warning(
                "kafka refused events for good; they go to the DLQ", refused=len(rejected), error=rejected[0].message
            )
        return sorted(rejected, key=lambda r: r.index)

    async def _retire(self, producer: Any) -> None:
        """Stop a producer whose sequence numbers a refused batch broke, behind a barrier for new submissions."""
        self._open.clear()
        while self._sending:  # let submissions that are queueing finish: their batches are settled in order
            await self._idle.wait()
        for sub in self._unsettled:  # this one and every later one (earlier ones are settled): queued before the
            sub.retired = True  # resend, whichever producer they went through
        if self._producer is producer:
            self._producer = None
        log.warning("kafka producer retired after a refused batch; later batches of its partitions are resent in order")
        with contextlib.suppress(Exception):  # flushes: later batches of broken partitions fail at once
            await asyncio.wait_for(producer.stop(), timeout=self.settings.request_timeout_ms / 1000 + 5)  # idempotent

    async def _resend(self, sub: _Submission, work: list[tuple[int, _Partition, bool]]) -> list[Rejected]:
        """Resend ``work`` in order through the careful producer until every event is stored or rejected alone."""
        rejected: list[Rejected] = []
        events = sub.events
        while work:
            producer = await self._careful_producer()
            sent: list[tuple[_Partition, list[int], bool, asyncio.Future[Any]]] = []
            open_batches: dict[_Partition, tuple[Any, list[int]]] = {}

            async def flush(tp: _Partition) -> None:
                builder, indices = open_batches.pop(tp)  # noqa: B023 - used within this round only
                sent.append((tp, indices, False, await producer.send_batch(builder, tp[0], partition=tp[1])))  # noqa: B023

            try:
                for i, tp, alone in work:
                    e = events[i]
                    if alone:
                        if tp in open_batches:
                            await flush(tp)
                        builder = producer.create_batch()
                        builder.append(timestamp=None, key=e.key, value=e.value, headers=e.headers)
                        sent.append((tp, [i], True, await producer.send_batch(builder, tp[0], partition=tp[1])))
                        continue
                    current = open_batches.get(tp)
                    if current is None:
                        current = open_batches[tp] = (producer.create_batch(), [])
                    if current[0].append(timestamp=None, key=e.key, value=e.value, headers=e.headers) is None:
                        await flush(tp)
                        current = open_batches[tp] = (producer.create_batch(), [])
                        current[0].append(timestamp=None, key=e.key, value=e.value, headers=e.headers)
                    current[1].append(i)
                for tp in list(open_batches):
                    await flush(tp)
                outcomes = await self._outcomes([s[3] for s in sent])
            except (KafkaError, OSError, TimeoutError) as exc:
                for *_, future in sent:
                    future.add_done_callback(_swallow)
                await self._close_careful()
                raise SinkUnavailable(f"Kafka did not take a resent batch: {exc!r}") from exc
            work = []
            broken: set[_Partition] = set()
            for (tp, indices, alone, _), error in zip(sent, outcomes, strict=True):
                action = None if error is None else action_for(error)
                if error is not None and action == "fatal":
                    raise self._refused(error) from error
                if action == "retry":
                    await self._close_careful()
                    raise SinkUnavailable(f"Kafka did not take a resent batch: {error!r}") from error
                if error is not None and action == "dlq" and len(indices) == 1:
                    rejected.append(rejection(indices[0], error))
                elif action == "dlq":
                    broken.add(tp)
                    work.extend((i, tp, True) for i in indices)
                elif tp in broken:  # stored after a batch that is resent: once more, after it
                    work.extend((i, tp, alone) for i in indices)
        return rejected

    async def _careful_producer(self) -> Any:
        """The producer of a repair: acks=all, not idempotent (a refused batch does not fail the next ones)."""
        if self._careful is None:
            s = self.settings
            producer = AIOKafkaProducer(
                **connection_options(s),
                acks="all",
                enable_idempotence=False,
                linger_ms=0,
                max_batch_size=s.max_batch_size,
            )
            await start_client(producer, s)
            self._careful = producer
        return self._careful

    async def _close_careful(self) -> None:
        careful, self._careful = self._careful, None
        if careful is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(careful.stop(), timeout=self.settings.request_timeout_ms / 1000 + 5)

    async def _forget(self, sub: _Submission) -> None:
        """A submission is settled (or failed): release its room; the last one of a repair lifts the barrier."""
        for *_, future in sub.batches:
            future.add_done_callback(_swallow)
        self._release(len(sub.events))
        with contextlib.suppress(ValueError):
            self._unsettled.remove(sub)
        if not self._unsettled and not self._open.is_set():
            await self._close_careful()
            self._resent.clear()
            self._open.set()

    def _refused(self, error: BaseException) -> SinkRefused:
        return SinkRefused(
            f"{describe(self.settings)} refused inlet: {_reason(error)}. Not retried: no event is to "
            "blame; fix the cluster's permissions or the configuration and restart"
        )

    def _release(self, count: int) -> None:
        self._in_flight -= count
        self._room.set()


def _swallow(fut: asyncio.Future[Any]) -> None:
    """Retrieve a future's exception so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()
