"""The outbox relay: ships the embedded outbox (events, DLQ and drift records) to Kafka, in order, losing nothing.

A site that started on the embedded default moves to Kafka without re-reading its upstreams: ``inlet relay``
(``--once``: what the outbox holds now, then stop), or ``relay: {enabled: true}`` in ``inlet.yaml``, which runs
the relay inside ``inlet run`` while the integrations go on writing the outbox. Every row is produced with its
topic, key, value and headers unchanged, so event ids stay what they were.

How the guarantees are kept:

- **Nothing lost, kill -9 included.** The shipped-up-to watermark (table ``relay_shipped`` in the outbox) is
  committed only once Kafka acknowledged (acks=all) every row up to it: a contiguous prefix in ``seq`` order.
  After a crash the rows above it are produced again: duplicates on Kafka, with their same event ids.
- **Per-key order.** Rows are read in ``seq`` order. All rows of one topic and key go to one partition, chosen
  by the Kafka sink's own partitioner (a key lands where :class:`~inlet.core.sinks.kafka.KafkaSink` puts it, so
  order holds across a later switch to ``sink: kafka``). Each partition has at most one unacknowledged batch;
  its next batch (rows appended in ``seq`` order meanwhile) is sent only after that one was acknowledged. So a
  batch that fails is never overtaken by a later one of its partition: after a failure every outstanding batch
  settles, the producer (idempotent, one per relay) is closed, and a fresh one resends from the watermark — all
  but the rows Kafka acknowledged meanwhile (on each partition those come before its failed batch, so skipping
  them keeps the order; a new process resends them too).
- **Bounded memory.** Pages of ``page_size`` rows; at most ``max_in_flight_events`` rows and about
  ``max_in_flight_bytes`` bytes read and not yet in the acknowledged prefix.
- **Pruning.** Rows shipped (acknowledged) at least ``retention_seconds`` ago are deleted in small transactions;
  rows above the watermark never are. ``seq`` is AUTOINCREMENT, so a pruned ``seq`` is never reused.
- **One relay per outbox.** An exclusive ``flock`` on ``<outbox>.relay.lock`` (released by the kernel when the
  process dies, kill -9 too): two relays would interleave their producers and reorder keys.

Kafka being away is not an error to give up on: aiokafka retries an idempotent batch until it is acknowledged,
the progress line says since when nothing was, and ``inlet run``'s integrations go on filling the outbox.

What Kafka refuses is decided by the Kafka sink's table (:data:`~inlet.core.sinks.kafka.ERROR_ACTIONS`):

- ``retry`` (away, busy, electing): the session fails and a fresh one resends from the watermark, with backoff.
- ``dlq`` (larger than ``message.max.bytes``, a topic it will not take it on): the row is to blame and must not
  block the rows behind it. A refused batch of several rows is resent one row per batch (a fresh producer: the
  refused batch broke the idempotent producer's sequence numbers on its partition); a row refused alone is
  shipped as its DLQ record instead — stage ``sink``, the refused row as payload, the broker's error, the row's
  event id and topic (``dlq_event_id``, ``dlq_topic``), built by the pipeline's own
  :func:`~inlet.core.pipeline.refused_event` on the DLQ topic of the row's integration (its ``ce_customer`` /
  ``ce_integration`` headers, ``dlq_topic_template``) — and the watermark moves past it once Kafka has that. A
  DLQ record refused in turn is sent with its payload cut by :func:`~inlet.core.pipeline.truncated` (a row that
  is itself a DLQ record: at once); refused even then, or a row naming no integration, stops the relay
  (:class:`RelayRefused`). These restarts are immediate and never count as failures.
- ``fatal`` (cluster authorization, a broker too old), or a producer that cannot start because Kafka refuses
  inlet's credentials or certificates (:func:`~inlet.core.kafka_client.refusal`): :class:`RelayRefused`, a
  :class:`~inlet.core.errors.SinkRefused` — the relay stops at once, not retried like an outage.

Topics: with ``topics`` given (:meth:`Relay.from_config`, so ``inlet relay`` and ``relay: {enabled: true}``), the
topics the unshipped rows target and their integrations' DLQ topics get the supervisor's start-up check
(:func:`~inlet.core.topics.ensure_topics`) before the first row is sent, and each topic or integration first
seen later before its rows are: missing topics are created when ``topics.create`` says so, otherwise the relay
stops with :class:`~inlet.core.topics.TopicsMissing` naming them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import random
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inlet.core.config import KafkaSettings, RelaySettings, SupervisorConfig, TopicsSettings
from inlet.core.envelope import Enveloper, Event
from inlet.core.errors import InletError, RelayBusy, RelayError, RelayFailed, RelayRefused, SinkRefused
from inlet.core.kafka_client import connection_options, describe, start_client
from inlet.core.pipeline import refused_event, truncated
from inlet.core.sinks import Rejected
from inlet.core.sinks.kafka import KeyHashPartitioner, action_for, rejection, topic_partitions
from inlet.core.sinks.outbox import open_outbox
from inlet.core.sqlite import SqliteStore
from inlet.core.topics import Kind, ensure_topics, topic_specs

__all__ = [
    "Relay",
    "RelayBusy",
    "RelayError",
    "RelayFailed",
    "RelayProgress",
    "RelayRefused",
    "lock_path",
    "read_watermark",
    "unshipped",
]

log = structlog.get_logger("inlet.relay")

PRUNE_CHUNK = 5000
"""Rows deleted per transaction: the outbox's writer waits for at most one such chunk."""

