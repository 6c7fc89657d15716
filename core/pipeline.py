"""The pipeline of one integration: read → decode → filter → map → validate → envelope → sink → commit.

It works in batches end to end (docs/architecture.md follows one record through it): a batch is processed in
one synchronous pass, handed to the sink, and up to ``max_in_flight`` batches wait for their acknowledgement
while the next ones are read and mapped. Positions are committed strictly in order and only after the sink holds
every event (and DLQ record) of the batch: a crash at any moment loses nothing, and re-reading from the
last committed position yields the same deterministic event ids.

Every failure of a single record — undecodable, unmappable, breaking its contract, or a bug in the
plugin — becomes a DLQ record naming the stage, error type, message and position; the stream goes on.
Retriable errors (``retriable`` on the class: upstream or sink unavailable) are not records' faults: they
propagate to the supervisor, which restarts the integration with backoff from its last checkpoint. A pydantic
refusal of a model ``map()`` built is a :class:`~core.errors.ContractViolation` (stage ``validate``); a
:class:`~core.errors.LeftOut` raised while decoding or mapping is counted as ``filter()``'s reason would be.

An event the sink refuses for good (``Rejected``: larger than the broker takes, a topic it will never take it on)
is a record's fault found late: before the batch's position is committed, each becomes a DLQ record at stage
``sink`` (the refused event as payload, the broker's error, the source key and position, the topic it was for),
and the commit waits until those are durable too. In the counts the record moves from mapped to ``dlq["sink"]``
(once, however many of its events were refused) and its refused events leave ``events_out``. A DLQ record the
sink refuses in turn (its payload is what was too large) is sent again with its headers and the first
:data:`DLQ_TRUNCATED_BYTES` of its payload, ``dlq_payload_truncated``/``dlq_payload_bytes`` saying so; refused
even then, nothing is committed (``SinkRefused``): a record is never dropped without a trace.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from inlet.contracts.base import Contract, converters_from
from inlet.core.connector import Batch, Connector
from inlet.core.drift import AlertThrottle, DriftPolicy, Shape, alert, detect
from inlet.core.envelope import DlqRecord, Enveloper, Event, event_id, payload_bytes
from inlet.core.errors import (
    ContractViolation,
    InletError,
    LeftOut,
    MappingError,
    RecordError,
    SinkRefused,
    UpstreamDrift,
)
from inlet.core.failpoints import Failpoint
from inlet.core.metrics import BatchCounts, Stats, dlq_reason
from inlet.core.monitors import Monitors, store_state
from inlet.core.positions import PositionStore
from inlet.core.progress import caught_up, committed
from inlet.core.sinks import Rejected, Sink
from inlet.core.types import Position

__all__ = [
    "DLQ_TRUNCATED_BYTES",
    "DriftCheck",
    "Pipeline",
    "UpstreamDrift",
    "process_batch",
    "refused_event",
    "truncated",
]

AFTER_COMMIT = Failpoint("pipeline.after_commit")
"""``INLET_FAILPOINT=pipeline.after_commit:N``: killed after the N-th commit, before its upstream acknowledgement."""

REDELIVERED = "redelivered: its events are committed"
"""The filter reason of a message a push source redelivered after its batch was committed (exactly-once)."""

COMMITTED_KEY = "_committed"
"""Position key of an exactly-once push source: digests of the last committed batch's messages (see
:meth:`Pipeline.run`)."""

DLQ_TRUNCATED_BYTES = 4096
"""How much of its payload a DLQ record keeps when the sink refused it whole: enough to see what the record was,
far below any broker's limit. The source key and position in its headers find the original."""

_Span = tuple[int, int, str]
"""A mapped record's events in a batch's event list: first index, end index, source key."""


