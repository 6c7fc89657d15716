"""A fleet of supervisors on a real Kafka: exactly-once against at-least-once throughput, and how long the fleet
takes to move a dead replica's integrations.

    .venv/bin/python bench/bench_fleet.py [--resources N] [--messages M] [--pairs P] [--batch-size B]
                                          [--integrations I] [--kills K] [--session-timeout S]
                                          [--kafka HOST:PORT] [--profile DIR] [--json]

Everything runs on loopback: a Kafka broker started here with the default JIT (unless ``--kafka`` or
``INLET_KAFKA_BOOTSTRAP`` names one), a Mosquitto started here (``tools.services.Mosquitto``), the project's
test servers. Every supervisor is the real CLI, ``python -m inlet run --config DIR``, in a child process of its
own with a ``fleet:`` section; each measured run gets a fresh group, positions topic and topic prefix.

**1. Throughput, exactly-once against at-least-once.** A fleet of one replica runs one integration, with
``delivery: at_least_once`` or ``delivery: exactly_once``; the variants alternate (ALO, EOS, ALO, EOS, ... for
``--pairs`` pairs) on the same broker:

- **FHIR Bulk**: N generated Observations (``connectors.fhir.synth``, seed 1, as ``bench_fhir_bulk.py``) served by
  the Bulk Data test server (``tools.servers.fhir_bulk``) in a child process of its own, exported by the plugin
  ``fhir.bulk_export`` (batches of 500, its default, or ``--batch-size``; two events per Observation:
  ``clinical.observation`` 2.0 and 1.0);
- **MQTT**: M Tasmota ``SENSOR`` readings queued at QoS 1 in the integration's persistent session before the
  supervisor starts (``bench_mqtt.prepublish``), drained by the ``mqtt_meter`` plugin (five events a reading).

The clock is read from the positions topic, which a ``read_committed`` consumer in this process tails: the
position of a batch is written after Kafka acknowledged its events (at-least-once) or in the same transaction
(exactly-once), so a position seen there means its events are in Kafka. *Drain* = from the first committed batch
of records (Bulk: the first 500 lines, so neither the kick-off nor the server preparing the export is in it; MQTT:
the first batch) to the position that completes the run (Bulk: the final ``transaction_time`` position; MQTT: the
positions' PUBACK lists add up to M); the rate counts what was committed after the first batch, in that window.
*Start* = from spawning the process to that first batch (Python start-up, joining the group, the topic check, the
producers, the kick-off); *from spawn* = the units over spawn → the last position. CPU = utime + stime of the
supervisor process (``/proc/PID/stat``) over the drain (*busy*: those CPU seconds per second of drain), and over
the whole run; the brokers' CPU likewise. After each run the supervisor is stopped (SIGTERM) and every event is
read back with ``read_committed``: every event id must be there, and with exactly-once none twice.

**2. Rebalance after a kill.** Three replicas share ``--integrations`` FHIR search integrations against the
FHIR test server (``tools.servers.fhir``, small data, ``poll_interval_seconds`` 1), ``session_timeout_seconds`` S
(heartbeat S/4); a new Observation is added every 0.5 s, so every running integration commits a position about
every second (a caught-up search with nothing new commits nothing). Once settled (every integration owned, balanced,
committing), one replica is killed with SIGKILL; measured from the kill: the time until every integration it
ran has committed a position written by a surviving replica (the positions topic's ``replica``), and the time
until the group coordinator shows them owned by the survivors (``core.fleet.owners``, polled every ~0.25 s:
an upper bound). Then it is started again and the fleet settles before the next kill (``--kills``, rotating
the victim). Last, one replica is stopped with SIGTERM: a clean leave, no session timeout to wait out.

``--profile DIR``: one more at-least-once and exactly-once drain of each kind (not counted) under ``py-spy
record`` (``.venv/bin/pip install py-spy``), attached to the supervisor from the first committed batch on; the
raw stacks go to DIR and the top frames by own and by inclusive samples are printed.

Progress goes to stderr; the table, then one JSON line, to stdout. Every phase has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.bench_fhir_bulk import bulk_server, write_ndjson
from bench.bench_mqtt import Env as MqttEnv
from bench.bench_mqtt import check_stamp_is_ignored, prepublish, readings
from bench.bench_pipeline import _machine_cpu_s, _proc_cpu_s, kafka_broker, log, machine, quiet_logs
from inlet.connectors.fhir.resources import filter_reason
from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.fleet import owners
from tools.fleet_config import write_fleet_config
from tools.servers.fhir import FhirTestServer
from tools.services import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESOURCES = 40_000
DEFAULT_MESSAGES = 30_000
DEFAULT_PAIRS = 3
DEFAULT_INTEGRATIONS = 30
DEFAULT_KILLS = 3
DEFAULT_SESSION_TIMEOUT = 6.0
REPLICAS = 3
SEARCH_RESOURCES = 200  # the rebalance phase's data: small, every poll reads one page
ZONE = "Europe/Berlin"
FILE_LINES = 10_000  # the bulk server's lines per exported file
RUN_TIMEOUT = 240.0  # seconds: one throughput run, spawn to the last position
READ_BACK_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0  # SIGTERM to exit
SETTLE_TIMEOUT = 120.0  # the rebalance phase: a fleet settles
MOVE_TIMEOUT = 90.0  # on top of the session timeout: a dead replica's integrations move
OWNERS_POLL = 0.25


class BenchError(RuntimeError):
    """The benchmark measured something other than what it claims (lost or doubled events, a stall)."""


# --- supervisors -------------------------------------------------------------------------------------------


def write_config(
    root: Path,
    *,
    kafka: str,
    prefix: str,
    replica: str,
    integrations: Sequence[dict[str, Any]],
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
) -> Path:
    """One replica's config directory (``tools.fleet_config``): fleet ``<prefix>group``, topics under ``prefix``
    created at start-up (``topics.create``), transactional ids under ``<prefix>tx``, Kafka's default timeouts."""
    return write_fleet_config(
        root,
        kafka=kafka,
        prefix=prefix,
        group=prefix + "group",
        replica=replica,
        integrations=integrations,
        session_timeout_seconds=session_timeout,
        request_timeout_ms=None,
        fleet={"transactional_id_prefix": prefix + "tx"},
        drift_topic_template=prefix + "drift",
        topics={"create": True},
    )


