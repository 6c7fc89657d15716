"""MQTT meter readings into Kafka: inlet's full path against a naive paho→aiokafka forwarder.

    .venv/bin/python bench/bench_mqtt.py [--messages N] [--runs R] [--latency-seconds S] [--kafka HOST:PORT]
                                         [--mqtt-inflight M] [--profile-messages P] [--monitor-pairs K]
                                         [--monitor-messages M] [--monitor-max-series S] [--monitors-only]

Everything runs on loopback: a Mosquitto started here (``tools.services.Mosquitto``, the tests' config) and a
Kafka broker started here with the default JIT (unless ``--kafka`` or ``INLET_KAFKA_BOOTSTRAP`` names one).

**Drain.** For every contender in every run: a fresh persistent session (``core.mqtt.create_session``: a
fresh client id subscribed to a fresh topic prefix) gets N Tasmota ``tele/<dev>/SENSOR`` readings
(``connectors.mqtt_meter.synth.tasmota_sensor``, 1000 devices) published at QoS 1 while nobody is connected
(a publisher with at most 20 publishes unacknowledged). Then the contender connects and the clock
runs from the connect until its N-th PUBACK (or, acking on receipt, its N-th Kafka acknowledgement):

- **inlet**: ``MqttMeterConnector`` (one Tasmota route, zone Europe/Berlin) → the real ``Pipeline`` (decode,
  hygiene, validate, CloudEvents envelope, DLQ, checkpoint) → ``KafkaSink`` with the project's default
  ``KafkaSettings`` (acks=all, idempotent, linger 5 ms, 256 KB batches) → ``acknowledge`` = PUBACKs of the batch.
- **naive**: a hand-written paho client (``manual_ack=True``) → ``loop.call_soon_threadsafe`` per message →
  one task per message awaiting aiokafka ``send()`` of the raw payload (acks=all, idempotent, aiokafka's
  defaults otherwise) → ``client.ack(mid)`` when that message's delivery future resolves. No decoding.
- **naive, ack on receipt**: the same forwarder with paho acknowledging on receipt (what loses messages on a
  crash); its clock stops at the N-th Kafka acknowledgement.

Per contender: messages/s, events/s, CPU µs per message of this process (all threads: paho's network thread,
the event loop, the checkpoint thread), of Mosquitto and of Kafka (when started here), and the cores used by
other processes meanwhile (neighbours on a shared machine). Every run checks that Kafka's end offsets hold at
least N records (inlet: exactly the events it counted, and no DLQ record) — a benchmark that loses messages
fails loudly. The headline per contender is its best run; ``inlet / naive`` compares the best runs.

The contenders' inlet runs without the data-quality monitors (``core.monitors``), as before they existed.
**Monitors.** ``--monitor-pairs`` pairs of inlet drains of ``--monitor-messages`` readings, one with monitors and
one without, the order alternating (``bench.monitor_pairs``: monitors as the supervisor builds them, restored from
a state learnt on these readings): CPU µs per message and per event on each side and the ratio on / off of every
pair. The pure pass below also times ``Monitors.observe`` alone, with ``--monitor-max-series`` and with no series
bound; and ``observe`` under cProfile. ``--monitors-only`` skips the contenders and the latency phase, and profiles
the drain with monitors on.

**Latency.** inlet again, on a live session, while a paced publisher (a child process, so that it does not
compete with inlet for the GIL) sends readings at half inlet's best drain rate for ``--latency-seconds``; each
payload carries its publish time (CLOCK_MONOTONIC) in an extra top-level field that the Tasmota decoder
ignores (checked at start-up). When the pipeline calls ``acknowledge`` for a batch — Kafka has acknowledged
every event of it — each of its messages gets ``now - publish time``: p50 / p99 / max, and the part of it
until the batch reached the pipeline (broker, paho, the source's batch linger).

**Profile.** One more inlet drain of ``--profile-messages`` readings under cProfile (the event loop thread:
paho's thread is not profiled), top functions by cumulative and by own time.

**Pure CPU.** ``process_batch`` over the readings without I/O, its stages alone, and ``Monitors.observe``.

Progress goes to stderr; the table, the profile and a final one-line JSON document to stdout. Every wait is
bounded (publishing, draining, the latency phase).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import queue
import shlex
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_pipeline import (
    _machine_cpu_s,
    _proc_cpu_s,
    create_topics,
    harness_frozen,
    kafka_broker,
    log,
    machine,
    quiet_logs,
)
from bench.monitor_pairs import (
    learnt_state,
    observe_profile,
    order,
    overhead,
    overhead_lines,
    passes_line,
    state_bytes,
)
from inlet.connectors.mqtt_meter.connector import DeviceContext, MqttMeterConnector, MqttMeterSettings, Route
from inlet.connectors.mqtt_meter.decoders.tasmota import decode_tasmota
from inlet.connectors.mqtt_meter.hygiene import Hygiene
from inlet.connectors.mqtt_meter.synth import tasmota_sensor
from inlet.contracts.base import Contract
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings, MonitorSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.metrics import Stats
from inlet.core.monitors import Monitors
from inlet.core.mqtt import MqttMessage, MqttSettings, create_session
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.supervisor import tune_gc
from inlet.core.types import Position
from tools.no_broker import no_broker
from tools.services import Mosquitto

DEFAULT_MESSAGES = 100_000
DEFAULT_RUNS = 3
DEFAULT_LATENCY_SECONDS = 10.0
DEFAULT_PROFILE_MESSAGES = 20_000
DEFAULT_MONITOR_PAIRS = 3
DEFAULT_MONITOR_MESSAGES = 20_000
UNBOUNDED_SERIES = 100_000  # MonitorSettings.max_series' upper bound: no series is ever evicted
DEVICES = 1000  # reading i is device i % 1000, step i // 1000: every (device, time) once, no hygiene duplicates
ZONE = "Europe/Berlin"
PUBLISH_WINDOW = 20  # unacknowledged QoS 1 publishes (paho breaks beyond 65,535; ~20 is fastest)
PUBLISH_TIMEOUT = 30.0  # seconds without a single PUBACK from the broker: the publisher gives up
DRAIN_TIMEOUT = 300.0  # seconds: no drain may take longer
SETTLE_TIMEOUT = 60.0  # seconds after the paced publisher finished, for the last acknowledgements
WARMUP_MESSAGES = 2000
PURE_MESSAGES = 20_000
SENT_FIELD = b"BenchSentNs"  # the latency run's publish time (CLOCK_MONOTONIC ns), last top-level field
TARGET_RATIO = 1.0  # the goal: inlet drains at least as many messages per second as the naive forwarder
# The forwarder's producer: inlet's durability (acks=all, idempotent) and inlet's batching (linger 5 ms, 256 KB
# batches: aiokafka's 16 KB default makes concurrent send()s spin in its accumulator, ~1k msg/s here).
_SINK_DEFAULTS = KafkaSettings(bootstrap="unused")
FORWARDER_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": _SINK_DEFAULTS.linger_ms,
    "max_batch_size": _SINK_DEFAULTS.max_batch_size,
}


class BenchError(RuntimeError):
    """The benchmark measured something other than what it claims (lost messages, DLQ records, a stall)."""


# --- harness ---------------------------------------------------------------------------------------


@dataclass
class Env:
    """The brokers of one benchmark run and where temporary state goes."""

    mqtt_host: str
    mqtt_port: int
    mqtt_url: str
    bootstrap: str
    mosquitto_pid: int | None
    kafka_pid: int | None
    tmp: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass
class Drain:
    """One measured drain: how many messages and events in how long, and the CPU each process spent."""

    contender: str
    messages: int
    events: int
    wall_s: float
    cpu_s: float  # this process, all threads
    mosquitto_cpu_s: float | None
    kafka_cpu_s: float | None  # None when the broker was not started here
    others_cpu_s: float  # every other process on the machine
    gc_s: float
    kafka_records: int  # end offsets of the contender's topics after the drain
    batches: int | None = None  # inlet: batches read from the MQTT source
    receiver_cpu_s: float = 0.0  # inlet with ``receiver: process``: the receiver process's (in cpu_s too)

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s

    def summary(self) -> dict[str, Any]:
        def per_msg(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds / self.messages * 1e6, 1)

        return {
            "messages": self.messages,
            "events": self.events,
            "wall_s": round(self.wall_s, 3),
            "messages_per_s": round(self.rate),
            "events_per_s": round(self.events / self.wall_s),
            "cpu_us_per_message": per_msg(self.cpu_s),
            "receiver_cpu_us_per_message": per_msg(self.receiver_cpu_s),
            "gc_us_per_message": per_msg(self.gc_s),
            "mosquitto_cpu_us_per_message": per_msg(self.mosquitto_cpu_s),
            "kafka_cpu_us_per_message": per_msg(self.kafka_cpu_s),
            "others_cores": round(self.others_cpu_s / self.wall_s, 2),
            "kafka_records": self.kafka_records,
            "messages_per_batch": round(self.messages / self.batches, 1) if self.batches else None,
        }


class Meter:
    """Wall clock, this process's CPU, the brokers' CPU and the rest of the machine's, between start and stop."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.wall = self.cpu = 0.0
        self.mosquitto: float | None = None
        self.kafka: float | None = None
        self.others = 0.0
        self.children = 0.0

    def _sample(self) -> tuple[float, float, float | None, float | None, float]:
        return (
            time.perf_counter(),
            time.process_time(),
            _proc_cpu_s(self.env.mosquitto_pid),
            _proc_cpu_s(self.env.kafka_pid),
            _machine_cpu_s(),
        )

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self, children: Sequence[int] = ()) -> None:
        """``children``: processes started after :meth:`start` (a receiver process) whose whole CPU is inlet's."""
        (w0, c0, m0, k0, a0), (w1, c1, m1, k1, a1) = self._t0, self._sample()
        self.children = sum(_proc_cpu_s(pid) or 0.0 for pid in children)
        self.wall, self.cpu = w1 - w0, c1 - c0 + self.children
        self.mosquitto = m1 - m0 if m0 is not None and m1 is not None else None
        self.kafka = k1 - k0 if k0 is not None and k1 is not None else None
        self.others = max(0.0, (a1 - a0) - self.cpu - (self.mosquitto or 0.0) - (self.kafka or 0.0))