def _dlq(
    env: Enveloper,
    raw: Any,
    position: Position,
    stage: str,
    exc: BaseException,
    source_key: str | None,
    counts: BatchCounts,
) -> Event:
    error_type = exc.error_type if isinstance(exc, RecordError) else type(exc).__name__
    message = str(exc)
    counts.dlq[stage] += 1
    counts.reasons[dlq_reason(stage, error_type, message)] += 1  # per DLQ record only: good events pay nothing
    payload = payload_bytes(raw)
    counts.sample(stage, error_type, message, payload)  # core.status: the recent DLQ records
    return env.dead_letter(
        DlqRecord(
            stage=stage,
            error_type=error_type,
            message=message,
            payload=payload,
            position=position,
            source_key=source_key,
        )
    )


@dataclass
class DriftCheck:
    """An integration's recorded upstream shape and what to do with a record that departs from it."""

    shape: Shape
    policy: DriftPolicy = "map"
    strict: bool = False
    throttle: AlertThrottle = field(default_factory=AlertThrottle)


def _check_drift(
    connector: Connector[Any],
    env: Enveloper,
    drift: DriftCheck,
    record: Any,
    position: Position,
    events: list[Event],
    counts: BatchCounts,
) -> None:
    changes = detect(drift.shape, record, strict=drift.strict)
    if not changes:
        return
    try:
        key: str | None = connector.identity(record)[0]
    except Exception:  # a source key that cannot be taken here fails again, with its reason, in the map stage
        key = None
    alert(env.customer, env.integration, changes, connector.log, throttle=drift.throttle)
    events.append(env.drift([c.to_dict() for c in changes], key, position))
    counts.drift += len(changes)
    if len(counts.drifts) < 20:  # core.status: the recent drift alerts
        counts.drifts.append({"at": time.time(), "source_key": key, "changes": [c.to_dict() for c in changes[:20]]})
    if drift.policy == "dlq":
        raise UpstreamDrift("upstream drift: " + "; ".join(f"{c.path}: {c.kind} ({c.detail})" for c in changes))


def _known_key(source_identity: Any, record: Any) -> str | None:
    """The source key of a record that failed before its source identity was taken (a decode or filter
    failure), when the connector can still tell it: a DLQ record names its source whenever that is knowable."""
    try:
        return str(source_identity(record)[0])
    except Exception:  # the record is too broken to identify: the DLQ record says so by having no key
        return None


_Converters = dict[type, tuple[Callable[[Any], Contract], ...]]
"""Per model class met in a batch: its converters to the other majors (looked up once per class and batch)."""


def _envelope_all(
    env: Enveloper, models: Sequence[Any], key: str, version: str, converters: _Converters
) -> list[Event]:
    """The events of one mapped record, in order: each model, then its other majors (dual publishing)."""
    out = []
    envelope = env.envelope
    for i, model in enumerate(models):
        cls = type(model)
        converts = converters.get(cls)
        if converts is None:
            if not isinstance(model, Contract):
                raise MappingError(f"map() returned {cls.__name__}, not a contract model")
            converts = converters[cls] = tuple(converters_from(cls).values())
        out.append(envelope(model, key, version, i))
        for convert in converts:  # during a major migration: the same fact in the other major too
            out.append(envelope(convert(model), key, version, i))
    return out


def process_batch(
    connector: Connector[Any], env: Enveloper, batch: Batch, drift: DriftCheck | None = None
) -> tuple[list[Event], BatchCounts]:
    """Turn one batch into events and DLQ records, counting each record exactly once. Pure CPU."""
    events, counts, _ = _process_batch(connector, env, batch, drift, None)
    return events, counts


def _digest(connector: Connector[Any], raw: Any) -> str:
    return hashlib.blake2b(connector.redelivery_key(raw), digest_size=12).hexdigest()


MAX_COMMITTED_DIGESTS = 20_000
"""At most this many digests ride in a position (a batch's, plus those of earlier commits not redelivered yet)."""