class Replica:
    """``inlet run --config ROOT`` as a child process; its log (JSON, warnings) in ``ROOT/supervisor.log``."""

    def __init__(self, root: Path, name: str, log_level: str = "warning") -> None:
        self.root, self.name, self.log_level = root, name, log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned = 0.0

    def start(self) -> None:
        env = {**os.environ, "INLET_LOG_FORMAT": "json", "INLET_LOG_LEVEL": self.log_level}
        with (self.root / "supervisor.log").open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inlet", "run", "--config", str(self.root)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.spawned = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.pid) or 0.0

    def died(self) -> str | None:
        """None while it runs; else why it is gone (with its log's tail)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"replica {self.name} exited with {self.proc.returncode}: {self.log_tail()}"

    def log_tail(self) -> str:
        path = self.root / "supervisor.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def stop(self, grace: float = STOP_TIMEOUT) -> float | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the seconds it took to exit (None: killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, grace)
            return time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
            return None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


# --- the positions topic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One position record as the tailing consumer got it."""

    at: float  # monotonic, when this process received it (after Kafka committed it)
    key: str
    replica: str | None
    position: dict[str, Any]


async def create_positions_topic(bootstrap: str, topic: str) -> None:
    """The fleet's positions topic (compacted, one partition), before anything tails it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()


class PositionsTail:
    """Every record of a positions topic, as it is committed (``read_committed``), with its arrival time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[Seen] = []
        self.changed = asyncio.Event()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PositionsTail:
        await create_positions_topic(self.bootstrap, self.topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    if r.key is None or r.value is None:
                        continue
                    doc = orjson.loads(r.value)
                    self.records.append(Seen(now, r.key.decode(), doc.get("replica"), doc.get("position") or {}))
            if batch:
                self.changed.set()

    async def until(self, done: Callable[[], bool], deadline: float, died: Callable[[], str | None]) -> None:
        """Wait until ``done()`` holds; fail when ``died()`` says why or at ``deadline``."""
        while not done():
            if why := died():
                raise BenchError(why)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"not done by the deadline (positions topic {self.topic}: {len(self.records)} seen)")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))


# --- read-back ---------------------------------------------------------------------------------------------