_Row = tuple[int, str, str, bytes | None, bytes, str]  # seq, event id, topic, key, value, headers (JSON)
_Parsed = tuple[int, str, str, bytes | None, bytes, dict[str, str], int]
"""A row with its headers parsed, and the size of their JSON."""
_Target = tuple[str, str | None, str | None, str | None]  # topic, ce_customer, ce_integration, ce_type

_DLQ_TOPIC_TEMPLATE: str = SupervisorConfig.model_fields["dlq_topic_template"].default


class _Isolate(RelayError):
    """Kafka refused rows for good: a fresh session resends them one per batch, or as DLQ records (no backoff).

    A local signal: :meth:`Relay._sessions` catches it and starts that session at once; it never leaves the relay.
    """


@dataclass
class RelayProgress:
    """What a relay run has done so far (the progress line and the summary)."""

    shipped: int = 0
    """Rows acknowledged by Kafka in this run, each counted once (resent duplicates are not counted again); a row
    Kafka refused counts once its DLQ record is acknowledged."""
    remaining: int = 0
    """Rows above the acknowledged prefix when last counted."""
    watermark: int = 0
    """The durable shipped-up-to ``seq``."""
    pruned: int = 0
    dead_lettered: int = 0
    """Rows Kafka refused for good, shipped as DLQ records (stage ``sink``) instead."""
    failures: int = 0
    last_error: str | None = None
    """Why the relay is not shipping right now (a failure, Kafka silent); None while it is."""


def lock_path(outbox: Path) -> Path:
    """The lock file that makes a relay the only one of its outbox."""
    return outbox.with_name(outbox.name + ".relay.lock")


def read_watermark(outbox: Path) -> int:
    """The durable shipped-up-to ``seq`` of an outbox, read as an outside observer would (0 when none yet)."""
    return _read_only(outbox, "SELECT COALESCE(MAX(upto), 0) FROM relay_shipped")


def unshipped(outbox: Path) -> int:
    """How many rows of an outbox were never acknowledged by Kafka (0 without an outbox); read-only."""
    if _read_only(outbox, "SELECT COUNT(*) FROM events") == 0:
        return 0
    after = read_watermark(outbox)
    return _read_only(outbox, f"SELECT COUNT(*) FROM events WHERE seq > {int(after)}")


def _read_only(outbox: Path, query: str) -> int:
    if not outbox.exists():
        return 0
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(query).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # created but not initialised yet, or from before the relay
            return 0
        raise
    finally:
        conn.close()


# --- the outbox side (each runs on the outbox store's thread) ----------------------------------------------


def _watermark(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(upto), 0) FROM relay_shipped").fetchone()[0])


def _last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def _remaining(conn: sqlite3.Connection, after: int) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (after,)).fetchone()[0])