def readings(count: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """``count`` Tasmota SENSOR frames (topic without prefix, payload): 1000 devices, one step every 1000."""
    return [tasmota_sensor(i % DEVICES, i // DEVICES) for i in range(offset, offset + count)]


def _monotonic_ns() -> int:
    """CLOCK_MONOTONIC: one clock for the publisher's process and this one."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def stamped(payload: bytes, sent_ns: int) -> bytes:
    """The payload with its publish time as one more top-level field (the Tasmota decoder ignores it)."""
    return b'%s,"%s":%d}' % (payload[:-1], SENT_FIELD, sent_ns)


def sent_ns_of(payload: bytes) -> int:
    """The publish time :func:`stamped` put last in the payload."""
    return int(payload[payload.rindex(b":") + 1 : -1])


def check_stamp_is_ignored() -> int:
    """The latency field must not change what the Tasmota decoder produces; returns readings per message."""
    topic, payload = tasmota_sensor(3, 7)
    ctx = DeviceContext("meter-00003", ZONE, datetime.now(UTC))
    plain = decode_tasmota(topic, payload, ctx)
    with_stamp = decode_tasmota(topic, stamped(payload, _monotonic_ns()), ctx)
    if not plain or plain != with_stamp:
        raise BenchError(
            f"the Tasmota decoder does not ignore the {SENT_FIELD.decode()} field: "
            f"{len(plain)} readings without it, {len(with_stamp)} with it"
        )
    return len(plain)


class Publisher:
    """A paho QoS 1 publisher with at most ``PUBLISH_WINDOW`` publishes unacknowledged by the broker."""

    def __init__(self, env: Env) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
        self._window = threading.BoundedSemaphore(PUBLISH_WINDOW)
        self._client.on_publish = lambda *args: self._window.release()
        self._client.connect(env.mqtt_host, env.mqtt_port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        if not self._window.acquire(timeout=PUBLISH_TIMEOUT):
            raise BenchError(f"Mosquitto acknowledged no publish for {PUBLISH_TIMEOUT:.0f} s")
        self._client.publish(topic, payload, qos=1)

    def flush(self) -> None:
        """Return once the broker has acknowledged (stored) everything published so far."""
        for _ in range(PUBLISH_WINDOW):
            if not self._window.acquire(timeout=PUBLISH_TIMEOUT):
                raise BenchError("Mosquitto did not acknowledge every publish")
        for _ in range(PUBLISH_WINDOW):
            self._window.release()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def prepublish(env: Env, prefix: str, messages: Sequence[tuple[str, bytes]], client_id: str) -> float:
    """Create the persistent session of ``client_id`` on ``prefix/#`` and queue ``messages`` in it."""
    create_session(MqttSettings(url=env.mqtt_url, topics=[f"{prefix}/tele/+/SENSOR"]), client_id)
    t0 = time.perf_counter()
    pub = Publisher(env)
    try:
        for topic, payload in messages:
            pub.publish(f"{prefix}/{topic}", payload)
        pub.flush()
    finally:
        pub.close()
    return time.perf_counter() - t0


async def kafka_records(bootstrap: str, topics: Sequence[str]) -> int:
    """Records in these one-partition topics (end offsets; the topics are fresh, so they start at 0)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(t, 0) for t in topics])
    finally:
        await consumer.stop()
    return int(sum(ends.values()))


async def until(done: asyncio.Event, also: asyncio.Future[Any] | None, limit_s: float, what: Callable[[], str]) -> None:
    """Wait for ``done``; fail loudly on a timeout or when ``also`` (the pipeline) ends first."""
    waiter = asyncio.ensure_future(done.wait())
    waits: set[asyncio.Future[Any]] = {waiter} if also is None else {waiter, also}
    await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    if done.is_set():
        return
    waiter.cancel()
    if also is not None and also.done():
        also.result()  # re-raises the pipeline's error
        raise BenchError(f"the pipeline ended before the drain was complete ({what()})")
    raise BenchError(f"not done after {limit_s:.0f} s ({what()})")


# --- contender a: inlet ----------------------------------------------------------------------------


@dataclass
class Inlet:
    """One inlet integration wired as the supervisor wires it, with the acknowledgements counted."""

    env: Env
    label: str
    expected: int
    receiver: Literal["thread", "process"] = "thread"
    connector: MqttMeterConnector = field(init=False)
    enveloper: Enveloper = field(init=False)
    acked: int = 0
    batches: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    on_ack: Callable[[Position], None] | None = None
    on_batch: Callable[[Batch], None] | None = None
    # Builds the data-quality monitors once the harness's data is frozen out of the collector, as the supervisor
    # builds them after tune_gc's freeze (the collector walks them); None: as with ``monitors: {enabled: false}``.
    monitors: Callable[[], Monitors] | None = None

    def __post_init__(self) -> None:
        e = self.env
        self.prefix = f"bench/{e.run_id}/{self.label}"
        self.client_id = f"bench-{e.run_id}-{self.label}"
        subscription = f"{self.prefix}/tele/+/SENSOR"
        settings = MqttMeterSettings(
            mqtt=MqttSettings(url=e.mqtt_url, topics=[subscription], client_id=self.client_id, receiver=self.receiver),
            routes=[Route(topic=subscription, decoder="tasmota", device_level=self.prefix.count("/") + 2, zone=ZONE)],
        )
        self.connector = MqttMeterConnector(IntegrationContext("bench", self.label, zone=ZONE), settings)
        base = f"bench-mqtt-{e.run_id}-{self.label}"
        self.enveloper = Enveloper(
            "bench",
            self.label,
            topic_template=base + ".{name}.v{major}",
            dlq_topic_template=base + ".dlq",
            drift_topic_template=base + ".drift",
        )
        self.topics = [self.enveloper.topic_for(MeterReadingV1), self.enveloper.dlq_topic]
        # The benchmark's only hooks: count the PUBACKs the pipeline sends (and see the batches it reads).
        acknowledge, read = self.connector.acknowledge, self.connector.read

        async def counted_acknowledge(position: Position) -> None:
            await acknowledge(position)
            if self.on_ack is not None:
                self.on_ack(position)
            self.acked += len(position.get("mids", ()))
            if self.acked >= self.expected:
                self.done.set()

        async def observed_read(position: Position | None) -> AsyncIterator[Batch]:
            async for batch in read(position):
                self.batches += 1
                if self.on_batch is not None:
                    self.on_batch(batch)
                yield batch

        self.connector.acknowledge = counted_acknowledge  # type: ignore[method-assign]
        self.connector.read = observed_read  # type: ignore[method-assign]

    def receiver_pids(self) -> list[int]:
        """The receiver process of ``receiver: process`` (none with the thread)."""
        process = getattr(self.connector.source, "_process", None)
        return [process.pid] if process is not None else []

    @contextlib.asynccontextmanager
    async def running(
        self, meter: Meter | None = None, profiler: cProfile.Profile | None = None
    ) -> AsyncIterator[tuple[Stats, asyncio.Task[Any]]]:
        """Sink started and topics created first; then (clock running) connect, run the pipeline; then stop."""
        await create_topics(self.env.bootstrap, self.topics)
        sink = KafkaSink(KafkaSettings(bootstrap=self.env.bootstrap))  # the project's defaults
        await sink.start()
        for topic in self.topics:  # metadata before the clock starts
            await sink._producer.partitions_for(topic)
        store = CheckpointStore(self.env.tmp / f"{self.label}.sqlite")
        stats = Stats("bench", self.label)
        stop = asyncio.Event()
        run: asyncio.Task[Any] | None = None
        try:
            with harness_frozen() as gc_clock:
                self.gc_clock = gc_clock
                monitors = self.monitors() if self.monitors else None
                if meter:
                    meter.start()
                if profiler:
                    profiler.enable()
                await self.connector.start()
                pipeline = Pipeline(self.connector, self.enveloper, sink, store, stats, monitors=monitors)
                run = asyncio.create_task(pipeline.run(None, stop))
                yield stats, run
                if profiler:
                    profiler.disable()
                if meter:
                    meter.stop(self.receiver_pids())
        finally:
            stop.set()
            if run is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(run, 30)
            await self.connector.stop()
            await sink.stop()
            store.close()


async def drain_inlet(
    env: Env,
    label: str,
    messages: Sequence[tuple[str, bytes]],
    profiler: cProfile.Profile | None = None,
    monitors: Callable[[], Monitors] | None = None,
    receiver: Literal["thread", "process"] = "thread",
) -> Drain:
    n = len(messages)
    inlet = Inlet(env, label, n, receiver=receiver, monitors=monitors)
    seconds = await asyncio.to_thread(prepublish, env, inlet.prefix, messages, inlet.client_id)
    log(f"{label}: {n} readings queued in {seconds:.1f} s; draining")
    meter = Meter(env)
    async with inlet.running(meter, profiler) as (stats, run):
        await until(inlet.done, run, DRAIN_TIMEOUT, lambda: f"{inlet.acked} of {n} PUBACKs sent")
    t = stats.totals
    if t.records_in != n or t.dlq or t.filtered or t.records_mapped != n:
        raise BenchError(
            f"{label}: {n} readings published, pipeline counted {t.records_in} in, "
            f"{t.records_mapped} mapped, DLQ {dict(t.dlq)}, filtered {dict(t.filtered)}"
        )
    events_topic, dlq_topic = inlet.topics
    on_kafka = await kafka_records(env.bootstrap, [events_topic])
    dlq = await kafka_records(env.bootstrap, [dlq_topic])
    if on_kafka < max(n, t.events_out) or dlq:
        raise BenchError(
            f"{label}: Kafka holds {on_kafka} events (pipeline sent {t.events_out}) and {dlq} DLQ "
            f"records for {n} readings"
        )
    return Drain(
        "inlet",
        n,
        t.events_out,
        meter.wall,
        meter.cpu,
        meter.mosquitto,
        meter.kafka,
        meter.others,
        inlet.gc_clock.seconds,
        on_kafka,
        inlet.batches,
        receiver_cpu_s=meter.children,
    )


# --- contenders b and c: the naive forwarder ---------------------------------------------------------


class Forwarder:
    """The naive MQTT→Kafka forwarder: one loop hop, one task and one ``send()`` per message, no decoding.

    ``ack_after_kafka``: paho's manual acknowledgement, PUBACK when the message's delivery future resolves;
    otherwise paho acknowledges on receipt. ``delivered`` counts Kafka acknowledgements either way.
    """

    def __init__(
        self, env: Env, client_id: str, topic: str, producer: AIOKafkaProducer, expected: int, *, ack_after_kafka: bool
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.env, self.topic, self.producer, self.expected = env, topic, producer, expected
        self.ack_after_kafka = ack_after_kafka
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=ack_after_kafka
        )
        self.client.on_message = self._on_message
        self.delivered = 0
        self.failed: list[BaseException] = []
        self.done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks

    def start(self) -> None:
        self.client.connect(self.env.mqtt_host, self.env.mqtt_port)  # the session (and subscription) exists
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:  # paho's thread
        self.loop.call_soon_threadsafe(self._spawn, msg.mid, msg.payload)

    def _spawn(self, mid: int, payload: bytes) -> None:
        task = self.loop.create_task(self._send(mid, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, mid: int, payload: bytes) -> None:
        try:
            delivery = await self.producer.send(self.topic, payload)
        except Exception as exc:  # no PUBACK: the broker keeps the message, and the count stays short
            self.failed.append(exc)
            return
        delivery.add_done_callback(partial(self._delivered, mid))

    def _delivered(self, mid: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed.append(fut.exception() or asyncio.CancelledError())
            return
        if self.ack_after_kafka:
            self.client.ack(mid, 1)
        self.delivered += 1
        if self.delivered >= self.expected:
            self.done.set()


async def drain_forwarder(
    env: Env, label: str, messages: Sequence[tuple[str, bytes]], *, ack_after_kafka: bool
) -> Drain:
    n = len(messages)
    prefix, client_id = f"bench/{env.run_id}/{label}", f"bench-{env.run_id}-{label}"
    topic = f"bench-mqtt-{env.run_id}-{label}"
    seconds = await asyncio.to_thread(prepublish, env, prefix, messages, client_id)
    log(f"{label}: {n} readings queued in {seconds:.1f} s; draining")
    await create_topics(env.bootstrap, [topic])
    # Same durability as inlet's sink (acks=all, idempotent); otherwise aiokafka's defaults: linger 0 suits
    # a forwarder whose broker releases only a few unacknowledged messages at a time.
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, **FORWARDER_PRODUCER)
    await producer.start()
    meter = Meter(env)
    try:
        await producer.partitions_for(topic)
        forwarder = Forwarder(env, client_id, topic, producer, n, ack_after_kafka=ack_after_kafka)
        with harness_frozen() as gc_clock:
            meter.start()
            forwarder.start()
            try:
                await until(
                    forwarder.done,
                    None,
                    DRAIN_TIMEOUT,
                    lambda: f"{forwarder.delivered} of {n} delivered, {len(forwarder.failed)} failed",
                )
                meter.stop()
            finally:
                forwarder.stop()
    finally:
        await producer.stop()
    on_kafka = await kafka_records(env.bootstrap, [topic])
    if forwarder.failed or on_kafka < n:
        raise BenchError(
            f"{label}: Kafka holds {on_kafka} of {n} readings; {len(forwarder.failed)} sends failed "
            f"({forwarder.failed[:1]!r})"
        )
    name = "naive" if ack_after_kafka else "naive, ack on receipt"
    return Drain(
        name, n, n, meter.wall, meter.cpu, meter.mosquitto, meter.kafka, meter.others, gc_clock.seconds, on_kafka
    )


# --- latency ---------------------------------------------------------------------------------------


def paced_publish(env: Env, prefix: str, count: int, rate: float, result: Any) -> None:
    """Child process: publish ``count`` readings at ``rate`` per second, each stamped with its publish time.

    A process of its own, so that its paho client and payload work do not compete with inlet for the GIL.
    Puts the publishing wall time (or the error) on ``result``.
    """
    try:
        messages = readings(count)
        pub = Publisher(env)
        try:
            t0 = time.perf_counter()
            for i, (topic, payload) in enumerate(messages):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0.001:
                    time.sleep(delay)
                pub.publish(f"{prefix}/{topic}", stamped(payload, _monotonic_ns()))
            pub.flush()
            result.put(time.perf_counter() - t0)
        finally:
            pub.close()
    except Exception as exc:  # reported by the parent, which fails the benchmark with it
        result.put(f"{type(exc).__name__}: {exc}")


async def latency(env: Env, rate: float, seconds: float) -> dict[str, Any]:
    """Publish → Kafka-acknowledged latency of inlet at ``rate`` readings/s, for ``seconds``."""
    count = max(1, round(rate * seconds))
    inlet = Inlet(env, "latency", count)
    sent: dict[int, tuple[int, int]] = {}  # mid -> (publish time, read time); a mid is not reused before its PUBACK
    total: list[float] = []  # publish -> acknowledge (ms)
    to_read: list[float] = []  # publish -> the batch handed to the pipeline (broker, paho, bridge, batch linger)

    def on_batch(batch: Batch) -> None:
        now = _monotonic_ns()
        for m in batch.records:
            sent[m.mid] = (sent_ns_of(m.payload), now)

    def on_ack(position: Position) -> None:
        now = _monotonic_ns()
        for mid in position.get("mids", ()):
            published, read = sent.pop(mid)
            total.append((now - published) / 1e6)
            to_read.append((read - published) / 1e6)

    inlet.on_batch, inlet.on_ack = on_batch, on_ack
    await asyncio.to_thread(
        create_session, MqttSettings(url=env.mqtt_url, topics=[f"{inlet.prefix}/tele/+/SENSOR"]), inlet.client_id
    )
    log(f"latency: {count} readings at {rate:,.0f}/s for {seconds:g} s")
    async with inlet.running() as (stats, run):
        source_connected = inlet.connector.source.connected  # type: ignore[attr-defined]
        if not await asyncio.to_thread(source_connected.wait, 30):
            raise BenchError("latency: inlet did not connect to Mosquitto within 30 s")
        spawn = multiprocessing.get_context("spawn")
        result = spawn.Queue()
        publisher = spawn.Process(target=paced_publish, args=(env, inlet.prefix, count, rate, result), daemon=True)
        publisher.start()
        try:
            took = await asyncio.to_thread(result.get, True, seconds * 3 + PUBLISH_TIMEOUT + 30)
        except queue.Empty:
            raise BenchError("latency: the paced publisher did not finish in time") from None
        finally:
            await asyncio.to_thread(publisher.join, 10)
            if publisher.is_alive():
                publisher.kill()
        if not isinstance(took, float):
            raise BenchError(f"latency: the paced publisher failed: {took}")
        await until(inlet.done, run, SETTLE_TIMEOUT, lambda: f"{inlet.acked} of {count} PUBACKs sent")
    if len(total) != count or stats.totals.dlq:
        raise BenchError(f"latency: {count} published, {len(total)} acknowledged, DLQ {dict(stats.totals.dlq)}")
    return {
        "target_rate": round(rate),
        "achieved_publish_rate": round(count / took),
        "seconds": seconds,
        "messages": count,
        "messages_per_batch": round(count / inlet.batches, 1),
        **percentiles(total),
        "publish_to_read": percentiles(to_read),
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean of latencies in ms."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


# --- pure CPU -------------------------------------------------------------------------------------


async def pure_cost(
    count: int, batch_size: int, monitor_settings: MonitorSettings, passes: int = 3
) -> tuple[dict[str, float], list[list[Contract]]]:
    """CPU µs per message of the part of inlet's path that needs no I/O (this thread), best of ``passes``.

    ``process_batch`` over the readings as MqttMessages in batches of the source's ``batch_max``, and its
    parts measured alone: the connector's ``decode`` (route, Tasmota decoder, hygiene), the Tasmota decoder
    and the hygiene on their own, ``identity`` and ``envelope``; and ``Monitors.observe`` over each batch's
    events (what the pipeline hands it when monitors are on), with ``monitor_settings`` and with no series
    bound (``monitors_unbounded``, which also counts the series). Each pass starts with fresh hygiene memory
    and fresh monitors. Also returns the events, batch by batch.
    """
    env = Env("127.0.0.1", 1, "mqtt://127.0.0.1:1", "unused", None, None, Path())
    inlet = Inlet(env, "pure", count)
    ctx = IntegrationContext("bench", "pure", zone=ZONE, message_source=no_broker)
    connector = MqttMeterConnector(ctx, inlet.connector.settings)
    await connector.start()
    now = datetime.now(UTC)
    messages = [
        MqttMessage(
            topic=f"{inlet.prefix}/{topic}", payload=payload, qos=1, retain=False, mid=i % 65535 + 1, received_at=now
        )
        for i, (topic, payload) in enumerate(readings(count))
    ]
    batches = [
        Batch(messages[i : i + batch_size], {"mids": [m.mid for m in messages[i : i + batch_size]]})
        for i in range(0, count, batch_size)
    ]
    device = [DeviceContext(m.topic.split("/")[-2], ZONE, now) for m in messages]
    clock = time.thread_time
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, seconds), seconds)

    with harness_frozen():
        for _ in range(passes):
            connector.hygiene = Hygiene()
            t0 = clock()
            events = sum(len(process_batch(connector, inlet.enveloper, b)[0]) for b in batches)
            keep("process_batch", clock() - t0)
            connector.hygiene = Hygiene()
            t0 = clock()
            decoded = [connector.decode(m) for m in messages]
            keep("decode", clock() - t0)
            t0 = clock()
            raw = [decode_tasmota(m.topic, m.payload, d) for m, d in zip(messages, device, strict=True)]
            keep("tasmota_decoder", clock() - t0)
            hygiene = Hygiene()
            t0 = clock()
            for r in raw:
                hygiene.apply(r)
            keep("hygiene", clock() - t0)
            t0 = clock()
            keys = [connector.identity(d) for d in decoded]
            keep("identity", clock() - t0)
            t0 = clock()
            for d, (key, version) in zip(decoded, keys, strict=True):
                for i, model in enumerate(d.events):
                    inlet.enveloper.envelope(model, key, version, i)
            keep("envelope", clock() - t0)
            observed = [[e for d in decoded[i : i + batch_size] for e in d.events] for i in range(0, count, batch_size)]
            for name, settings in (
                ("monitors", monitor_settings),
                ("monitors_unbounded", monitor_settings.model_copy(update={"max_series": UNBOUNDED_SERIES})),
            ):
                monitors = Monitors("bench", "pure", settings, zone=ZONE)
                t0 = clock()
                for models in observed:
                    monitors.observe(models)
                keep(name, clock() - t0)
            series = sum(len(s) for s in monitors.numeric.values())  # the unbounded ones: every series seen
    await connector.stop()
    if events != count * len(raw[0]):
        raise BenchError(f"pure pass: {events} events from {count} readings")
    return {**{k: round(v / count * 1e6, 1) for k, v in best.items()}, "series": series}, observed


# --- profile ---------------------------------------------------------------------------------------


async def profile_inlet(env: Env, count: int, monitors: Callable[[], Monitors] | None = None) -> str:
    """One inlet drain under cProfile (the event loop's thread); the top functions as text."""
    profiler = cProfile.Profile()
    drain = await drain_inlet(env, "profile", readings(count), profiler, monitors)
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    buf.write(
        f"cProfile of one inlet drain of {count} readings, monitors {'on' if monitors else 'off'} "
        f"({drain.rate:,.0f} msg/s under the profiler; event loop thread only, paho's network thread is not "
        f"profiled)\n"
    )
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(25)
    return buf.getvalue()


# --- data-quality monitors: on against off ---------------------------------------------------------


async def monitor_overhead(
    env: Env, pairs: int, count: int, settings: MonitorSettings, observed: list[list[Contract]]
) -> dict[str, Any]:
    """inlet drains of ``count`` readings with monitors on and off, ``pairs`` times in alternating order
    (``bench.monitor_pairs``); on = monitors restored from a state learnt on ``observed``, the pure pass's events."""
    messages = readings(count)
    state = learnt_state("bench", "monitors", ZONE, [m for b in observed for m in b], settings)
    cpu: list[tuple[float, float]] = []
    drains: list[dict[str, Any]] = []
    events_per_message = 0.0
    for i in range(pairs):
        per_message: dict[bool, float] = {}
        for on in order(i):
            label = f"mon{i}-{'on' if on else 'off'}"
            monitors = partial(Monitors, "bench", label, settings, zone=ZONE, state=state) if on else None
            log(f"monitors pair {i + 1}/{pairs}: {'on' if on else 'off'}")
            d = await drain_inlet(env, label, messages, monitors=monitors)
            per_message[on] = d.cpu_s / d.messages * 1e6
            events_per_message = d.events / d.messages
            drains.append({"monitors": on, **d.summary()})
            log(f"  {d.rate:,.0f} msg/s, {per_message[on]:.1f} µs CPU per message")
        cpu.append((per_message[True], per_message[False]))
    return {
        "messages": count,
        "max_series": settings.max_series,
        "state_bytes": state_bytes(state),
        **overhead(cpu, events_per_message),
        "drains": drains,
    }


# --- main ------------------------------------------------------------------------------------------


CONTENDERS: tuple[str, ...] = ("inlet", "inlet (receiver process)", "naive", "naive, ack on receipt")
CONTENDER_KEYS = dict(zip(("inlet", "process", "naive", "autoack"), CONTENDERS, strict=True))
"""``--contenders`` names them by these keys."""


async def bench(args: argparse.Namespace, env: Env, host: dict[str, Any]) -> dict[str, Any]:
    per_message = check_stamp_is_ignored()
    n = args.messages
    messages = readings(n)
    runs = 0 if args.monitors_only else args.runs
    log(f"{n} Tasmota readings, {per_message} readings (events) each; {runs} runs")
    log("pure CPU of inlet's path without I/O")
    batch_max = MqttSettings(url=env.mqtt_url, topics=["#"]).batch_max
    monitor_settings = MonitorSettings(max_series=args.monitor_max_series)
    pure, observed = await pure_cost(min(n, PURE_MESSAGES), batch_max, monitor_settings)
    log("warm-up: a small inlet drain")
    await drain_inlet(env, "warmup", messages[: min(n, WARMUP_MESSAGES)])
    contenders = [c for c in CONTENDERS if c in args.contenders]
    drains: dict[str, list[Drain]] = {c: [] for c in contenders} if runs else {}
    for run in range(runs):
        # Contenders alternate within a run so that a noisy neighbour hits all of them alike.
        rotation = contenders[run % len(contenders) :] + contenders[: run % len(contenders)]
        for contender in rotation:
            log(f"run {run + 1}/{args.runs}: {contender}")
            if contender.startswith("inlet"):
                receiver: Literal["thread", "process"] = "process" if contender.endswith("process)") else "thread"
                d = await drain_inlet(env, f"{receiver}-r{run}", messages, receiver=receiver)
            else:
                d = await drain_forwarder(
                    env,
                    f"{'naive' if contender == 'naive' else 'autoack'}-r{run}",
                    messages,
                    ack_after_kafka=contender == "naive",
                )
            drains[contender].append(d)
            log(f"  {d.rate:,.0f} msg/s, {d.cpu_s / d.messages * 1e6:.1f} µs CPU per message")
    best = {c: max(ds, key=lambda d: d.rate) for c, ds in drains.items()}
    results: dict[str, Any] = {}
    for c, ds in drains.items():
        results[c] = {
            **best[c].summary(),
            "runs_messages_per_s": [round(d.rate) for d in ds],
            "median_messages_per_s": round(statistics.median(d.rate for d in ds)),
        }
    monitors = None
    if args.monitor_pairs:
        monitors = await monitor_overhead(env, args.monitor_pairs, args.monitor_messages, monitor_settings, observed)
        fresh = Monitors("bench", "profile", monitor_settings, zone=ZONE)
        monitors["observe_profile"] = observe_profile(fresh, observed)
    lat = None
    if args.latency_seconds > 0 and "inlet" in best:
        lat = await latency(env, best["inlet"].rate / 2, args.latency_seconds)
    profile = ""
    if args.profile_messages:  # with monitors when only they are measured
        on = partial(Monitors, "bench", "profile", monitor_settings, zone=ZONE) if args.monitors_only else None
        profile = await profile_inlet(env, args.profile_messages, on)
    return {
        "benchmark": "mqtt",
        "machine": host,
        "command": shlex.join([sys.executable, *sys.argv]),
        "messages": n,
        "runs": runs,
        "readings_per_message": per_message,
        "mqtt_max_inflight_messages": args.mqtt_inflight if args.mqtt_inflight is not None else "20 (default)",
        "results": results,
        "ratios_over_naive": {
            f"{c} / {naive}": round(best[c].rate / best[naive].rate, 3)
            for c in best
            if c.startswith("inlet")
            for naive in best
            if naive.startswith("naive")
        },
        # The same pairs run by run (the contenders of a run drain one after another): their median is the
        # comparison least moved by this shared VM's swings, where the naive forwarder alone spans 10k - 20k msg/s.
        "ratios_over_naive_per_run": {
            f"{c} / {naive}": [round(a.rate / b.rate, 3) for a, b in zip(drains[c], drains[naive], strict=True)]
            for c in best
            if c.startswith("inlet")
            for naive in best
            if naive.startswith("naive")
        },
        "target_ratio": TARGET_RATIO,
        "pure_cpu_us_per_message": pure,
        "monitors": monitors,
        "latency": lat,
        "profile": profile,
    }


def _print_contenders(r: dict[str, Any]) -> None:
    print(
        f"{'contender':<23}{'msg/s':>8}{'events/s':>10}  {'runs (msg/s)':<22}{'py CPU':>8}{'of it GC':>9}"
        f"{'mosq.':>7}{'kafka':>7}{'others':>8}"
    )
    print(
        f"{'':<23}{'(best)':>8}{'(best)':>10}  {'':<22}{'µs/msg':>8}{'µs/msg':>9}{'µs/msg':>7}{'µs/msg':>7}{'cores':>8}"
    )

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for name, s in r["results"].items():
        runs = ", ".join(f"{x / 1000:.1f}k" for x in s["runs_messages_per_s"])
        print(
            f"{name:<23}{s['messages_per_s']:>8,}{s['events_per_s']:>10,}  {runs:<22}"
            f"{num(s['cpu_us_per_message']):>8}{num(s['gc_us_per_message']):>9}"
            f"{num(s['mosquitto_cpu_us_per_message']):>7}{num(s['kafka_cpu_us_per_message']):>7}"
            f"{s['others_cores']:>8.2f}"
        )
    print(
        "(py CPU: this process, all threads, and the receiver process for `receiver: process`; others: cores busy "
        "with other processes during the best run)"
    )
    for name, s in r["results"].items():
        if s.get("receiver_cpu_us_per_message"):
            print(f"  {name}: of the py CPU, the receiver process {s['receiver_cpu_us_per_message']} µs/msg")
    print()
    for pair, ratio in r["ratios_over_naive"].items():
        verdict = "meets" if ratio >= r["target_ratio"] else "MISSES"
        target = f" — {verdict} the target of {r['target_ratio']}x" if pair.endswith("/ naive") else ""
        print(f"{pair}: {ratio:.2f}x{target}")
        runs = r["ratios_over_naive_per_run"][pair]
        print(f"  run by run: {', '.join(f'{x:.2f}x' for x in runs)} (median {statistics.median(runs):.2f}x)")


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\ninlet MQTT benchmark — N={r['messages']:,} Tasmota readings ({r['readings_per_message']} events each) "
        f"drained from a persistent session, best of {r['runs']} runs"
    )
    print(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; Python {m['python']}, aiokafka {m['aiokafka']}, "
        f"pydantic {m['pydantic']}; load avg at start {m['loadavg_at_start']}"
    )
    print(f"Mosquitto max_inflight_messages: {r['mqtt_max_inflight_messages']}; command: {r['command']}\n")
    pc, inlet = r["pure_cpu_us_per_message"], r["results"].get("inlet") or r["results"].get("inlet (receiver process)")
    if inlet:
        _print_contenders(r)
        print(
            f"\ninlet CPU per message ({r['readings_per_message']} events), measured {inlet['cpu_us_per_message']} "
            f"µs in the best drain, of which without I/O (this thread, best of 3):"
        )
    else:
        print(f"inlet CPU per message ({r['readings_per_message']} events) without I/O (this thread, best of 3):")
    print(
        f"  process_batch {pc['process_batch']} µs = decode {pc['decode']} (Tasmota decoder {pc['tasmota_decoder']}, "
        f"hygiene {pc['hygiene']}, routing and the rest) + identity {pc['identity']} + envelope {pc['envelope']}"
    )
    if inlet:
        print(
            f"  the remaining {inlet['cpu_us_per_message'] - pc['process_batch']:.0f} µs: paho's thread, the "
            f"MQTT→asyncio bridge, KafkaSink/aiokafka, the checkpoint write, the event loop, GC"
        )
    per = r["readings_per_message"]
    print(
        f"  monitors on: Monitors.observe {pc['monitors']} µs more ({pc['monitors'] / per:.2f} per event); without "
        f"a series bound {pc['monitors_unbounded']} µs ({pc['monitors_unbounded'] / per:.2f} per event); the "
        f"events hold {pc['series']:,} numeric series"
    )
    mon = r["monitors"]
    if mon:
        print(
            f"\ndata-quality monitors: {mon['pairs']} pairs of inlet drains of {mon['messages']:,} readings, on and "
            f"off alternating (max_series {mon['max_series']}; learnt state {mon['state_bytes']:,} bytes)"
        )
        print("\n".join(overhead_lines(mon, "message")))
        print(passes_line(mon["drains"], "messages_per_s", "msg/s"))
        print("\n" + mon["observe_profile"])
    lat = r["latency"]
    if lat:
        print(
            f"latency publish → Kafka ack, inlet at {lat['target_rate']:,} msg/s (achieved "
            f"{lat['achieved_publish_rate']:,}) for {lat['seconds']:g} s, {lat['messages']:,} readings: "
            f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms"
        )
        rd = lat["publish_to_read"]
        print(
            f"  of which publish → batch read by the pipeline (broker, paho, batch linger): p50 {rd['p50_ms']} ms, "
            f"p99 {rd['p99_ms']} ms; {lat['messages_per_batch']} readings per batch"
        )
    if r["profile"]:
        print("\n" + r["profile"])


class BenchMosquitto(Mosquitto):
    """The tests' Mosquitto, optionally with ``max_inflight_messages`` set (the default allows 20 per client)."""

    def __init__(self, inflight: int | None) -> None:
        super().__init__()
        self.inflight = inflight

    def _prepare(self) -> None:
        super()._prepare()
        if self.inflight is not None:
            with self.config.open("a") as conf:
                conf.write(f"max_inflight_messages {self.inflight}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="readings per drain (default 100000)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of every contender (default 3)")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=DEFAULT_LATENCY_SECONDS,
        help="length of the latency phase (default 10; 0 skips it)",
    )
    parser.add_argument(
        "--kafka",
        default=os.environ.get("INLET_KAFKA_BOOTSTRAP"),
        help="an existing Kafka bootstrap (default: $INLET_KAFKA_BOOTSTRAP, else start one here)",
    )
    parser.add_argument(
        "--mqtt-inflight",
        type=int,
        default=None,
        help="Mosquitto max_inflight_messages (default: Mosquitto's own, 20 per client; 0 = no limit)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda text: [CONTENDER_KEYS.get(c.strip(), c) for c in text.split(",")],
        default=list(CONTENDERS),
        help=f"which drains to run, comma-separated from {','.join(CONTENDER_KEYS)} (default all)",
    )
    parser.add_argument(
        "--profile-messages",
        type=int,
        default=DEFAULT_PROFILE_MESSAGES,
        help="readings of the profiled inlet drain (default 20000; 0 skips it)",
    )
    parser.add_argument(
        "--monitor-pairs",
        type=int,
        default=DEFAULT_MONITOR_PAIRS,
        help="pairs of inlet drains with data-quality monitors on and off (default 3; 0 skips them)",
    )
    parser.add_argument(
        "--monitor-messages",
        type=int,
        default=DEFAULT_MONITOR_MESSAGES,
        help="readings per monitors on/off drain (default 20000)",
    )
    parser.add_argument(
        "--monitor-max-series",
        type=int,
        default=MonitorSettings().max_series,
        help="the monitors' max_series (default: MonitorSettings' own)",
    )
    parser.add_argument(
        "--monitors-only",
        action="store_true",
        help="only the pure pass, the monitors on/off pairs and (monitors on) the profiled drain",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.monitor_pairs <= 10 or not 1 <= args.monitor_messages <= 200_000:
        parser.error("--monitor-pairs must be 0..10 and --monitor-messages 1..200000")
    if not 1 <= args.monitor_max_series <= UNBOUNDED_SERIES:
        parser.error(f"--monitor-max-series must be 1..{UNBOUNDED_SERIES}")
    if not 1 <= args.messages <= 1_000_000 or not 1 <= args.runs <= 10 or not 0 <= args.latency_seconds <= 120:
        parser.error("--messages must be 1..1000000, --runs 1..10, --latency-seconds 0..120")
    if not set(args.contenders) <= set(CONTENDERS):
        parser.error(f"--contenders: choose from {','.join(CONTENDER_KEYS)}")
    if not 0 <= args.profile_messages <= 200_000 or (args.mqtt_inflight is not None and args.mqtt_inflight < 0):
        parser.error("--profile-messages must be 0..200000 and --mqtt-inflight >= 0")
    quiet_logs()
    host = machine()
    with tempfile.TemporaryDirectory(prefix="inlet-bench-mqtt-") as tmp, contextlib.ExitStack() as stack:
        mosquitto = stack.enter_context(BenchMosquitto(args.mqtt_inflight))
        bootstrap, kafka_pid = kafka_broker(stack, args.kafka)
        env = Env("127.0.0.1", mosquitto.port, mosquitto.url, bootstrap, mosquitto.pid, kafka_pid, Path(tmp))
        tune_gc()  # the collector settings of `inlet run`
        results = asyncio.run(bench(args, env, host))
    print_table(results)
    print(json.dumps({k: v for k, v in results.items() if k != "profile"}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