async def read_back(bootstrap: str, prefix: str, expect: int) -> dict[str, Any]:
    """Every record under ``prefix`` but the positions, ``read_committed``: events, distinct ids, DLQ records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(prefix) and t != prefix + "positions")
        consumer.subscribe(topics)
        ids: Counter[bytes] = Counter()
        per_topic: Counter[str] = Counter()
        dlq = 0
        deadline = time.monotonic() + READ_BACK_TIMEOUT
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for tp, records in batch.items():
                per_topic[tp.topic.removeprefix(prefix)] += len(records)
                if tp.topic in (prefix + "dlq", prefix + "drift"):
                    dlq += len(records)
                    continue
                for r in records:
                    ids[next((v for k, v in r.headers if k == "ce_id"), b"")] += 1
            now = time.monotonic()
            if batch:
                last = now
            if ids.total() >= expect and now - last > 1.0:  # all there, and nothing more for a second
                break
    finally:
        await consumer.stop()
    return {"topics": dict(per_topic), "events": ids.total(), "distinct": len(ids), "dlq": dlq}


# --- throughput: one fleet of one replica, one integration ---------------------------------------------------


@dataclass
class Drain:
    """One measured run of one integration in a fleet of one."""

    kind: str  # bulk | mqtt
    delivery: str  # at_least_once | exactly_once
    units: int  # resources or messages in the run
    counted: int  # of them committed inside the drain window
    startup_s: float  # spawn -> first committed batch of records
    drain_s: float  # first -> last committed position
    total_s: float  # spawn -> last committed position
    cpu_drain_s: float  # the supervisor process, utime + stime over the drain
    cpu_total_s: float  # ... from spawn to the last position
    broker_cpu_s: float | None
    mosquitto_cpu_s: float | None
    others_cores: float  # every other process (this one's tailing consumer included), during the drain
    batches: int  # positions committed in the drain window (transactions, with exactly-once), its first included
    events: int = 0  # read back
    distinct: int = 0
    dlq: int = 0

    @property
    def rate(self) -> float:
        return self.counted / self.drain_s

    def summary(self) -> dict[str, Any]:
        return {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()},
            "per_s": round(self.rate),
            "supervisor_cores": round(self.cpu_drain_s / self.drain_s, 2),
            "per_s_from_spawn": round(self.units / self.total_s),
            "cpu_us_per_unit": round(self.cpu_drain_s / self.counted * 1e6, 1),
            "cpu_us_per_unit_from_spawn": round(self.cpu_total_s / self.units * 1e6, 1),
            "broker_cpu_us_per_unit": round(self.broker_cpu_s / self.counted * 1e6, 1)
            if self.broker_cpu_s is not None
            else None,
            "mosquitto_cpu_us_per_unit": round(self.mosquitto_cpu_s / self.counted * 1e6, 1)
            if self.mosquitto_cpu_s is not None
            else None,
            "units_per_batch": round((self.counted) / max(1, self.batches - 1), 1),
        }


@dataclass
class Setup:
    """What every throughput run shares."""

    bootstrap: str
    broker_pid: int | None
    tmp: Path
    run_id: str
    bulk_url: str = ""
    resources: int = 0
    bulk_events: int = 0  # expected per run
    mqtt: MqttEnv | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    events_per_message: int = 0
    profile_dir: Path | None = None
    batch_size: int | None = None  # the bulk plugin's batch_size; None: its default (500)


def bulk_integration(name: str, delivery: str, base_url: str, batch_size: int | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"http": {"base_url": base_url}, "poll_min_seconds": 0}
    if batch_size is not None:
        settings["batch_size"] = batch_size
    return {
        "customer": "bench",
        "integration": name,
        "plugin": "fhir.bulk_export",
        "zone": ZONE,
        "delivery": delivery,
        "poll_interval_seconds": 3600,  # one export per run
        "settings": settings,
    }


def mqtt_integration(name: str, delivery: str, url: str, subscription: str, client_id: str) -> dict[str, Any]:
    return {
        "customer": "bench",
        "integration": name,
        "plugin": "mqtt_meter",
        "zone": ZONE,
        "delivery": delivery,
        "settings": {
            "mqtt": {"url": url, "topics": [subscription], "client_id": client_id},
            "routes": [
                # .../tele/<device>/SENSOR: the device is the second level from the end (levels count from 0)
                {"topic": subscription, "decoder": "tasmota", "device_level": subscription.count("/") - 1, "zone": ZONE}
            ],
        },
    }


async def drain(s: Setup, kind: str, delivery: str, label: str) -> Drain:
    """One run: spawn the fleet of one, clock it on the positions topic, stop it, read every event back."""
    short = "eos" if delivery == "exactly_once" else "alo"
    prefix = f"fleet-{s.run_id}-{kind}-{label}-{short}."
    name = f"{kind}-{label}-{short}"
    key = f"bench/{name}"
    if kind == "bulk":
        doc = bulk_integration(name, delivery, s.bulk_url, s.batch_size)
        units, expect = s.resources, s.bulk_events
    else:
        assert s.mqtt is not None
        topic_prefix = f"bench/{s.run_id}/{label}-{short}"
        client_id = f"bench-{s.run_id}-{label}-{short}"
        subscription = f"{topic_prefix}/tele/+/SENSOR"
        seconds = await asyncio.to_thread(prepublish, s.mqtt, topic_prefix, s.messages, client_id)
        log(f"  {len(s.messages)} readings queued in the session {client_id} in {seconds:.1f} s")
        doc = mqtt_integration(name, delivery, s.mqtt.mqtt_url, subscription, client_id)
        units, expect = len(s.messages), len(s.messages) * s.events_per_message
    root = write_config(s.tmp / name, kafka=s.bootstrap, prefix=prefix, replica="solo", integrations=[doc])
    replica = Replica(root, "solo")
    mosquitto = s.mqtt.mosquitto_pid if kind == "mqtt" and s.mqtt is not None else None
    profiler: subprocess.Popen[bytes] | None = None
    async with PositionsTail(s.bootstrap, prefix + "positions") as tail:
        mine = [r for r in tail.records if r.key == key]

        def seen() -> list[Seen]:
            mine[:] = [r for r in tail.records if r.key == key]
            return mine

        def data(r: Seen) -> int:
            """Records the batch of this position completed: MQTT its PUBACKs, Bulk the lines of file 0 so far."""
            if kind == "mqtt":
                return len(r.position.get("mids", ()))
            export = r.position.get("export") or {}
            return int(export.get("line", 0)) if export.get("file") == 0 else 0

        def complete() -> bool:
            if kind == "bulk":
                return any("export" not in r.position for r in seen())
            return sum(len(r.position.get("mids", ())) for r in seen()) >= units

        replica.start()
        try:
            deadline = replica.spawned + RUN_TIMEOUT
            # The first batch of records committed (Bulk: not the empty batch committing the status URL, nor the
            # export's preparation on the server between them): the drain window starts there.
            await tail.until(lambda: any(data(r) for r in seen()), deadline, replica.died)
            if s.profile_dir is not None:  # the drain only, not the start-up
                profiler = start_profiler(replica.pid, s.profile_dir / f"{name}.txt")
            first = next(r for r in mine if data(r))
            cpu_first = replica.cpu_s()
            broker1, mosquitto1, machine1 = _proc_cpu_s(s.broker_pid), _proc_cpu_s(mosquitto), _machine_cpu_s()
            await tail.until(complete, deadline, replica.died)
            last = mine[-1]
            cpu_last = replica.cpu_s()
            broker2, mosquitto2, machine2 = _proc_cpu_s(s.broker_pid), _proc_cpu_s(mosquitto), _machine_cpu_s()
        finally:
            if profiler is not None:
                stop_profiler(profiler)
            stopped = await replica.stop()
            if stopped is None:
                log(f"  {name}: did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; killed")
    counted = units - data(first)
    broker_cpu = broker2 - broker1 if broker1 is not None and broker2 is not None else None
    mosquitto_cpu = mosquitto2 - mosquitto1 if mosquitto1 is not None and mosquitto2 is not None else None
    drain_s = last.at - first.at
    others = (machine2 - machine1) - (cpu_last - cpu_first) - (broker_cpu or 0.0) - (mosquitto_cpu or 0.0)
    d = Drain(
        kind,
        delivery,
        units,
        counted,
        startup_s=first.at - replica.spawned,
        drain_s=drain_s,
        total_s=last.at - replica.spawned,
        cpu_drain_s=cpu_last - cpu_first,
        cpu_total_s=cpu_last,
        broker_cpu_s=broker_cpu,
        mosquitto_cpu_s=mosquitto_cpu,
        others_cores=max(0.0, others) / drain_s,
        batches=len(mine) - mine.index(first),
    )
    back = await read_back(s.bootstrap, prefix, expect)
    d.events, d.distinct, d.dlq = back["events"], back["distinct"], back["dlq"]
    if d.distinct != expect or d.dlq:
        raise BenchError(
            f"{name}: {d.distinct} distinct event ids of {expect} read back, {d.dlq} DLQ records: {back['topics']}"
        )
    if delivery == "exactly_once" and d.events != d.distinct:
        raise BenchError(f"{name}: a read_committed consumer saw {d.events - d.distinct} events twice")
    log(
        f"  {name}: {d.rate:,.0f}/s over {d.drain_s:.2f} s (start-up {d.startup_s:.1f} s), "
        f"{d.cpu_drain_s / d.counted * 1e6:.0f} µs CPU each, {d.batches} positions; {d.events} events read back"
    )
    return d


# --- profiling (optional) ----------------------------------------------------------------------------------


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (.venv/bin/pip install py-spy)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=(out.with_suffix(".log")).open("wb"),
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def profile_summary(path: Path, top: int = 18) -> str:
    """The hottest frames of a py-spy raw (collapsed) file: by own samples and by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return f"{path}: no profile written"
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{path.name}: {total} samples (the supervisor's threads, idle excluded)", "  own:"]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("  inclusive (inlet and aiokafka frames):")
    ours = [(f, n) for f, n in inclusive.items() if "inlet" in f or "aiokafka" in f or "/core/" in f]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in sorted(ours, key=lambda x: -x[1])[:top]]
    return "\n".join(lines)