def _page(conn: sqlite3.Connection, after: int, end: int | None, limit: int) -> list[_Row]:
    if end is None:
        return conn.execute(
            "SELECT seq, event_id, topic, key, value, headers FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
    return conn.execute(
        "SELECT seq, event_id, topic, key, value, headers FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        (after, end, limit),
    ).fetchall()


def _targets(conn: sqlite3.Connection, after: int) -> list[_Target]:
    """Each topic the rows above ``after`` target, with the integrations writing it and their ``ce_type``."""
    return conn.execute(
        "SELECT DISTINCT topic, json_extract(headers, '$.ce_customer'), "
        "json_extract(headers, '$.ce_integration'), json_extract(headers, '$.ce_type') "
        "FROM events WHERE seq > ?",
        (after,),
    ).fetchall()


def _mark(conn: sqlite3.Connection, upto: int, now: float, granularity: float) -> None:
    """Commit the watermark ``upto``: move the newest mark forward, or open a new one once it is old enough."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        last = conn.execute("SELECT upto, opened_at FROM relay_shipped ORDER BY upto DESC LIMIT 1").fetchone()
        if last is not None and upto <= last[0]:
            return
        if last is not None and now - last[1] < granularity:
            conn.execute("UPDATE relay_shipped SET upto = ?, acked_at = ? WHERE upto = ?", (upto, now, last[0]))
        else:
            conn.execute("INSERT INTO relay_shipped (upto, acked_at, opened_at) VALUES (?, ?, ?)", (upto, now, now))


def _prunable(conn: sqlite3.Connection, cutoff: float) -> int | None:
    """The highest ``seq`` whose every row up to it was acknowledged no later than ``cutoff``."""
    row = conn.execute("SELECT MAX(upto) FROM relay_shipped WHERE acked_at <= ?", (cutoff,)).fetchone()
    return None if row[0] is None else int(row[0])


def _delete_chunk(conn: sqlite3.Connection, upto: int) -> int:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        low = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        if low is None or low > upto:
            return 0
        return int(conn.execute("DELETE FROM events WHERE seq <= ?", (min(upto, low + PRUNE_CHUNK - 1),)).rowcount)


def _forget_marks(conn: sqlite3.Connection, upto: int) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM relay_shipped WHERE upto < ?", (upto,))


# --- the Kafka side -----------------------------------------------------------------------------------------


class _Lane:
    """One topic partition: rows in ``seq`` order, at most one batch of them unacknowledged at a time."""

    __slots__ = ("builder", "full", "in_flight", "partition", "sent", "sent_bytes", "seqs", "size", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: Any = None  # the open batch: rows appended while the previous one is in flight
        self.seqs: list[int] = []
        self.size = 0
        self.full: deque[tuple[Any, list[int], int]] = deque()  # closed batches waiting their turn
        self.in_flight: asyncio.Future[Any] | None = None
        self.sent: list[int] = []
        self.sent_bytes = 0

    def append(
        self,
        producer: Any,
        seq: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        size: int,
        *,
        alone: bool = False,
    ) -> None:
        """Add a row to the open batch; ``alone``: in a batch of its own (a row to tell apart after a refusal)."""
        if alone:
            self._close()
        if self.builder is None:
            self.builder = producer.create_batch()
        if self.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._close()
            self.builder = producer.create_batch()
            # An empty batch takes any one record (aiokafka); one too large for Kafka is refused by the broker.
            self.builder.append(timestamp=None, key=key, value=value, headers=headers)
        self.seqs.append(seq)
        self.size += size
        if alone:
            self._close()

    def _close(self) -> None:
        if self.seqs:
            self.full.append((self.builder, self.seqs, self.size))
            self.builder, self.seqs, self.size = None, [], 0

    def next_batch(self) -> tuple[Any, list[int], int] | None:
        if self.full:
            return self.full.popleft()
        if self.seqs:
            batch = (self.builder, self.seqs, self.size)
            self.builder, self.seqs, self.size = None, [], 0
            return batch
        return None


@dataclass
class _Poison:
    """A row Kafka refused for good: shipped as its DLQ record instead."""

    error_type: str
    message: str
    """The broker's error for the row (what its DLQ record says)."""
    truncate: bool = False
    """Its DLQ record was refused whole: send it with the payload truncated."""
    truncated: bool = False
    """The DLQ record last built for it was truncated (refused even so: the relay stops)."""
    event_id: str = ""
    topic: str = ""
    dlq_topic: str = ""


class _Triage:
    """What Kafka refused for good, kept across sessions until the watermark passes it: rows to send one per
    batch (``alone``: to find which of a refused batch is to blame) and rows to ship as DLQ records (``poison``)."""

    def __init__(self, kafka: KafkaSettings, dlq_topic_template: str) -> None:
        self.kafka = kafka
        self.dlq_topic_template = dlq_topic_template
        self.poison: dict[int, _Poison] = {}
        self.alone: set[int] = set()
        self._envs: dict[tuple[str, str], Enveloper] = {}

    def dlq_topic(self, customer: str, integration: str) -> str:
        return self.dlq_topic_template.format(customer=customer, integration=integration)

    def refuse(self, seq: int, error: BaseException) -> _Poison:
        refused = rejection(0, error)
        poison = self.poison[seq] = _Poison(refused.error_type, refused.message)
        return poison

    def record(
        self, row: _Parsed, poison: _Poison | None
    ) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]], int]:
        """What to produce for ``row``: itself, or (poisoned) its DLQ record; topic, key, value, headers, size."""
        seq, eid, topic, key, value, headers, headers_size = row
        if poison is None:
            return (
                topic,
                key,
                value,
                [(k, v.encode()) for k, v in headers.items()],
                len(value) + len(key or b"") + headers_size,
            )
        customer, integration = headers.get("ce_customer"), headers.get("ce_integration")
        what = f"outbox row seq {seq} (event {eid}, {len(value)} bytes for topic {topic})"
        if not customer or not integration:
            raise RelayRefused(
                f"Kafka refused {what} for good: {poison.error_type}: {poison.message}; the row names "
                "no integration (headers ce_customer, ce_integration) whose DLQ topic could take it. "
                "Not retried: nothing after it is marked shipped; make Kafka take it (or delete the "
                "row from the outbox), then run the relay again"
            )
        env = self._envs.get((customer, integration))
        if env is None:
            env = self._envs[customer, integration] = Enveloper(
                customer, integration, dlq_topic_template=self.dlq_topic_template
            )
        event = Event(topic=topic, key=key, value=value, headers=[(k, v.encode()) for k, v in headers.items()], id=eid)
        if headers.get("ce_type") == "inlet.dlq" or topic == env.dlq_topic:  # a DLQ record itself: truncated
            if "dlq_payload_truncated" in headers:
                raise RelayRefused(
                    f"Kafka refused {what}, a DLQ record already truncated, for good: "
                    f"{poison.error_type}: {poison.message}. Not retried: nothing after it is marked "
                    "shipped"
                )
            dead = truncated(event)
        else:
            dead = refused_event(env, event, Rejected(0, poison.error_type, poison.message), None, None)
            if poison.truncate:
                dead = truncated(dead)
        poison.truncated = any(k == "dlq_payload_truncated" for k, _ in dead.headers)
        poison.event_id, poison.topic, poison.dlq_topic = eid, topic, dead.topic
        size = len(dead.value) + len(dead.key or b"") + sum(len(k) + len(v) for k, v in dead.headers)
        return dead.topic, dead.key, dead.value, dead.headers, size

    def judge(self, failures: Sequence[tuple[str, int, list[int], BaseException]]) -> RelayError | None:
        """Record what refused batches say about their rows; the error that ends the session (the worst one)."""
        worst: RelayError | None = None
        for topic, partition, seqs, exc in failures:
            where = f"outbox rows seq {seqs[0]}-{seqs[-1]} for {topic} partition {partition}"
            action = action_for(exc)
            error: RelayError
            if action == "fatal":
                error = self.refused(exc)
            elif action == "retry":
                error = RelayError(f"Kafka did not take {where}: {exc!r}")
            elif len(seqs) > 1:
                self.alone.update(seqs)
                error = _Isolate(f"Kafka refused {where} for good: {exc!r}; they are sent again one per batch")
            else:
                seq = seqs[0]
                poison = self.poison.get(seq)
                if poison is None:
                    self.refuse(seq, exc)
                    error = _Isolate(f"Kafka refused {where} for good: {exc!r}; it is shipped as a DLQ record")
                elif not poison.truncated:
                    poison.truncate = True
                    error = _Isolate(
                        f"Kafka refused the DLQ record of outbox row seq {seq} ({poison.dlq_topic}): "
                        f"{exc!r}; it is sent again with its payload truncated"
                    )
                else:
                    error = RelayRefused(
                        f"Kafka refused the DLQ record of outbox row seq {seq} (event {poison.event_id} for "
                        f"{poison.topic}) on {poison.dlq_topic} even with its payload truncated: "
                        f"{rejection(0, exc).message}. Not retried: nothing after it is marked shipped"
                    )
            error.__cause__ = exc
            worst = _worst(worst, error)
        return worst

    def passed(self, upto: int, progress: RelayProgress) -> None:
        """The acknowledged prefix reached ``upto``: the poisoned rows up to it are in Kafka as DLQ records."""
        for seq in [s for s in self.poison if s <= upto]:
            poison = self.poison.pop(seq)
            progress.dead_lettered += 1
            log.warning(
                "outbox row refused by Kafka for good: shipped as a DLQ record",
                seq=seq,
                event_id=poison.event_id,
                topic=poison.topic,
                dlq_topic=poison.dlq_topic,
                error=f"{poison.error_type}: {poison.message}",
                truncated=poison.truncated,
            )
        if self.alone:
            self.alone = {s for s in self.alone if s > upto}

    def refused(self, error: BaseException) -> RelayRefused:
        return RelayRefused(
            f"{describe(self.kafka)} refused inlet: {rejection(0, error).message}. Not retried: no row "
            "is to blame; fix the cluster's permissions or the configuration and restart"
        )