def _left_redelivered(connector: Connector[Any], batch: Batch, committed: dict[str, None]) -> tuple[Batch, int]:
    """The batch without the messages redelivered after their commit (``committed``: digests not yet seen again,
    in order; those met are removed), its position carrying the digests of all its messages plus the rest of
    ``committed`` (a second crash before they came back must still know them); and how many were left out."""
    digests = [_digest(connector, raw) for raw in batch.records]
    kept: list[Any] = []
    for raw, digest in zip(batch.records, digests, strict=True):
        if digest in committed:
            del committed[digest]  # met again: acknowledged with this batch, never redelivered after it
        else:
            kept.append(raw)
    carried = [*digests, *committed][:MAX_COMMITTED_DIGESTS]
    return Batch(kept, {**batch.position, COMMITTED_KEY: carried}), len(batch.records) - len(kept)


def _process_batch(
    connector: Connector[Any], env: Enveloper, batch: Batch, drift: DriftCheck | None, observed: list[Any] | None
) -> tuple[list[Event], BatchCounts, list[_Span]]:
    """:func:`process_batch`, also saying which events each mapped record became (to account for refusals), and
    adding the models of every mapped record to ``observed`` (the data-quality monitors' input) when given."""
    counts = BatchCounts(records_in=len(batch.records))
    events: list[Event] = []
    spans: list[_Span] = []
    # Local names for the hooks: filter() returns a reason to drop the record; identity() its source key and version.
    decode, drop_reason, source_identity, map_ = connector.decode, connector.filter, connector.identity, connector.map
    converters: _Converters = {}
    for raw in batch.records:
        stage = "decode"
        key: str | None = None
        record: Any = raw
        try:
            record = decode(raw)
            stage = "map"
            reason = drop_reason(record)
            if reason is not None:
                counts.filtered[reason] += 1
                continue
            # After the filter (records left out on purpose, or re-read, raise no alert). Shapes are learnt from
            # upstream JSON objects, so a connector's own record types (a decoded MQTT message, a FHIR history
            # deletion) are not compared with them.
            if drift is not None and type(record) is dict:
                _check_drift(connector, env, drift, record, batch.position, events, counts)
            key, version = source_identity(record)
            models = map_(record)
            if not models:
                raise MappingError("map() returned no events; leave records out with filter() and a reason")
            stage = "validate"
            out = _envelope_all(env, models, key, version, converters)
        except LeftOut as left:  # found out while decoding or mapping: as if filter() had returned the reason
            counts.filtered[left.reason] += 1
            continue
        except Exception as exc:  # one bad record (a plugin's bug too) is one DLQ record, never a dead daemon
            if isinstance(exc, InletError) and exc.retriable:  # not the record's fault: the supervisor retries
                raise
            failed = ContractViolation.from_validation(exc) if isinstance(exc, ValidationError) else exc
            where, known = stage, key
            if isinstance(failed, RecordError):  # the class says where it failed, and may know the source
                where, known = failed.stage, key or failed.source_key
            key_of = known or _known_key(source_identity, record)
            events.append(_dlq(env, raw, batch.position, where, failed, key_of, counts))
            continue
        if observed is not None:
            observed.extend(models)
        counts.records_mapped += 1
        counts.events_out += len(out)
        spans.append((len(events), len(events) + len(out), key))
        events.extend(out)
    return events, counts, spans


def truncated(dead: Event, keep: int = DLQ_TRUNCATED_BYTES) -> Event:
    """A DLQ record with its headers and the first ``keep`` bytes of its payload; headers note the original size."""
    headers = [*dead.headers, ("dlq_payload_truncated", b"true"), ("dlq_payload_bytes", str(len(dead.value)).encode())]
    return Event(topic=dead.topic, key=dead.key, value=dead.value[:keep], headers=headers, id=dead.id)