# --- rebalance: three replicas, kill one -------------------------------------------------------------------


def search_integration(name: str, base_url: str) -> dict[str, Any]:
    return {
        "customer": "bench",
        "integration": name,
        "plugin": "fhir.observation_search",
        "zone": ZONE,
        "poll_interval_seconds": 1,
        "settings": {
            "page_size": 100,
            "http": {"base_url": base_url, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5},
        },
    }


class Feeder:
    """One new Observation on the FHIR test server every ``interval`` seconds (``meta.lastUpdated`` now): every
    running search integration finds something new at each poll and commits a position, so a position written by
    a replica says the integration runs there. (A caught-up search with nothing new commits nothing.)"""

    def __init__(self, server: FhirTestServer, interval: float = 0.5) -> None:
        self.server, self.interval = server, interval
        self.pool = generate_observations(500, seed=8)
        self.added = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            resource = copy.deepcopy(self.pool[self.added % len(self.pool)])
            resource["id"] = f"feed-{self.added}"
            resource["meta"] = {**resource["meta"], "lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds")}
            self.server.add([resource])
            self.added += 1


@dataclass
class Move:
    """One replica gone (kill -9 or SIGTERM): how long until its integrations run elsewhere."""

    how: str
    victim: str
    integrations: int
    positions_s: float  # until every one of them committed a position written by a survivor
    owners_s: float  # until the group coordinator showed every one of them owned by a survivor
    positions_median_s: float
    exit_s: float | None = None  # SIGTERM: until the process had exited