_OUTAGES = (KafkaError, OSError, TimeoutError, sqlite3.Error)
"""Failures of a session the relay retries besides inlet's retriable errors: Kafka, the network, the outbox."""


def _retried(exc: Exception) -> bool:
    """Whether a failed session is resent from the watermark after a backoff (the class says, for inlet's own)."""
    return exc.retriable if isinstance(exc, InletError) else isinstance(exc, _OUTAGES)


def _worst(a: RelayError | None, b: RelayError | None) -> RelayError | None:
    """The error that decides how a session ends: a refusal (stop), an outage (back off), else a triage (resend)."""

    def rank(e: RelayError | None) -> int:
        return -1 if e is None else 2 if e.fatal else 0 if isinstance(e, _Isolate) else 1

    return a if rank(a) >= rank(b) else b


class _Shipment:
    """One producer session's state: the lanes, what was read, what Kafka acknowledged."""

    def __init__(
        self,
        producer: Any,
        partitioner: KeyHashPartitioner,
        wake: asyncio.Event,
        cursor: int,
        triage: _Triage,
        skip: set[int],
    ) -> None:
        self.producer = producer
        self.skip = skip  # rows an earlier session of this run had acknowledged: not sent again
        self.partitioner = partitioner
        self.wake = wake
        self.triage = triage
        self.cursor = cursor  # the last seq read
        self.lanes: dict[tuple[str, int], _Lane] = {}
        self.partitions: dict[str, list[int]] = {}
        self.refused_topics: dict[str, BaseException] = {}  # topics Kafka refuses for good (dlq): rows go to the DLQ
        self.ready: set[_Lane] = set()  # lanes with rows and nothing in flight
        self.done: deque[_Lane] = deque()  # lanes whose batch Kafka answered
        self.unacked: deque[int] = deque()  # seqs read and not yet in the acknowledged prefix, in order
        self.acked: set[int] = set()  # of those, the ones Kafka acknowledged
        self.bytes = 0  # read and not yet acknowledged
        self.flying = 0  # batches sent and not yet answered
        self.last_ack = asyncio.get_running_loop().time()  # or since when something is in flight

    async def add(self, rows: Sequence[_Parsed]) -> None:
        producer, triage, skip = self.producer, self.triage, self.skip
        for row in rows:
            seq = row[0]
            if seq in skip:  # durable already; its partition's later rows were not acknowledged: order holds
                skip.discard(seq)
                self.unacked.append(seq)
                self.acked.add(seq)
                self.cursor = seq
                continue
            while True:
                poison = triage.poison.get(seq)
                if poison is None and row[2] in self.refused_topics:
                    poison = triage.refuse(seq, self.refused_topics[row[2]])
                topic, key, value, headers, size = triage.record(row, poison)
                parts = self.partitions.get(topic)
                if parts is not None:
                    break
                try:
                    parts = self.partitions[topic] = await topic_partitions(producer, topic)
                    break
                except (KafkaError, OSError) as exc:
                    action = action_for(exc)
                    if action == "dlq" and poison is None:  # e.g. no WRITE on it: its rows go to the DLQ
                        self.refused_topics[topic] = exc
                        continue
                    if action == "dlq":
                        raise RelayRefused(
                            f"Kafka refuses the DLQ topic {topic} of outbox row seq {seq}: "
                            f"{rejection(0, exc).message}. Not retried: nothing after it is marked "
                            "shipped"
                        ) from exc
                    if action == "fatal":
                        raise triage.refused(exc) from exc
                    raise RelayError(f"topic {topic}: {exc!r}") from exc
            partition = self.partitioner(key, parts, parts)
            lane = self.lanes.get((topic, partition))
            if lane is None:
                lane = self.lanes[topic, partition] = _Lane(topic, partition)
            lane.append(producer, seq, key, value, headers, size, alone=seq in triage.alone)
            self.unacked.append(seq)
            self.bytes += size
            if lane.in_flight is None:
                self.ready.add(lane)
            self.cursor = seq

    async def send_ready(self) -> None:
        while self.ready:
            lane = self.ready.pop()
            if lane.in_flight is not None:
                continue
            batch = lane.next_batch()
            if batch is None:
                continue
            builder, lane.sent, lane.sent_bytes = batch
            fut: asyncio.Future[Any] = await self.producer.send_batch(builder, lane.topic, partition=lane.partition)
            if not self.flying:
                self.last_ack = asyncio.get_running_loop().time()
            self.flying += 1
            lane.in_flight = fut
            fut.add_done_callback(functools.partial(self._answered, lane))

    def _answered(self, lane: _Lane, _fut: asyncio.Future[Any]) -> None:
        self.done.append(lane)
        self.wake.set()

    def collect(self) -> tuple[int, int | None, list[tuple[str, int, list[int], BaseException]]]:
        """Take in Kafka's answers: (rows newly in the acknowledged prefix, its new end or None, the failed batches:
        topic, partition, seqs, error)."""
        failures: list[tuple[str, int, list[int], BaseException]] = []
        while self.done:
            lane = self.done.popleft()
            fut, seqs = lane.in_flight, lane.sent
            assert fut is not None
            lane.in_flight, lane.sent = None, []
            self.flying -= 1
            exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
            if exc is not None:  # its rows stay unacknowledged; the lane sends nothing more
                failures.append((lane.topic, lane.partition, seqs, exc))
                continue
            self.acked.update(seqs)
            self.bytes -= lane.sent_bytes
            self.last_ack = asyncio.get_running_loop().time()
            if lane.full or lane.seqs:
                self.ready.add(lane)
        count, upto = 0, None
        unacked, acked = self.unacked, self.acked
        while unacked and unacked[0] in acked:
            upto = unacked.popleft()
            acked.discard(upto)
            count += 1
        return count, upto, failures

    def in_flight(self) -> list[asyncio.Future[Any]]:
        return [lane.in_flight for lane in self.lanes.values() if lane.in_flight is not None]


