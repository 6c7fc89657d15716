"""Where positions live: one interface, two stores.

A position (a connector's opaque :data:`~inlet.core.types.Position`) is what the next run reads on from. One
supervisor alone keeps them in SQLite next to its outbox (:class:`~inlet.core.checkpoint.CheckpointStore`, the
embedded default). Several supervisors sharing the integrations (``fleet:``) cannot: whichever replica takes an
integration over must read on from where the last owner committed, so positions then live in Kafka, in a
compacted topic keyed ``customer/integration`` (:class:`KafkaPositions`, the Kafka Connect offsets-topic model).

Keys: the ``integration`` argument may carry a slot suffix (``meters#2``: an integration running in several
slots keeps one position per slot). Stores treat it as an opaque name and never parse it.

While a supervisor runs on a state directory it holds :func:`running` (an exclusive ``flock`` and a JSON naming
its integrations), so ``inlet positions set`` / ``reset`` can refuse to move a position under a running
integration (:func:`running_supervisor`): the running pipeline would overwrite it with its next commit.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from inlet.core.config import KafkaSettings, SupervisorConfig
from inlet.core.errors import ConfigError, InletError, SinkRefused, SinkUnavailable, TopicsMissing
from inlet.core.failpoints import Failpoint
from inlet.core.kafka_client import connection_options, describe, start_client
from inlet.core.types import Position

__all__ = [
    "SAVE_FAILPOINT",
    "KafkaPositions",
    "PositionRecord",
    "PositionStore",
    "RunningSupervisor",
    "open_positions",
    "position_key",
    "running",
    "running_here",
    "running_supervisor",
]

log = structlog.get_logger("inlet.positions")

SAVE_FAILPOINT = Failpoint("position.save")
"""Crash tests only (``INLET_FAILPOINT=position.save:N``): killed with a batch in the sink and its position not
yet committed to Kafka (:meth:`KafkaPositions.save`; the exactly-once sink: inside the open transaction)."""

LOCK_FILE = "supervisor.lock"
RUNNING_FILE = "supervisor.json"


def position_key(customer: str, integration: str) -> str:
    """``customer/integration``: the key of a position in every store (the integration name as given)."""
    return f"{customer}/{integration}"


@dataclass(frozen=True)
class PositionRecord:
    """A stored position, who wrote it and when (for people: ``inlet positions show``)."""

    position: Position
    updated_at: str
    """ISO 8601, UTC."""
    replica: str | None
    """The replica that wrote it (Kafka store); None for the SQLite store, which one supervisor owns."""


class PositionStore(abc.ABC):
    """Positions by ``(customer, integration)``. ``save`` is durable when it returns: the pipeline calls it only
    after the sink acknowledged the batch, and a position ahead of the sink would lose events after a crash."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (a no-op for a store that needs no connection)."""

    @abc.abstractmethod
    async def load(self, customer: str, integration: str) -> Position | None:
        """The committed position, or None: the connector starts from its beginning."""

    @abc.abstractmethod
    async def save(self, customer: str, integration: str, position: Position) -> None:
        """Commit a position; durable when this returns."""

    @abc.abstractmethod
    async def reset(self, customer: str, integration: str) -> None:
        """Forget the position: the next run starts from the connector's beginning (durable when this returns)."""

    @abc.abstractmethod
    async def snapshot(self) -> dict[str, PositionRecord]:
        """Every stored position by key ``customer/integration``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; idempotent."""


# --- Kafka: a compacted topic -----------------------------------------------------------------------------------

CATCH_UP_TIMEOUT_SECONDS = 60.0
"""How long reading the positions topic up to its end may take before the store reports Kafka unavailable."""