def refused_event(
    env: Enveloper, event: Event, rejected: Rejected, position: Position | None, source_key: str | None
) -> Event:
    """The DLQ record (stage ``sink``) of an event the sink refused for good: the event's value is the payload.

    Also the outbox relay's, for a row Kafka refuses (no position or source key there: the row's event id is)."""
    message = f"{rejected.message} (event {event.id} of {len(event.value)} bytes for topic {event.topic})"
    dead = env.dead_letter(
        DlqRecord(
            stage="sink",
            error_type=rejected.error_type,
            message=message,
            payload=event.value,
            position=position,
            source_key=source_key,
        )
    )
    # Its own id, from the refused event's: one record's several refused events (majors) are several DLQ records.
    eid = event_id(env.namespace, event.id, "sink", "dlq", 0)
    headers = [(k, eid.encode()) if k == "ce_id" else (k, v) for k, v in dead.headers]
    headers += [("dlq_topic", event.topic.encode()), ("dlq_event_id", event.id.encode())]
    return Event(topic=dead.topic, key=dead.key, value=dead.value, headers=headers, id=eid)


@dataclass
class _Pending:
    ack: asyncio.Future[Sequence[Rejected]]
    position: Position
    counts: BatchCounts
    events: list[Event]
    spans: list[_Span]
    when: datetime | None = None  # the event time of the batch's last event (core.status: lag)