# --- the relay ----------------------------------------------------------------------------------------------


class Relay:
    """Ships ``outbox`` to the Kafka of ``kafka``; see the module's documentation for the guarantees."""

    def __init__(
        self,
        outbox: Path,
        kafka: KafkaSettings,
        settings: RelaySettings,
        *,
        dlq_topic_template: str = _DLQ_TOPIC_TEMPLATE,
        topics: TopicsSettings | None = None,
        config_dir: Path | None = None,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        """``topics``: check the topics the rows target as the supervisor's start-up does (None: not checked);
        ``config_dir``: where ``inlet.yaml`` is, for the messages."""
        self.outbox = outbox
        self.kafka = kafka
        self.settings = settings
        self.topics = topics
        self.config_dir = config_dir
        self._triage = _Triage(kafka, dlq_topic_template)
        self._checked: set[tuple[str, str | None, str | None]] = set()  # (topic, customer, integration) checked
        self._acked_above: set[int] = set()  # acknowledged above the prefix when the last session ended
        self._scanned = False  # the unshipped rows' topics were checked in this run
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.progress = RelayProgress()
        self._db: SqliteStore | None = None
        self._wake = asyncio.Event()
        self._finishing = False
        self._end: int | None = None  # once finishing: ship up to this seq, then return
        self._acked_upto = 0  # every row up to it acknowledged by Kafka
        self._committed = 0  # ... and durably recorded as shipped
        self._commit_task: asyncio.Task[None] | None = None
        self._prune_task: asyncio.Task[int] | None = None
        self._partitioner = KeyHashPartitioner()
        self._next_progress = 0.0
        self._next_prune = 0.0
        self._started = 0.0
        self._bounded = False
        retention = settings.retention_seconds
        # How long the newest mark is moved forward before a new one is opened: pruning may keep a row up to
        # this much longer than the retention (1 %, at most an hour), never shorter.
        self._granularity = 3600.0 if retention is None else min(retention / 100, 3600.0)

    @classmethod
    def from_config(cls, cfg: SupervisorConfig, outbox: Path, *, config_dir: Path | None = None) -> Relay:
        """The relay of a configuration: its Kafka, ``relay:``, DLQ topic template, ``topics:`` and backoff."""
        assert cfg.kafka is not None
        return cls(
            outbox,
            cfg.kafka,
            cfg.relay,
            dlq_topic_template=cfg.dlq_topic_template,
            topics=cfg.topics,
            config_dir=config_dir,
            backoff_initial_seconds=cfg.restart_backoff_initial_seconds,
            backoff_max_seconds=cfg.restart_backoff_max_seconds,
        )

    def finish(self) -> None:
        """Ship what the outbox holds now, then let :meth:`run` return (``inlet run --once``)."""
        self._finishing = True
        self._wake.set()

    async def run(
        self, stop: asyncio.Event, *, once: bool = False, max_failures: int | None = None, wait_for_lock: bool = False
    ) -> RelayProgress:
        """Ship until ``stop`` is set (or, with ``once`` / after :meth:`finish`, until what was there is shipped).

        A failed session is restarted from the watermark with jittered exponential backoff; after
        ``max_failures`` failures in a row :class:`RelayFailed` is raised, and with ``max_failures`` set Kafka
        acknowledging nothing for twice the request timeout gives up too (a bounded run must end; following,
        the relay waits for Kafka as long as it takes). Another relay on the same outbox raises
        :class:`RelayBusy`, or with ``wait_for_lock`` is waited for. Kafka refusing inlet raises
        :class:`RelayRefused` at once, topics missing and not created :class:`~inlet.core.topics.TopicsMissing`.
        """
        if once:
            self._finishing = True
        self._end = None
        self._bounded = max_failures is not None
        self._wake = asyncio.Event()
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _f: self._wake.set())
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        lock = await self._lock(stop, wait=wait_for_lock)
        try:
            if lock is None:
                return self.progress
            self._db = open_outbox(self.outbox)
            self._committed = self._acked_upto = self.progress.watermark = await self._db.acall(_watermark)
            self.progress.remaining = await self._db.acall(lambda c: _remaining(c, self._committed))
            log.info(
                "relay started",
                outbox=str(self.outbox),
                bootstrap=self.kafka.bootstrap,
                watermark=self._committed,
                remaining=self.progress.remaining,
            )
            self._next_progress = loop.time() + self.settings.progress_interval_seconds
            self._next_prune = loop.time()
            if await self._sessions(stop, max_failures) and self.settings.retention_seconds is not None:
                await self._await_prune()  # finished: prune once more, what was just shipped included
                self._prune_task = asyncio.create_task(self._prune())
            await self._await_prune()
            return self.progress
        finally:
            stopper.cancel()
            if self._prune_task is not None and not self._prune_task.done():
                self._prune_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._prune_task
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    after = self._committed
                    self.progress.remaining = await self._db.acall(lambda c: _remaining(c, after))
                log.info(
                    "relay stopped",
                    shipped=self.progress.shipped,
                    remaining=self.progress.remaining,
                    watermark=self._committed,
                    pruned=self.progress.pruned,
                    seconds=round(loop.time() - self._started, 1),
                )
                self._db.close()
                self._db = None
            if lock is not None:
                os.close(lock)  # releases the flock

    async def _sessions(self, stop: asyncio.Event, max_failures: int | None) -> bool:
        """Producer sessions until finished (True) or stopped (False); failures restart from the watermark."""
        failures, backoff = 0, self.backoff_initial_seconds
        while not stop.is_set():
            before = self._committed
            try:
                if await self._session(stop):
                    return True
            except _Isolate as exc:  # progress, not a failure: resend from the watermark at once
                log.warning(
                    "kafka refused outbox rows for good; resending from the watermark",
                    error=str(exc),
                    watermark=self._committed,
                )
                continue
            except Exception as exc:
                if not _retried(exc):  # the relay refused or given up, topics missing, a bug: it ends
                    raise
                if self._committed > before:
                    failures, backoff = 0, self.backoff_initial_seconds
                failures += 1
                self.progress.failures += 1
                self.progress.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "relay failed; resending from the watermark",
                    error=repr(exc),
                    watermark=self._committed,
                    retry_in=round(backoff, 2),
                    failures=failures,
                )
                if max_failures is not None and failures >= max_failures:
                    raise RelayFailed(
                        f"gave up after {failures} failures in a row; last: {self.progress.last_error}"
                    ) from exc
                await self._sleep(stop, backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.backoff_max_seconds)
        return False

    # --- one producer session ---

    async def _session(self, stop: asyncio.Event) -> bool:
        """Ship with one producer until done (True), stopped (False) or failed (raises)."""
        k = self.kafka
        if self.topics is not None and not self._scanned:
            assert self._db is not None
            after = self._acked_upto
            await self._check_topics(await self._db.acall(lambda c: _targets(c, after)))
            self._scanned = True
        # linger 0: a lane's batch fills while its previous one is in flight; lingering again only adds latency.
        producer = AIOKafkaProducer(
            **connection_options(k), acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=k.max_batch_size
        )
        try:
            await start_client(producer, k)  # an outage is SinkUnavailable (retried), a refusal is not
        except SinkRefused as refused:
            raise RelayRefused(str(refused)) from refused
        ship = _Shipment(producer, self._partitioner, self._wake, self._acked_upto, self._triage, self._acked_above)
        try:
            return await self._pump(ship, stop)
        finally:
            self._acked_above = {seq for seq in ship.acked | ship.skip if seq > self._acked_upto}
            try:
                await self._commit()  # the acknowledged prefix, whatever happened
            finally:
                # Every batch has settled (or, stopping, the drain bound passed): nothing of this producer is
                # left to overtake the next one. stop() flushes; bounded so that Kafka gone cannot hang a stop.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), timeout=k.request_timeout_ms / 1000 + 5)

    async def _pump(self, ship: _Shipment, stop: asyncio.Event) -> bool:
        s = self.settings
        assert self._db is not None
        db = self._db
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while True:
            self._wake.clear()
            failure = self._collect(ship)
            if failure is not None:
                await self._settle(ship, stop)
                failure = _worst(failure, self._collect(ship))
                assert failure is not None
                raise failure
            if stop.is_set():
                await self._settle(ship, stop)
                self._collect(ship)
                return False
            await ship.send_ready()
            if self._finishing and self._end is None:
                self._end = max(await db.acall(_last_seq), self._acked_upto)
            end = self._end
            if end is not None and ship.cursor >= end and not ship.unacked:
                return True
            await self._periodic(ship)
            now = loop.time()
            room = len(ship.unacked) < s.max_in_flight_events and ship.bytes < s.max_in_flight_bytes
            more = end is None or ship.cursor < end
            if room and more and now >= next_poll:
                after, limit = ship.cursor, min(s.page_size, s.max_in_flight_events - len(ship.unacked))
                rows = await db.acall(functools.partial(_page, after=after, end=end, limit=limit))
                parsed = [
                    (seq, eid, topic, key, value, orjson.loads(headers), len(headers))
                    for seq, eid, topic, key, value, headers in rows
                ]
                try:
                    if self.topics is not None:
                        await self._check_topics(self._new_targets(parsed))
                    await ship.add(parsed)
                except Exception:  # what was sent is answered first: its acknowledgements count
                    await self._settle(ship, stop)
                    with contextlib.suppress(Exception):
                        self._collect(ship)
                    raise
                if not rows and end is not None:  # nothing left up to the end (rows deleted by hand)
                    ship.cursor = max(ship.cursor, end)
                if len(rows) < limit:  # caught up: look again after poll_interval_seconds
                    next_poll = now + s.poll_interval_seconds
                continue
            timeout = min(self._next_progress, self._next_prune, self._give_up_at(ship)) - now
            if room and more:
                timeout = min(timeout, next_poll - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    def _collect(self, ship: _Shipment) -> RelayError | None:
        count, upto, failures = ship.collect()
        if upto is not None:
            self._acked_upto = upto
            self.progress.shipped += count
            self.progress.last_error = None
            self._triage.passed(upto, self.progress)
        self._maybe_commit()
        return self._triage.judge(failures) if failures else None

    # --- topics ---

    def _new_targets(self, rows: Sequence[_Parsed]) -> list[_Target]:
        """The (topic, integration) pairs of ``rows`` not checked yet in this run."""
        checked = self._checked
        new: dict[tuple[str, str | None, str | None], str | None] = {}
        for _, _, topic, _, _, headers, _ in rows:
            target = (topic, headers.get("ce_customer"), headers.get("ce_integration"))
            if target not in checked and target not in new:
                new[target] = headers.get("ce_type")
        return [(*target, ce_type) for target, ce_type in new.items()]

    async def _check_topics(self, targets: Sequence[_Target]) -> None:
        """The supervisor's start-up check (``core.topics``) for the topics ``targets`` are written to and their
        integrations' DLQ topics: missing ones created or refused (``TopicsMissing``), as ``topics.create`` says."""
        topics = self.topics
        if topics is None:
            return
        wanted: list[tuple[str, Kind, str | None, str | None]] = []
        for topic, customer, integration, ce_type in targets:
            if (topic, customer, integration) in self._checked:
                continue
            writer = f"{customer}/{integration}" if customer and integration else None
            kind: Kind = "dlq" if ce_type == "inlet.dlq" else "drift" if ce_type == "inlet.drift" else "contract"
            wanted.append((topic, kind, ce_type if kind == "contract" else None, writer))
            if customer and integration:
                wanted.append((self._triage.dlq_topic(customer, integration), "dlq", None, writer))
        if not wanted:
            return
        apply = "inlet topics apply" + (f" --config {self.config_dir}" if self.config_dir is not None else "")
        try:
            await ensure_topics(
                self.kafka,
                topics,
                topic_specs(topics, wanted),
                config_dir=self.config_dir,
                fix=f"(those of the configured integrations) with `{apply}`, or by hand",
            )
        except SinkRefused as exc:
            raise RelayRefused(str(exc)) from exc
        self._checked.update((topic, customer, integration) for topic, customer, integration, _ in targets)

    async def _settle(self, ship: _Shipment, stop: asyncio.Event) -> None:
        """Wait until every batch sent is answered; when stopping, for at most twice the request timeout."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            self._wake.clear()
            pending = [f for f in ship.in_flight() if not f.done()]
            if not pending:
                return
            now = loop.time()
            if stop.is_set():
                if deadline is None:
                    deadline = now + 2 * self.kafka.request_timeout_ms / 1000
                if now >= deadline:
                    log.warning(
                        "stopping before Kafka answered; those rows are sent again next time", batches=len(pending)
                    )
                    return
            await self._periodic(ship)
            timeout = min(self._next_progress, self._give_up_at(ship), deadline or float("inf")) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    # --- watermark, progress, pruning ---

    def _maybe_commit(self) -> None:
        task = self._commit_task
        if task is not None:
            if not task.done():
                return
            self._commit_task = None
            task.result()  # a failed commit fails the session
        if self._acked_upto > self._committed:
            self._commit_task = asyncio.create_task(self._write_mark(self._acked_upto))

    async def _write_mark(self, upto: int) -> None:
        assert self._db is not None
        granularity = self._granularity
        await self._db.acall(lambda c: _mark(c, upto, time.time(), granularity))
        self._committed = self.progress.watermark = upto
        self._wake.set()

    async def _commit(self) -> None:
        """Commit the whole acknowledged prefix now."""
        task, self._commit_task = self._commit_task, None
        if task is not None:
            await task
        if self._acked_upto > self._committed:
            await self._write_mark(self._acked_upto)

    def _give_up_at(self, ship: _Shipment) -> float:
        """When a bounded run gives up on a Kafka that acknowledges nothing (raises once that is past)."""
        if not self._bounded or not ship.flying:
            return float("inf")
        limit = 2 * self.kafka.request_timeout_ms / 1000
        silent = asyncio.get_running_loop().time() - ship.last_ack
        if silent >= limit:
            raise RelayFailed(f"Kafka at {self.kafka.bootstrap} acknowledged nothing for {silent:.0f} s")
        return ship.last_ack + limit

    async def _periodic(self, ship: _Shipment) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        s = self.settings
        if now >= self._next_progress:
            self._next_progress = now + s.progress_interval_seconds
            assert self._db is not None
            after = self._acked_upto
            self.progress.remaining = await self._db.acall(lambda c: _remaining(c, after))
            silent = now - ship.last_ack
            if ship.flying and silent > 2 * self.kafka.request_timeout_ms / 1000:
                self.progress.last_error = f"Kafka has not acknowledged anything for {silent:.0f} s"
                log.warning(
                    "relay waiting for Kafka",
                    bootstrap=self.kafka.bootstrap,
                    silent_seconds=round(silent),
                    remaining=self.progress.remaining,
                    watermark=self._committed,
                )
            else:
                log.info(
                    "relay progress",
                    shipped=self.progress.shipped,
                    remaining=self.progress.remaining,
                    watermark=self._committed,
                    in_flight=len(ship.unacked),
                    per_s=round(self.progress.shipped / max(now - self._started, 1e-3)),
                )
        if s.retention_seconds is not None and now >= self._next_prune:
            self._next_prune = now + s.prune_interval_seconds
            if self._prune_task is None or self._prune_task.done():
                await self._await_prune()
                self._prune_task = asyncio.create_task(self._prune())

    async def _await_prune(self) -> None:
        task, self._prune_task = self._prune_task, None
        if task is None:
            return
        try:
            await task
        except (sqlite3.Error, OSError) as exc:  # pruning is housekeeping: the next one tries again
            log.warning("pruning the outbox failed", error=repr(exc))

    async def _prune(self, now: float | None = None) -> int:
        """Delete the rows Kafka acknowledged at least ``retention_seconds`` before ``now``; returns how many."""
        retention = self.settings.retention_seconds
        if retention is None or self._db is None:
            return 0
        db = self._db
        cutoff = (time.time() if now is None else now) - retention
        upto = await db.acall(lambda c: _prunable(c, cutoff))
        if upto is None:
            return 0
        upto = min(upto, self._committed)  # (it cannot be more; this says so)
        deleted = 0
        while n := await db.acall(lambda c: _delete_chunk(c, upto)):
            deleted += n
        await db.acall(lambda c: _forget_marks(c, upto))
        self.progress.pruned += deleted
        if deleted:
            log.info("pruned shipped rows from the outbox", rows=deleted, up_to_seq=upto)
        return deleted

    async def prune(self, now: float | None = None) -> int:
        """Prune once, outside :meth:`run` (which prunes every ``prune_interval_seconds`` itself)."""
        opened = self._db is None
        if opened:
            self._db = open_outbox(self.outbox)
            self._committed = await self._db.acall(_watermark)
        try:
            return await self._prune(now)
        finally:
            if opened and self._db is not None:
                self._db.close()
                self._db = None

    # --- helpers ---

    async def _lock(self, stop: asyncio.Event, *, wait: bool) -> int | None:
        path = lock_path(self.outbox)
        path.parent.mkdir(parents=True, exist_ok=True)
        warned = False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                message = f"another relay (pid {holder}) is shipping {self.outbox}; one relay per outbox"
                if not wait:
                    raise RelayBusy(message) from None
                if not warned:
                    log.warning("waiting for the other relay to stop", detail=message)
                    warned = True
                await self._sleep(stop, self.backoff_initial_seconds)
                if stop.is_set():
                    return None
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