class KafkaPositions(PositionStore):
    """Positions in a compacted Kafka topic: key ``customer/integration``, value JSON ``{"position", "replica",
    "updated_at"}``, a tombstone (null value) for a reset.

    The consumer has no group (every replica reads every position; a group would split them) and is assigned
    every partition; it reads ``read_committed``, so a position written inside a Kafka transaction that was then
    aborted (an exactly-once batch that failed) is never seen. Before answering, :meth:`load` and
    :meth:`snapshot` read on from where they last stopped to the end offsets fetched at that moment: a position
    another replica had committed before we asked is seen (the group hands an integration over only after its
    previous owner committed). The end of a ``read_committed`` consumer is the last stable offset, so a
    transaction still open elsewhere does not make us wait for it.

    The producer is idempotent with ``acks=all`` and connects like the sink (TLS, SASL: ``core.kafka_client``).
    Kafka unreachable is :class:`SinkUnavailable` (retried), credentials refused :class:`SinkRefused`.
    """

    def __init__(self, settings: KafkaSettings, topic: str, *, replica: str) -> None:
        self.settings = settings
        self.topic = topic
        self.replica = replica
        self._producer: Any = None
        self._consumer: Any = None
        self._partitions: list[TopicPartition] = []
        self._latest: dict[str, PositionRecord | None] = {}
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._lock:  # every integration of a replica starts the one shared store
            if self._producer is None:
                await self._start()

    async def _start(self) -> None:
        s = self.settings
        producer = AIOKafkaProducer(**connection_options(s), acks="all", enable_idempotence=True)
        await start_client(producer, s)
        consumer = AIOKafkaConsumer(
            **connection_options(s),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        try:
            await start_client(consumer, s)
        except InletError:
            await self._stop(producer)
            raise
        try:  # asked of the cluster's whole metadata first: asking for the topic may create it on some brokers
            found = self.topic in await consumer.topics() and await producer.partitions_for(self.topic)
        except (KafkaError, OSError) as exc:
            await self._stop(producer, consumer)
            raise self._failure("reading the topic's metadata", exc) from exc
        if not found:
            await self._stop(producer, consumer)
            raise TopicsMissing(
                f"the positions topic {self.topic} does not exist on {describe(s)}: create it with "
                "`inlet topics apply` (or let the supervisor's start-up check create it: topics.create)",
                key="fleet.positions_topic",
            )
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._producer, self._consumer = producer, consumer

    async def aclose(self) -> None:
        producer, consumer = self._producer, self._consumer
        self._producer = self._consumer = None
        await self._stop(producer, consumer)

    async def _stop(self, *clients: Any) -> None:
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), timeout=self.settings.request_timeout_ms / 1000 + 5)

    def _failure(self, what: str, exc: BaseException) -> InletError:
        from inlet.core.sinks.kafka import action_for

        if action_for(exc) == "retry":
            return SinkUnavailable(f"{describe(self.settings)}: positions topic {self.topic}: {what} failed: {exc!r}")
        return SinkRefused(
            f"{describe(self.settings)} refused inlet on the positions topic {self.topic} ({what}): {exc!r}. "
            "Not retried: fix the cluster's permissions or the configuration and restart"
        )

    def _started(self) -> tuple[Any, Any]:
        if self._producer is None or self._consumer is None:
            raise RuntimeError("KafkaPositions.start() was not called (or the store is closed)")
        return self._producer, self._consumer

    # -- reading -------------------------------------------------------------------------------------------------
    async def _catch_up(self) -> None:
        """Read from where the last catch-up stopped to the end offsets as of now (callers hold the lock)."""
        _, consumer = self._started()
        try:
            ends = await consumer.end_offsets(self._partitions)
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_SECONDS
            while True:
                behind = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return
                if time.monotonic() > deadline:
                    raise SinkUnavailable(
                        f"{describe(self.settings)}: positions topic {self.topic} not read to its end within "
                        f"{CATCH_UP_TIMEOUT_SECONDS:.0f} s"
                    )
                batches = await consumer.getmany(*behind, timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._apply(record.key, record.value)
        except (KafkaError, OSError) as exc:
            raise self._failure("reading", exc) from exc

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:
            self._latest[name] = None
            return
        try:
            doc = orjson.loads(value)
            self._latest[name] = PositionRecord(dict(doc["position"]), str(doc["updated_at"]), doc.get("replica"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # Not ours (someone wrote to the topic by hand): ignored, said once per record.
            log.warning("a record of the positions topic is not a position; ignored", key=name, error=repr(exc))

    async def load(self, customer: str, integration: str) -> Position | None:
        async with self._lock:
            await self._catch_up()
            record = self._latest.get(position_key(customer, integration))
        return None if record is None else record.position

    async def snapshot(self) -> dict[str, PositionRecord]:
        async with self._lock:
            await self._catch_up()
            return {key: record for key, record in sorted(self._latest.items()) if record is not None}

    # -- writing -------------------------------------------------------------------------------------------------
    def record(self, customer: str, integration: str, position: Position) -> tuple[str, bytes, bytes]:
        """``(topic, key, value)`` of a position record: what an exactly-once integration writes inside its own
        Kafka transaction, so the position commits (or aborts) with the batch's events."""
        return self.topic, position_key(customer, integration).encode(), self._value(position)

    def _value(self, position: Position) -> bytes:
        doc = {"position": position, "replica": self.replica, "updated_at": datetime.now(UTC).isoformat()}
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    async def _send(self, key: str, value: bytes | None) -> None:
        producer, _ = self._started()
        try:
            sent = await producer.send(self.topic, value=value, key=key.encode())
            await sent  # acks=all: every in-sync replica has it
        except (KafkaError, OSError) as exc:
            raise self._failure("writing", exc) from exc

    async def save(self, customer: str, integration: str, position: Position) -> None:
        _, key, value = self.record(customer, integration, position)
        SAVE_FAILPOINT.hit()  # crash tests: the batch is in the sink, its position not written
        await self._send(key.decode(), value)

    async def reset(self, customer: str, integration: str) -> None:
        await self._send(position_key(customer, integration), None)


# --- which store ----------------------------------------------------------------------------------------------


def open_positions(cfg: SupervisorConfig) -> PositionStore:
    """The store of ``cfg`` (not started): the positions topic with ``fleet:``, else ``checkpoints.sqlite`` in the
    state directory."""
    if cfg.fleet is not None:
        if cfg.kafka is None:  # the config validator already refuses this
            raise ConfigError("fleet needs kafka.bootstrap", key="fleet")
        from inlet.core.fleet import replica_name

        return KafkaPositions(cfg.kafka, cfg.fleet.positions_topic, replica=replica_name(cfg.fleet))
    from inlet.core.checkpoint import CheckpointStore

    return CheckpointStore(Path(cfg.state_dir) / "checkpoints.sqlite")


# --- is a supervisor running here? --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningSupervisor:
    """A supervisor holding a state directory's lock."""

    pid: int | None
    """From its ``supervisor.json``; None when that could not be read."""
    integrations: frozenset[str] | None
    """The keys it runs; None when unknown (then assume: every one)."""


@contextlib.contextmanager
def running(state_dir: Path, keys: list[str]) -> Iterator[None]:
    """Hold ``<state_dir>/supervisor.lock`` (exclusive ``flock``) and write ``<state_dir>/supervisor.json``
    ``{"pid", "integrations"}`` while the body runs, so the CLI knows which positions not to move.

    The kernel drops the lock when the process dies (even ``kill -9``), so a JSON left behind without a held lock
    means nothing runs. A second supervisor on the same state directory is refused (``ConfigError``): two would
    commit positions of the same integrations over each other.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_running(state_dir)
            who = f" (pid {other.pid})" if other and other.pid else ""
            raise ConfigError(
                f"another supervisor{who} runs on the state directory {state_dir}: one supervisor per state "
                "directory (give each its own state_dir, or a fleet)",
                key="state_dir",
            ) from None
        doc = orjson.dumps({"pid": os.getpid(), "integrations": sorted(keys)})
        tmp = state_dir / f".{RUNNING_FILE}.{os.getpid()}"
        tmp.write_bytes(doc)
        tmp.replace(state_dir / RUNNING_FILE)  # atomic: a reader sees the old file or the whole new one
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                (state_dir / RUNNING_FILE).unlink()
    finally:
        os.close(fd)  # releases the lock


def _read_running(state_dir: Path) -> RunningSupervisor | None:
    try:
        doc = orjson.loads((state_dir / RUNNING_FILE).read_bytes())
        return RunningSupervisor(int(doc["pid"]), frozenset(str(k) for k in doc["integrations"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def running_supervisor(state_dir: Path, *, wait_seconds: float = 2.0) -> RunningSupervisor | None:
    """The supervisor running on ``state_dir``, or None when none holds its lock.

    A supervisor that has just taken the lock writes its JSON right after; that is waited for up to
    ``wait_seconds``, then it counts as running every integration (``integrations`` None).
    """
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a supervisor runs
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    deadline = time.monotonic() + wait_seconds
    while (found := _read_running(state_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return found or RunningSupervisor(None, None)


def running_here(state_dir: Path) -> set[str]:
    """The keys (``customer/integration``) a supervisor running on ``state_dir`` runs; empty when none runs.
    (When it has not said which yet, see :func:`running_supervisor`.)"""
    found = running_supervisor(state_dir)
    return set(found.integrations or ()) if found is not None else set()