class Fleet:
    """The rebalance phase's three replicas and what the positions topic says."""

    def __init__(self, replicas: dict[str, Replica], tail: PositionsTail, cfg: Any, units: int) -> None:
        self.replicas, self.tail, self.cfg, self.units = replicas, tail, cfg, units

    def logs(self) -> str:
        """The fleet lines of every replica's log (for a failure's message)."""
        out = []
        for name, r in self.replicas.items():
            path = r.root / "supervisor.log"
            lines = path.read_text().splitlines() if path.exists() else []
            fleet = [line for line in lines if "fleet" in line or "error" in line or "warning" in line]
            out.append(f"--- {name}:\n" + "\n".join(fleet[-25:]))
        return "\n".join(out)

    def died(self, *ignore: str) -> str | None:
        for name, r in self.replicas.items():
            if name not in ignore and (why := r.died()):
                return why
        return None

    async def owners(self) -> dict[str, str]:
        try:
            return await owners(self.cfg)
        except Exception as exc:  # the coordinator busy rebalancing: ask again
            log(f"  owners(): {exc!r}")
            return {}

    async def settle(self, live: Sequence[str]) -> dict[str, str]:
        """Wait until every integration is owned by ``live`` (balanced), the same map twice 1 s apart, and each
        has committed a position from its owner since."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        previous: dict[str, str] = {}
        while time.monotonic() < deadline:
            if why := self.died():
                raise BenchError(why)
            now = await self.owners()
            counts = Counter(now.values())
            if (
                len(now) == self.units
                and set(counts) == set(live)
                and max(counts.values()) - min(counts.values()) <= 1
                and now == previous
            ):
                since = time.monotonic()
                committed: set[str] = set()

                def fresh(owned: dict[str, str] = now, t: float = since, done: set[str] = committed) -> bool:
                    done.update(r.key for r in self.tail.records if r.at > t and owned.get(r.key) == r.replica)
                    return len(done) == len(owned)

                try:
                    await self.tail.until(fresh, min(deadline, since + 30), self.died)
                except BenchError as exc:
                    missing = sorted(set(now) - committed)
                    raise BenchError(f"{exc}; no fresh position from {missing}\n{self.logs()}") from exc
                if await self.owners() == now:
                    return now
            previous = now
            await asyncio.sleep(1.0)
        raise BenchError(f"the fleet did not settle within {SETTLE_TIMEOUT:.0f} s on {list(live)}")

    async def move(self, victim: str, how: str, session: float, before: dict[str, str]) -> Move:
        theirs = sorted(k for k, r in before.items() if r == victim)
        if not theirs:
            raise BenchError(f"{victim} runs nothing: {before}")
        replica = self.replicas[victim]
        start_index = len(self.tail.records)
        t0 = time.monotonic()
        exit_s: float | None = None
        if how == "kill -9":
            replica.signal(signal.SIGKILL)
        else:
            replica.signal(signal.SIGTERM)
        moved: dict[str, float] = {}
        owners_s: float | None = None
        deadline = t0 + session + MOVE_TIMEOUT
        while time.monotonic() < deadline and (owners_s is None or len(moved) < len(theirs)):
            if why := self.died(victim):
                raise BenchError(why)
            if exit_s is None and replica.proc is not None and replica.proc.poll() is not None:
                exit_s = time.monotonic() - t0
            for r in self.tail.records[start_index:]:
                if r.key in theirs and r.key not in moved and r.replica not in (victim, None):
                    moved[r.key] = r.at - t0
            start_index = len(self.tail.records)
            if owners_s is None:
                now = await self.owners()
                if all(now.get(k) not in (None, victim) for k in theirs):
                    owners_s = time.monotonic() - t0
            await asyncio.sleep(OWNERS_POLL)
        if owners_s is None or len(moved) < len(theirs):
            raise BenchError(
                f"{how} of {victim}: after {time.monotonic() - t0:.0f} s, {len(moved)} of {len(theirs)} integrations "
                f"committed elsewhere, owners moved: {owners_s is not None}"
            )
        if replica.proc is not None:
            await asyncio.to_thread(replica.proc.wait, STOP_TIMEOUT)
            if exit_s is None:
                exit_s = time.monotonic() - t0
        return Move(
            how,
            victim,
            len(theirs),
            positions_s=max(moved.values()),
            owners_s=owners_s,
            positions_median_s=statistics.median(moved.values()),
            exit_s=exit_s if how == "SIGTERM" else None,
        )


async def rebalance(args: argparse.Namespace, bootstrap: str, tmp: Path, run_id: str) -> dict[str, Any]:
    prefix = f"fleet-{run_id}-rebalance."
    session = args.session_timeout
    names = [f"r{i}" for i in range(REPLICAS)]
    with FhirTestServer(generate_observations(SEARCH_RESOURCES, seed=7)) as server, Feeder(server) as feeder:
        docs = [search_integration(f"obs{n:02d}", server.base_url) for n in range(args.integrations)]
        roots = {
            n: write_config(
                tmp / "rebalance" / n,
                kafka=bootstrap,
                prefix=prefix,
                replica=n,
                integrations=docs,
                session_timeout=session,
            )
            for n in names
        }
        cfg = load_config(roots[names[0]])[0]
        replicas = {n: Replica(roots[n], n, "info") for n in names}  # the fleet's own lines, for a failure
        async with PositionsTail(bootstrap, prefix + "positions") as tail:
            fleet = Fleet(replicas, tail, cfg, args.integrations)
            try:
                for r in replicas.values():
                    r.start()
                log(f"rebalance: {REPLICAS} replicas, {args.integrations} integrations; waiting for them to settle")
                current = await fleet.settle(names)
                kills: list[Move] = []
                for k in range(args.kills):
                    victim = names[k % REPLICAS]
                    m = await fleet.move(victim, "kill -9", session, current)
                    kills.append(m)
                    log(
                        f"  kill -9 {victim} ({m.integrations} integrations): committed elsewhere after "
                        f"{m.positions_s:.2f} s (median {m.positions_median_s:.2f}), owners after {m.owners_s:.2f} s"
                    )
                    replicas[victim].start()
                    current = await fleet.settle(names)
                victim = names[args.kills % REPLICAS]
                leave = await fleet.move(victim, "SIGTERM", session, current)
                log(
                    f"  SIGTERM {victim} ({leave.integrations} integrations): exited after {leave.exit_s:.2f} s, "
                    f"committed elsewhere after {leave.positions_s:.2f} s, owners after {leave.owners_s:.2f} s"
                )
            finally:
                await asyncio.gather(*(r.stop() for r in replicas.values()))

    def spread(values: Sequence[float]) -> dict[str, float]:
        return {
            "min": round(min(values), 2),
            "median": round(statistics.median(values), 2),
            "max": round(max(values), 2),
        }

    return {
        "replicas": REPLICAS,
        "integrations": args.integrations,
        "session_timeout_seconds": session,
        "heartbeat_interval_seconds": session / 4,
        "poll_interval_seconds": 1,
        "new_observations": feeder.added,
        "kills": [asdict(m) for m in kills],
        "kill_positions_s": spread([m.positions_s for m in kills]),
        "kill_owners_s": spread([m.owners_s for m in kills]),
        "sigterm": asdict(leave),
    }


# --- the run -----------------------------------------------------------------------------------------------


def spread_of(drains: Sequence[Drain], value: Callable[[Drain], float]) -> dict[str, float]:
    values = [value(d) for d in drains]
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def compare(drains: Sequence[Drain], kind: str) -> dict[str, Any]:
    """The ALO and EOS runs of one kind, and EOS / ALO: the ratio of each pair (run i of both) and of medians."""
    alo = [d for d in drains if d.kind == kind and d.delivery == "at_least_once"]
    eos = [d for d in drains if d.kind == kind and d.delivery == "exactly_once"]

    def cpu(d: Drain) -> float:
        return d.cpu_drain_s / d.counted * 1e6

    pairs = list(zip(alo, eos, strict=True))
    return {
        "at_least_once": [d.summary() for d in alo],
        "exactly_once": [d.summary() for d in eos],
        "rate": {"at_least_once": spread_of(alo, lambda d: d.rate), "exactly_once": spread_of(eos, lambda d: d.rate)},
        "cpu_us": {"at_least_once": spread_of(alo, cpu), "exactly_once": spread_of(eos, cpu)},
        "eos_over_alo_rate_pairs": [round(e.rate / a.rate, 3) for a, e in pairs],
        "eos_over_alo_cpu_pairs": [round(cpu(e) / cpu(a), 3) for a, e in pairs],
        "eos_over_alo_rate_medians": round(
            statistics.median(d.rate for d in eos) / statistics.median(d.rate for d in alo), 3
        ),
    }


async def bench(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, tmp: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    s = Setup(bootstrap, broker_pid, tmp, run_id, batch_size=args.batch_size)
    drains: list[Drain] = []
    deliveries = ("at_least_once", "exactly_once")
    profiles: list[str] = []

    async def pairs(kind: str) -> None:
        """``args.pairs`` alternating at-least-once and exactly-once drains of ``kind``, then the profiled ones."""
        for i in range(args.pairs):
            for delivery in deliveries:
                log(f"{kind}: pair {i + 1}/{args.pairs}, {delivery}")
                drains.append(await drain(s, kind, delivery, f"p{i}"))
        if args.profile:
            s.profile_dir = args.profile
            for delivery in deliveries:
                log(f"{kind}: profiled {delivery} run (py-spy, not counted)")
                d = await drain(s, kind, delivery, "profile")
                short = "eos" if delivery == "exactly_once" else "alo"
                profiles.append(
                    f"{delivery}, {d.rate:,.0f}/s under py-spy\n"
                    + profile_summary(args.profile / f"{kind}-profile-{short}.txt")
                )
            s.profile_dir = None

    if args.resources:
        data = tmp / "Observation.000.ndjson"
        count, size = write_ndjson(data, args.resources)
        with data.open("rb") as lines:
            mapped = sum(1 for line in lines if filter_reason(orjson.loads(line)) is None)
        s.resources, s.bulk_events = count, 2 * mapped  # clinical.observation 2.0 and 1.0
        log(f"bulk: {count} Observations, {size / 1e6:.1f} MB NDJSON")
        with bulk_server(data, FILE_LINES) as base_url:
            s.bulk_url = base_url
            log("bulk: warm-up (one exactly-once run, not counted)")
            await drain(s, "bulk", "exactly_once", "warm")
            await pairs("bulk")
    if args.messages:
        with Mosquitto() as mosquitto:
            s.mqtt = MqttEnv("127.0.0.1", mosquitto.port, mosquitto.url, bootstrap, mosquitto.pid, broker_pid, tmp)
            s.events_per_message = check_stamp_is_ignored()
            s.messages = readings(args.messages)
            await pairs("mqtt")
    moves = await rebalance(args, bootstrap, tmp, run_id) if args.kills else None
    return {
        "benchmark": "fleet",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "resources": s.resources,
        "bulk_batch_size": args.batch_size or 500,
        "messages": args.messages,
        "events_per_message": s.events_per_message,
        "pairs": args.pairs,
        "results": {k: compare(drains, k) for k in ("bulk", "mqtt") if any(d.kind == k for d in drains)},
        "rebalance": moves,
        "profiles": profiles,
    }


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\ninlet fleet benchmark — {r['pairs']} pair(s) of runs (at-least-once, exactly-once alternating), "
        f"one replica, one integration each; {r['wall_s']:.0f} s in all"
    )
    print(f"command: {r['command']}")
    print(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; Python {m['python']}, aiokafka {m['aiokafka']}; "
        f"{m['java']}; load avg at start {m['loadavg_at_start']}\n"
    )
    what = {
        "bulk": f"FHIR Bulk, {r['resources']:,} Observations (2 events each, batches of {r['bulk_batch_size']}), "
        "resources",
        "mqtt": f"MQTT Tasmota backlog, {r['messages']:,} readings ({r['events_per_message']} events each), messages",
    }
    print(
        f"{'run':<26}{'/s':>8}{'CPU µs':>8}{'busy':>6}{'kafka':>7}{'mosq.':>7}{'others':>8}{'start':>7}"
        f"{'from':>8}{'per':>7}"
    )
    print(
        f"{'':<26}{'drain':>8}{'each':>8}{'cores':>6}{'µs':>7}{'µs':>7}{'cores':>8}{'s':>7}{'spawn/s':>8}{'batch':>7}"
    )
    for kind, c in r["results"].items():
        print(what[kind])
        for delivery in ("at_least_once", "exactly_once"):
            for i, d in enumerate(c[delivery]):
                broker = "-" if d["broker_cpu_us_per_unit"] is None else f"{d['broker_cpu_us_per_unit']:.0f}"
                mosq = "-" if d["mosquitto_cpu_us_per_unit"] is None else f"{d['mosquitto_cpu_us_per_unit']:.0f}"
                print(
                    f"  {delivery} #{i + 1:<9}{d['per_s']:>8,}{d['cpu_us_per_unit']:>8.0f}"
                    f"{d['supervisor_cores']:>6.2f}{broker:>7}{mosq:>7}"
                    f"{d['others_cores']:>8.2f}{d['startup_s']:>7.1f}{d['per_s_from_spawn']:>8,}"
                    f"{d['units_per_batch']:>7.0f}"
                )
        rate, cpu = c["rate"], c["cpu_us"]
        print(
            f"  EOS / ALO: rate {min(c['eos_over_alo_rate_pairs']):.2f} - {max(c['eos_over_alo_rate_pairs']):.2f} "
            f"(pairs), {c['eos_over_alo_rate_medians']:.2f} (medians); CPU per unit "
            f"{min(c['eos_over_alo_cpu_pairs']):.2f} - {max(c['eos_over_alo_cpu_pairs']):.2f}x; "
            f"ALO {rate['at_least_once']['min']:,.0f} - {rate['at_least_once']['max']:,.0f}/s at "
            f"{cpu['at_least_once']['min']:.0f} - {cpu['at_least_once']['max']:.0f} µs, "
            f"EOS {rate['exactly_once']['min']:,.0f} - {rate['exactly_once']['max']:,.0f}/s at "
            f"{cpu['exactly_once']['min']:.0f} - {cpu['exactly_once']['max']:.0f} µs"
        )
    print(
        "(drain: first committed batch → the last position, clocked on the positions topic; CPU, busy: the "
        "supervisor process over the drain; kafka, mosq.: the brokers' CPU; start: spawn → first committed batch; "
        "from spawn: units / (spawn → last position))\n"
    )
    rb = r["rebalance"]
    if rb:
        print(
            f"rebalance: {rb['replicas']} replicas, {rb['integrations']} FHIR search integrations (poll every "
            f"{rb['poll_interval_seconds']} s), session_timeout_seconds {rb['session_timeout_seconds']:g} "
            f"(heartbeat {rb['heartbeat_interval_seconds']:g} s)"
        )
        for mv in rb["kills"]:
            print(
                f"  kill -9 {mv['victim']} ({mv['integrations']} integrations): every one committed by a survivor "
                f"after {mv['positions_s']:.2f} s (median {mv['positions_median_s']:.2f}), owned by survivors "
                f"after {mv['owners_s']:.2f} s"
            )
        p, o = rb["kill_positions_s"], rb["kill_owners_s"]
        print(
            f"  kill -9, {len(rb['kills'])} times: committed elsewhere min/median/max {p['min']:.2f} / "
            f"{p['median']:.2f} / {p['max']:.2f} s; owners {o['min']:.2f} / {o['median']:.2f} / {o['max']:.2f} s"
        )
        t = rb["sigterm"]
        print(
            f"  SIGTERM {t['victim']} ({t['integrations']} integrations): exited after {t['exit_s']:.2f} s, every "
            f"one committed by a survivor after {t['positions_s']:.2f} s, owned after {t['owners_s']:.2f} s"
        )
    for text in r["profiles"]:
        print("\n" + text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES, help="Observations per bulk run (0: skip)")
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="readings per MQTT run (0: skip)")
    parser.add_argument("--batch-size", type=int, help="the bulk plugin's batch_size (default: its own, 500)")
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="ALO + EOS pairs of runs per kind")
    parser.add_argument("--integrations", type=int, default=DEFAULT_INTEGRATIONS, help="rebalance phase")
    parser.add_argument("--kills", type=int, default=DEFAULT_KILLS, help="kill -9 rounds (0: skip the phase)")
    parser.add_argument("--session-timeout", type=float, default=DEFAULT_SESSION_TIMEOUT, help="seconds")
    parser.add_argument(
        "--kafka",
        default=os.environ.get("INLET_KAFKA_BOOTSTRAP"),
        help="an existing Kafka bootstrap (default: $INLET_KAFKA_BOOTSTRAP, else start one here)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy one more EOS and ALO run of each kind; stacks in DIR")
    parser.add_argument("--json", action="store_true", help="only the JSON document, indented")
    args = parser.parse_args(argv)
    if not (
        0 <= args.resources <= 200_000
        and 0 <= args.messages <= 200_000
        and 1 <= args.pairs <= 5
        and REPLICAS <= args.integrations <= 300
        and 0 <= args.kills <= 10
        and 3 <= args.session_timeout <= 60
        and (args.batch_size is None or 1 <= args.batch_size <= 50_000)
    ):
        parser.error(
            "--resources 0..200000, --messages 0..200000, --pairs 1..5, --integrations 3..300, --kills 0..10, "
            "--session-timeout 3..60, --batch-size 1..50000"
        )
    quiet_logs()
    host = machine()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inlet-bench-fleet-") as tmp, contextlib.ExitStack() as stack:
        bootstrap, pid = kafka_broker(stack, args.kafka)
        results = asyncio.run(bench(args, bootstrap, pid, Path(tmp)))
    results = {"machine": host, "wall_s": round(time.monotonic() - t0, 1), **results}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
        print(json.dumps({k: v for k, v in results.items() if k != "profiles"}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