class Pipeline:
    """Runs one read pass of a connector into a sink, committing positions as batches are acknowledged."""

    def __init__(
        self,
        connector: Connector[Any],
        env: Enveloper,
        sink: Sink,
        checkpoints: PositionStore,
        stats: Stats,
        *,
        max_in_flight: int = 4,
        drift: DriftCheck | None = None,
        position_name: str | None = None,
        redelivered: bool = False,
        monitors: Monitors | None = None,
    ) -> None:
        self.connector = connector
        self.env = env
        self.sink = sink
        self.checkpoints = checkpoints
        self.stats = stats
        self.max_in_flight = max_in_flight
        self.drift = drift
        self.position_name = position_name or env.integration
        """What the position is stored under: the integration's name, ``name#slot`` for a slot of it."""
        self.position: Position | None = None
        self.redelivered = redelivered
        """Exactly-once with a push source (``Connector.redelivers``): each committed position carries the digests
        of its batch's messages under :data:`COMMITTED_KEY`; a message redelivered after a crash between a commit
        and its acknowledgement matches one and is filtered (:data:`REDELIVERED`) instead of committed twice. One
        batch is enough: the pipeline acknowledges each batch right after its commit, before the next commit."""
        self.monitors = monitors
        """The integration's data-quality monitors: they see each batch's mapped models, their alerts go with the
        batch, their state is stored beside the position when it changed (``core.monitors.store_state``)."""

    async def run(self, position: Position | None, stop: asyncio.Event) -> Position | None:
        """Read from ``position`` until the connector is caught up or ``stop`` is set; return the last commit."""
        self.position = position
        committed = dict.fromkeys((position or {}).get(COMMITTED_KEY, ())) if self.redelivered else {}
        pending: deque[_Pending] = deque()
        batches = self.connector.read(position).__aiter__()
        stopper = asyncio.ensure_future(stop.wait())
        nxt: asyncio.Future[Batch] | None = None
        try:
            while not stop.is_set():
                if nxt is None:
                    nxt = asyncio.ensure_future(batches.__anext__())
                # Commit as soon as the oldest batch is acknowledged, even while no new batch arrives: a push
                # source (MQTT) only sends more once its PUBACKs — sent at commit — have gone out.
                waits: set[asyncio.Future[Any]] = {nxt, stopper}
                if pending:
                    waits.add(pending[0].ack)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                while pending and pending[0].ack.done():
                    await self._commit(pending.popleft())
                if not nxt.done():
                    if stop.is_set():  # stopping: abandon the read, keep what is in flight
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await nxt
                        break
                    continue
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = None
                pending.append(await self._submit(batch, committed))
                while pending and (len(pending) >= self.max_in_flight or pending[0].ack.done()):
                    await self._commit(pending.popleft())
            while pending:  # drain: everything handed to the sink gets its commit
                await self._commit(pending.popleft())
        finally:
            stopper.cancel()
            for p in pending:  # after a failure: nothing more is committed; collect the outcomes quietly
                p.ack.add_done_callback(lambda f: f.cancelled() or f.exception())
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await nxt
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
        if not stop.is_set():
            caught_up()  # the source had nothing more (core.progress: the lag gauge's clock)
        return self.position

    async def _submit(self, batch: Batch, committed: dict[str, None]) -> _Pending:
        """Process a batch and hand its events to the sink (exactly-once push: without redelivered messages)."""
        left = 0
        if self.redelivered:
            batch, left = _left_redelivered(self.connector, batch, committed)
        observed: list[Any] | None = None if self.monitors is None else []
        events, counts, spans = _process_batch(self.connector, self.env, batch, self.drift, observed)
        if self.monitors is not None and observed is not None:
            for alert in self.monitors.observe(observed):  # alerts are no record's events: not in the counts
                events.append(self.env.envelope(alert, alert.alert_id, alert.status))
        if left:
            counts.records_in += left
            counts.filtered[REDELIVERED] += left
        ack = asyncio.ensure_future(await self.sink.submit(events))
        return _Pending(ack, batch.position, counts, events, spans, self.env.last_time)

    async def _commit(self, item: _Pending) -> None:
        rejected = await item.ack
        if rejected:  # a sink that resolves to None (an older or a test sink) refused nothing
            await self._dead_letter(item, rejected)
        if item.events or item.position != self.position:  # a poll that found nothing new writes nothing
            await self.checkpoints.save(self.env.customer, self.position_name, item.position)
            if self.monitors is not None:  # after the position: once per window, when a window's end changed it
                await store_state(self.monitors, self.checkpoints, self.env.customer, self.position_name)
        AFTER_COMMIT.hit()  # crash tests: committed, not yet acknowledged upstream
        self.position = item.position
        self.stats.add(item.counts)
        self.stats.last_position = item.position
        committed(item.position)  # per batch: the lag gauge's clock and the position on the log lines
        if item.when is not None and (self.stats.newest_event_time is None or item.when > self.stats.newest_event_time):
            self.stats.newest_event_time = item.when
        await self.connector.acknowledge(item.position)

    async def _dead_letter(self, item: _Pending, rejected: Sequence[Rejected]) -> None:
        """DLQ records for the events the sink refused; durable before the batch's position is committed."""
        env, counts, spans = self.env, item.counts, item.spans
        starts = [span[0] for span in spans]
        moved: set[int] = set()
        out: list[Event] = []
        for refusal in rejected:
            event = item.events[refusal.index]
            if event.topic == env.dlq_topic:  # a DLQ record itself (its payload too large): its record is counted
                out.append(truncated(event))
                continue
            j = bisect.bisect_right(starts, refusal.index) - 1
            source_key = None
            if j >= 0 and refusal.index < spans[j][1]:
                source_key = spans[j][2]
                counts.events_out -= 1
                if j not in moved:  # the record is a DLQ record now, however many of its events were refused
                    moved.add(j)
                    counts.records_mapped -= 1
                    counts.dlq["sink"] += 1
                    counts.reasons[dlq_reason("sink", refusal.error_type, refusal.message)] += 1
                    counts.sample("sink", refusal.error_type, refusal.message, event.value)
            # else: a drift alert, which is no record of its own: its DLQ record keeps the alert, uncounted
            out.append(refused_event(env, event, refusal, item.position, source_key))
        while out:
            again: list[Event] = []
            for refusal in await self.sink.send(out) or ():
                dead = out[refusal.index]
                if any(k == "dlq_payload_truncated" for k, _ in dead.headers):
                    raise SinkRefused(
                        f"the sink refused a DLQ record for {env.dlq_topic} even with its payload "
                        f"truncated to {len(dead.value)} bytes: {refusal.error_type}: "
                        f"{refusal.message}; nothing after position {item.position} is committed"
                    )
                again.append(truncated(dead))
            out = again
