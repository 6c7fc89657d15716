"""FHIR Bulk Data ``$export`` → mapped, validated events acknowledged by Kafka, next to its yardsticks.

    .venv/bin/python bench/bench_fhir_bulk.py [--events N] [--naive-events M] [--rounds R] [--memory-mb MB]
                                              [--bootstrap HOST:PORT] [--monitor-pairs K] [--json]

What one run measures, against one broker (started here with the default JIT unless ``--bootstrap`` or
``INLET_KAFKA_BOOTSTRAP`` names one), on loopback only:

1. **data**: N generated Observations (``connectors.fhir.synth``, seed 1) written as one NDJSON line each to a
   temporary file, the shape of a Bulk Data export's ``Observation.000.ndjson``. A separate process (this
   script with ``--serve``) loads them into the test suite's ``FhirBulkServer`` and serves them as a system
   export: no ``Retry-After`` wait before the manifest, files of ``--file-lines`` lines sent in 64 KB chunks.
   The server runs in its own process so its threads do not share the measured process's GIL — a real
   upstream is another machine.
2. **inlet**: the plugin registered as ``fhir.bulk_export`` (found through ``core.registry``, built from its
   own settings model with defaults) → ``core.pipeline.Pipeline`` → ``KafkaSink`` (project defaults: acks=all,
   idempotent, linger 5 ms, 256 KB batches) → ``CheckpointStore``. Wall time from the kick-off request to
   the last acknowledged batch's commit (the export's DELETE cleanup included); resources/s = lines read / it.
   The time to the first batch of events (kick-off, the server serialising the export, the status poll,
   the first file chunk) is reported apart.
3. **raw aiokafka**: the very events that pass produced (collected once with ``MemorySink``: same values,
   keys, 8 CloudEvents headers), sent with the producer ``KafkaSink`` builds, one ``send()`` each as fast as
   it takes them, then every ack (``bench_pipeline.send_raw``): the raw ceiling for these event sizes.
4. **naive**: the same NDJSON lines, already in memory (no HTTP: this favours naive), each parsed with
   ``fhir.resources`` — ``fhir.resources.R4B.observation.Observation.model_validate_json``: fhir.resources 8
   has no ``R4`` package, its default package is R5 and ``R4B`` (4.3) is the closest to R4 that parses these
   resources — then a few fields hand-mapped into a dict, ``orjson.dumps``, and one ``send()`` per resource on
   the same producer, awaiting the acks of every batch of ``--batch`` before the next. ``--naive-events``
   (default min(N, 20000)) bounds it: at ~300 µs a line it would otherwise dominate the run.
5. **monitors on / off**: ``--monitor-pairs`` pairs of inlet passes into Kafka (as in 2.), one with the
   data-quality monitors and one without, the order alternating (``bench.monitor_pairs``: monitors as the
   supervisor builds them, restored from a state learnt on these resources): CPU µs per resource and per event on
   each side and the ratio on / off of every pair; the pure CPU split also times ``Monitors.observe``, and
   ``observe`` runs once under cProfile. The rows of 2. run without monitors, as before they existed.
6. **peak memory**: the inlet path over a ~``--memory-mb`` MB NDJSON file, in a child process (this script
   with ``--child-inlet``) whose peak RSS is read with ``os.wait4`` (``ru_maxrss``); target < 200 MB.

Each round runs inlet, raw, naive on fresh pre-created one-partition topics; the headline is the median
round. A warm-up (one ``MemorySink`` pass, which also gives the CPU cost without Kafka, and a raw send of
10k events) comes first. As in ``bench_pipeline``, the harness's own data is frozen out of the GC during
every measured load. Progress goes to stderr; the table, then one JSON line, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench.bench_pipeline import (
    Round,
    create_topics,
    harness_frozen,
    kafka_broker,
    log,
    machine,
    measure,
    quiet_logs,
    send_raw,
    sink_producer,
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
from inlet.connectors.fhir.ndjson import NdjsonFile, NdjsonLine
from inlet.connectors.fhir.synth import generate_observations
from inlet.contracts.base import Contract, converters_from
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings, MonitorSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper, Event, json_value
from inlet.core.metrics import BatchCounts, Stats
from inlet.core.monitors import Monitors
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.registry import find_plugin
from inlet.core.sinks import Rejected, Sink
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.sinks.memory import MemorySink
from inlet.core.supervisor import tune_gc

PLUGIN = "fhir.bulk_export"
CUSTOMER, INTEGRATION, ZONE = "bench", "bulk", "Europe/Vienna"
SEED = 1
DEFAULT_EVENTS = 100_000
DEFAULT_NAIVE = 20_000
DEFAULT_ROUNDS = 3
DEFAULT_MEMORY_MB = 100
DEFAULT_MONITOR_PAIRS = 3
NAIVE_BATCH = 500  # the connector's default batch_size: naive awaits its acks batch by batch
WARMUP_RAW = 10_000
SPLIT_LINES = 20_000  # lines the pure CPU split times
CHUNK = 64 * 1024  # the server's write size
LOAD_TIMEOUT = 300.0  # seconds: no single measured load may run longer
CHILD_TIMEOUT = 600.0
TARGET_RAW, TARGET_NAIVE, TARGET_RSS_MB = 0.50, 5.0, 200.0


# --- data and the bulk server (in its own process) ----------------------------------------------------------


def write_ndjson(path: Path, count: int) -> tuple[int, int]:
    """``count`` generated Observations as NDJSON; returns (lines, bytes). The dicts are dropped at once."""
    resources = generate_observations(count, seed=SEED)
    with path.open("wb") as f:
        for r in resources:
            f.write(orjson.dumps(r) + b"\n")
    del resources
    return count, path.stat().st_size


def lines_for_megabytes(megabytes: float, sample: Path) -> int:
    """How many generated lines make ``megabytes`` MB, from the mean line size of an existing file."""
    size, lines = sample.stat().st_size, sum(1 for _ in sample.open("rb"))
    return max(1, round(megabytes * 1e6 / (size / lines)))


def serve(path: Path, file_lines: int) -> None:
    """``--serve``: the bulk server over ``path`` until stdin closes; prints its base URL first."""
    from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

    with path.open("rb") as f:
        resources = [orjson.loads(line) for line in f if line.strip()]
    faults = BulkFaults(pending_polls=0, retry_after=None)  # the manifest at the first poll: no export wait
    with FhirBulkServer(resources, faults=faults, file_lines=file_lines, chunk_size=CHUNK) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def bulk_server(path: Path, file_lines: int) -> Any:
    """A ``--serve`` child process; yields its base URL; stops it on exit."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path), "--file-lines", str(file_lines)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"bulk server did not start (exit {proc.poll()}, said {line!r})")
        yield line
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the inlet path ----------------------------------------------------------------------------------------


class DiscardSink(Sink):
    """Acknowledges every batch at once and keeps nothing: the pipeline's cost without Kafka."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        done: asyncio.Future[Sequence[Rejected]] = asyncio.get_running_loop().create_future()
        done.set_result([])
        return done


class TimedSink(Sink):
    """Delegates to a sink; notes when the first non-empty batch arrives (the export's data starts)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.first_events: float | None = None

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        if events and self.first_events is None:
            self.first_events = time.perf_counter()
        return await self.inner.submit(events)


def topic_template(prefix: str) -> str:
    return f"{prefix}.{{name}}.v{{major}}"


async def inlet_pass(
    base_url: str,
    sink: Sink,
    template: str,
    state: Path,
    out: list[Round] | None,
    broker_pid: int | None,
    monitors: Callable[[], Monitors] | None = None,
) -> tuple[BatchCounts, float]:
    """One export through the registered plugin → Pipeline → ``sink`` → checkpoints.

    Returns the totals and the seconds from kick-off to the first events. With ``out`` the pass is measured
    (``bench_pipeline.measure``: wall, CPU, GC); without, it is timed with ``perf_counter`` only. ``monitors``
    builds the data-quality monitors the pipeline feeds (None: as with ``monitors: {enabled: false}``); they are
    built inside the measured block, after the harness's data is frozen out of the collector, as the supervisor
    builds them after ``tune_gc``'s freeze (the collector walks them).
    """
    cls = find_plugin(PLUGIN)
    settings = cls.settings_model.model_validate({"http": {"base_url": base_url}})  # every other default
    connector = cls(IntegrationContext(CUSTOMER, INTEGRATION, zone=ZONE), settings)
    env = Enveloper(CUSTOMER, INTEGRATION, topic_template=template)
    timed = TimedSink(sink)
    store = CheckpointStore(state / f"cp-{uuid.uuid4().hex[:8]}.sqlite")
    stats = Stats(CUSTOMER, INTEGRATION)
    try:
        async with connector:

            def run() -> Coroutine[Any, Any, Any]:
                pipeline = Pipeline(connector, env, timed, store, stats, monitors=monitors() if monitors else None)
                return asyncio.wait_for(pipeline.run(None, asyncio.Event()), LOAD_TIMEOUT)

            if out is None:
                t0 = time.perf_counter()
                await run()
            else:
                with measure(0, broker_pid, out):
                    t0 = time.perf_counter()
                    await run()
    finally:
        store.close()
    totals = stats.totals
    if out is not None:
        out[-1].events = totals.records_in
    first = (timed.first_events or time.perf_counter()) - t0
    return totals, first


async def run_inlet_kafka(
    settings: KafkaSettings,
    base_url: str,
    template: str,
    state: Path,
    broker_pid: int | None,
    out: list[Round],
    monitors: Callable[[], Monitors] | None = None,
) -> tuple[BatchCounts, float]:
    sink = KafkaSink(settings)
    await sink.start()  # producer start-up before the clock, as in bench_pipeline
    try:
        return await inlet_pass(base_url, sink, template, state, out, broker_pid, monitors)
    finally:
        await sink.stop()


def child_inlet(args: argparse.Namespace) -> None:
    """``--child-inlet``: one export into Kafka in a fresh process; prints its totals and RSS as JSON."""
    quiet_logs()

    async def go() -> dict[str, Any]:
        rss_start = _rss_kb()
        samples: list[int] = []

        async def sample() -> None:  # RSS once a second: where the peak happens, not only how high
            while True:
                samples.append(_rss_kb() // 1024)
                await asyncio.sleep(1)

        sink = KafkaSink(KafkaSettings(bootstrap=args.bootstrap))
        await sink.start()
        sampler = asyncio.ensure_future(sample())
        try:
            t0 = time.perf_counter()
            totals, first = await inlet_pass(args.base_url, sink, args.topic_template, Path(args.state), None, None)
            wall = time.perf_counter() - t0
        finally:
            sampler.cancel()
            await sink.stop()
        return {
            "records_in": totals.records_in,
            "events_out": totals.events_out,
            "dlq": dict(totals.dlq),
            "wall_s": round(wall, 3),
            "first_events_s": round(first, 3),
            "rss_start_kb": rss_start,
            "rss_samples_mb": samples,
            "vm_hwm_kb": _rss_kb("VmHWM"),
        }

    print(json.dumps(asyncio.run(go())), flush=True)


def _rss_kb(field: str = "VmRSS") -> int:
    """This process's resident set (``VmHWM``: its peak since exec) in KiB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return -1


def run_memory_child(base_url: str, bootstrap: str, template: str, state: Path) -> dict[str, Any]:
    """The inlet path in a child process; its peak RSS from ``os.wait4`` (this child alone, not the broker's)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child-inlet",
            "--base-url",
            base_url,
            "--bootstrap",
            bootstrap,
            "--topic-template",
            template,
            "--state",
            str(state),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + CHILD_TIMEOUT
    ready, _, _ = select.select([proc.stdout], [], [], CHILD_TIMEOUT)
    output = proc.stdout.read() if ready else ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the memory child did not finish in time")
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not output.strip():
        raise RuntimeError(f"the memory child failed (exit {proc.returncode}): {output[-2000:]}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    # The headline is the child's own VmHWM. ru_maxrss from wait4 is kept but over-reads: Linux carries the
    # high-water mark across exec, so it includes this parent's image at spawn (the generated data set).
    result["peak_rss_mb"] = round(result.pop("vm_hwm_kb") / 1024, 1)
    result["ru_maxrss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    result["rss_start_mb"] = round(result.pop("rss_start_kb") / 1024, 1)
    return result


# --- the pure CPU split ------------------------------------------------------------------------------------


STAGES = (
    "process_batch",
    "decode",
    "filter+identity",
    "map+validate",
    "convert v1",
    "envelope",
    "of it JSON",
    "monitors.observe",
)
BATCH = 500  # the plugin's default batch_size


def plugin_lines(path: Path, count: int) -> tuple[Any, list[NdjsonLine]]:
    """The registered plugin (its hooks need no HTTP) and the first ``count`` lines of ``path`` as its own lines."""
    file = NdjsonFile(0, "http://127.0.0.1/Observation.000.ndjson", "Observation", "output")
    lines: list[NdjsonLine] = []
    with path.open("rb") as f:
        for number, data in enumerate(f, 1):
            if number > count:
                break
            line = NdjsonLine(data.rstrip(b"\n"))
            line.file, line.line, line.problem, line.unterminated = file, number, None, False
            lines.append(line)
    cls = find_plugin(PLUGIN)
    settings = cls.settings_model.model_validate({"http": {"base_url": "http://127.0.0.1:1"}})
    return cls(IntegrationContext(CUSTOMER, INTEGRATION, zone=ZONE), settings), lines


def observed_batches(path: Path, count: int) -> list[list[Contract]]:
    """What the pipeline hands the monitors for the first ``count`` lines: the mapped models, batch by batch."""
    connector, lines = plugin_lines(path, count)
    models = [m for line in lines for m in connector.map(connector.decode(line))]
    return [models[i : i + BATCH] for i in range(0, len(models), BATCH)]


def stage_split(path: Path, count: int, passes: int = 3) -> dict[str, float]:
    """CPU µs per resource of the pipeline's pure part (no HTTP, no Kafka), whole and stage by stage.

    The first ``count`` lines of ``path`` as the connector's own NDJSON lines in batches of 500 (its default),
    through the registered plugin's hooks and an ``Enveloper``: ``process_batch`` as a whole, then each stage on
    its own over the previous stage's output (decode = ``core.exact_json`` and the Bulk checks; map+validate =
    the mapper, which builds the validated v2.0 model; convert v1 = the contract's v2 → v1 converter; envelope =
    ids, headers, time and the JSON value of both events, of which the JSON value alone). And what monitors add
    when they are on: ``Monitors.observe`` over each batch's v2.0 models (fresh monitors each pass; not part of
    ``process_batch``). Best of ``passes``, this thread only, the harness's data frozen out of the GC. The
    stages need not add up to the whole.
    """
    connector, lines = plugin_lines(path, count)
    env = Enveloper(CUSTOMER, INTEGRATION, topic_template="bench.{name}.v{major}")
    batches = [Batch(lines[i : i + BATCH], {"line": i}) for i in range(0, len(lines), BATCH)]
    records = [connector.decode(line) for line in lines]
    keys = [connector.identity(r) for r in records]
    v2 = [connector.map(r)[0] for r in records]
    convert = next(iter(converters_from(type(v2[0])).values()))
    v1 = [convert(m) for m in v2]
    models = [(m, k, ver) for m, (k, ver) in zip(v2 + v1, keys + keys, strict=True)]
    observed = [v2[i : i + BATCH] for i in range(0, len(v2), BATCH)]

    def observe() -> None:
        monitors = Monitors(CUSTOMER, INTEGRATION, MonitorSettings(), zone=ZONE)
        for b in observed:
            monitors.observe(b)

    clock = time.thread_time
    work: dict[str, Callable[[], object]] = {
        "process_batch": lambda: [process_batch(connector, env, b) for b in batches],
        "decode": lambda: [connector.decode(line) for line in lines],
        "filter+identity": lambda: [(connector.filter(r), connector.identity(r)) for r in records],
        "map+validate": lambda: [connector.map(r) for r in records],
        "convert v1": lambda: [convert(m) for m in v2],
        "envelope": lambda: [env.envelope(m, k, ver, 0) for m, k, ver in models],
        "of it JSON": lambda: [json_value(m) for m, _, _ in models],
        "monitors.observe": observe,
    }
    best: dict[str, float] = {}
    with harness_frozen():
        for _ in range(passes):
            for name, fn in work.items():
                t0 = clock()
                fn()
                spent = (clock() - t0) / len(lines) * 1e6
                best[name] = min(best.get(name, spent), spent)
    return {name: round(best[name], 1) for name in STAGES}


# --- the naive approach ------------------------------------------------------------------------------------


def naive_map(obs: Any) -> dict[str, Any]:
    """What a hand-written forwarder would keep of a parsed ``fhir.resources`` Observation."""
    coding = obs.code.coding[0] if obs.code and obs.code.coding else None
    out: dict[str, Any] = {
        "observation_id": obs.id,
        "status": obs.status,
        "code_system": coding.system if coding else None,
        "code": coding.code if coding else None,
        "display": (coding.display if coding else None) or obs.code.text,
        "patient": obs.subject.reference if obs.subject else None,
        "encounter": obs.encounter.reference if obs.encounter else None,
        "effective": obs.effectiveDateTime.isoformat() if obs.effectiveDateTime else None,
        "issued": obs.issued.isoformat() if obs.issued else None,
    }
    if obs.valueQuantity is not None:
        q = obs.valueQuantity
        out["value"] = {"value": float(q.value) if q.value is not None else None, "unit": q.code or q.unit}
    elif obs.valueCodeableConcept is not None and obs.valueCodeableConcept.coding:
        c = obs.valueCodeableConcept.coding[0]
        out["value"] = {"system": c.system, "code": c.code, "display": c.display}
    elif obs.valueString is not None:
        out["value"] = obs.valueString
    if obs.component:
        out["components"] = [
            {
                "code": comp.code.coding[0].code if comp.code.coding else None,
                "value": float(comp.valueQuantity.value) if comp.valueQuantity and comp.valueQuantity.value else None,
            }
            for comp in obs.component
        ]
    return out


async def send_naive(producer: Any, topic: str, lines: Sequence[bytes]) -> None:
    from fhir.resources.R4B.observation import Observation

    send, parse, dumps = producer.send, Observation.model_validate_json, orjson.dumps
    for start in range(0, len(lines), NAIVE_BATCH):
        futures = []
        for line in lines[start : start + NAIVE_BATCH]:
            obs = parse(line)
            value = dumps(naive_map(obs))
            key = obs.subject.reference.encode() if obs.subject and obs.subject.reference else None
            futures.append(await send(topic, value, key=key))
        await asyncio.gather(*futures)


async def run_naive(
    settings: KafkaSettings, topic: str, lines: Sequence[bytes], broker_pid: int | None, out: list[Round]
) -> None:
    sink, producer = await sink_producer(settings)
    try:
        await producer.partitions_for(topic)
        with measure(len(lines), broker_pid, out):
            await asyncio.wait_for(send_naive(producer, topic, lines), LOAD_TIMEOUT)
    finally:
        await sink.stop()


async def run_raw(
    settings: KafkaSettings, topic: str, events: Sequence[Event], broker_pid: int | None, out: list[Round]
) -> None:
    sink, producer = await sink_producer(settings)
    try:
        await producer.partitions_for(topic)  # metadata before the clock starts
        with measure(len(events), broker_pid, out):
            await asyncio.wait_for(send_raw(producer, topic, events), LOAD_TIMEOUT)
    finally:
        await sink.stop()


# --- data-quality monitors: on against off ---------------------------------------------------------------


async def monitor_overhead(
    pairs: int,
    settings: KafkaSettings,
    base_url: str,
    templates: dict[tuple[int, bool], str],
    state: Path,
    broker_pid: int | None,
    learnt: dict[str, Any],
    count: int,
) -> dict[str, Any]:
    """inlet passes into Kafka with monitors on and off, ``pairs`` times in alternating order
    (``bench.monitor_pairs``); on = monitors restored from ``learnt``; ``templates``: fresh topics per pass."""
    cpu: list[tuple[float, float]] = []
    passes: list[dict[str, Any]] = []
    events_per_resource = 0.0
    for i in range(pairs):
        per_resource: dict[bool, float] = {}
        for on in order(i):
            log(f"monitors pair {i + 1}/{pairs}: {'on' if on else 'off'} ({count} resources)")
            monitors = partial(Monitors, CUSTOMER, INTEGRATION, MonitorSettings(), zone=ZONE, state=learnt)
            out: list[Round] = []
            counts, _ = await run_inlet_kafka(
                settings, base_url, templates[i, on], state, broker_pid, out, monitors=monitors if on else None
            )
            if counts.records_in != count or counts.dlq or counts.filtered:
                raise SystemExit(f"monitors pass: {count} lines, pipeline counted {counts}")
            r = out[-1]
            per_resource[on] = r.cpu_s / r.events * 1e6
            events_per_resource = counts.events_out / counts.records_in
            passes.append(
                {
                    "monitors": on,
                    "resources_per_s": round(r.rate),
                    "py_cpu_us": round(per_resource[on], 1),
                    "gc_us": round(r.gc_s / r.events * 1e6, 1),
                    "others_cores": None if r.others_cpu_s is None else round(r.others_cpu_s / r.wall_s, 2),
                }
            )
            log(f"  {r.rate:,.0f} resources/s, {per_resource[on]:.1f} µs CPU per resource")
        cpu.append((per_resource[True], per_resource[False]))
    return {
        "resources": count,
        "state_bytes": state_bytes(learnt),
        **overhead(cpu, events_per_resource),
        "passes": passes,
    }


# --- the run -----------------------------------------------------------------------------------------------


def summary(rounds: Sequence[Round]) -> dict[str, Any]:
    med = sorted(rounds, key=lambda r: r.rate)[len(rounds) // 2]
    return {
        "resources": med.events,
        "median_per_s": round(statistics.median(r.rate for r in rounds)),
        "rounds_per_s": [round(r.rate) for r in rounds],
        "py_cpu_us": round(med.cpu_s / med.events * 1e6, 1) if med.events else None,
        "gc_us": round(med.gc_s / med.events * 1e6, 1) if med.events else None,
        "broker_cpu_us": round(med.broker_cpu_s / med.events * 1e6, 1) if med.broker_cpu_s is not None else None,
        "others_cores": round(med.others_cpu_s / med.wall_s, 2) if med.others_cpu_s is not None else None,
    }


async def bench(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, tmp: Path, host: dict[str, Any]
) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap=bootstrap)  # project defaults: acks=all, idempotent, 5 ms, 256 KB
    run_id = uuid.uuid4().hex[:8]
    data = tmp / "Observation.000.ndjson"
    t = time.perf_counter()
    count, size = write_ndjson(data, args.events)
    log(f"generated {count} Observations, {size / 1e6:.1f} MB NDJSON in {time.perf_counter() - t:.1f} s")
    state = tmp / "state"
    state.mkdir()

    rows: dict[str, list[Round]] = {"inlet": [], "raw aiokafka": [], "naive": []}
    first: list[float] = []
    with bulk_server(data, args.file_lines) as base_url:
        log(f"bulk server at {base_url}; warm-up: one pass into MemorySink (the events for raw), one into nothing")
        memory = MemorySink()
        mem_counts, _ = await inlet_pass(
            base_url, memory, topic_template(f"bench-{run_id}-mem"), state, None, broker_pid
        )
        discard_rounds: list[Round] = []
        await inlet_pass(
            base_url, DiscardSink(), topic_template(f"bench-{run_id}-mem"), state, discard_rounds, broker_pid
        )
        events = memory.events
        if not events or mem_counts.records_in != count:
            raise SystemExit(f"the warm-up pass read {mem_counts.records_in} of {count} lines: nothing to compare")
        contract_topics = sorted(
            {e.topic.removeprefix(f"bench-{run_id}-mem.") for e in events if e.topic.startswith(f"bench-{run_id}-mem.")}
        )
        lines = data.read_bytes().splitlines()[: args.naive_events]

        topics = {n: [f"bench-{run_id}-{n}-{i}" for i in range(args.rounds)] for n in ("raw", "naive")}
        prefixes = [f"bench-{run_id}-inlet{i}" for i in range(args.rounds)]
        monitor_prefixes = {
            (i, on): f"bench-{run_id}-mon{i}-{'on' if on else 'off'}"
            for i in range(args.monitor_pairs)
            for on in (True, False)
        }
        await create_topics(
            bootstrap,
            [
                f"bench-{run_id}-warm",
                *topics["raw"],
                *topics["naive"],
                *(f"{p}.{c}" for p in [*prefixes, *monitor_prefixes.values()] for c in contract_topics),
            ],
        )
        await run_raw(settings, f"bench-{run_id}-warm", events[:WARMUP_RAW], broker_pid, [])

        counts: BatchCounts | None = None
        for i in range(args.rounds):
            log(f"round {i + 1}/{args.rounds}: inlet ({count} resources)")
            counts, ttf = await run_inlet_kafka(
                settings, base_url, topic_template(prefixes[i]), state, broker_pid, rows["inlet"]
            )
            first.append(ttf)
            log(f"round {i + 1}/{args.rounds}: raw aiokafka ({len(events)} events)")
            await run_raw(settings, topics["raw"][i], events, broker_pid, rows["raw aiokafka"])
            log(f"round {i + 1}/{args.rounds}: naive ({len(lines)} resources)")
            await run_naive(settings, topics["naive"][i], lines, broker_pid, rows["naive"])
        assert counts is not None
        monitors: dict[str, Any] | None = None
        if args.monitor_pairs:
            observed = observed_batches(data, SPLIT_LINES)
            learnt = learnt_state(
                CUSTOMER, INTEGRATION, ZONE, [m for b in observed for m in b], MonitorSettings(), batch=BATCH
            )
            profile = observe_profile(Monitors(CUSTOMER, INTEGRATION, MonitorSettings(), zone=ZONE), observed)
            del observed
            templates = {k: topic_template(p) for k, p in monitor_prefixes.items()}
            monitors = await monitor_overhead(
                args.monitor_pairs, settings, base_url, templates, state, broker_pid, learnt, count
            )
            monitors["observe_profile"] = profile
    mean_value = sum(len(e.value) for e in events) / len(events)
    mean_headers = sum(sum(len(k) + len(v) for k, v in e.headers) for e in events) / len(events)
    n_events = len(events)
    del events, memory, lines

    log(f"pure CPU split over {min(count, SPLIT_LINES)} lines (no HTTP, no Kafka)")
    split = stage_split(data, min(count, SPLIT_LINES))

    mem: dict[str, Any] | None = None
    if args.memory_mb > 0:
        big = tmp / "big" / "Observation.000.ndjson"
        big.parent.mkdir()
        n_big, size_big = write_ndjson(big, lines_for_megabytes(args.memory_mb, data))
        log(f"memory: {n_big} Observations, {size_big / 1e6:.1f} MB NDJSON, inlet path in a child process")
        prefix = f"bench-{run_id}-memory"
        await create_topics(bootstrap, [f"{prefix}.{c}" for c in contract_topics])
        with bulk_server(big, args.file_lines) as base_url:
            mem = await asyncio.to_thread(run_memory_child, base_url, bootstrap, topic_template(prefix), state)
        mem.update({"ndjson_mb": round(size_big / 1e6, 1), "lines": n_big})

    res = {k: summary(v) for k, v in rows.items()}
    res["inlet, sink discards (no Kafka)"] = summary(discard_rounds)
    inlet, raw, naive = (res[k]["median_per_s"] for k in ("inlet", "raw aiokafka", "naive"))
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": host,
        "resources": count,
        "ndjson_mb": round(size / 1e6, 1),
        "naive_resources": min(args.naive_events, count),
        "rounds": args.rounds,
        "file_lines": args.file_lines,
        "batch_size": "plugin default",
        "events": n_events,
        "mean_value_bytes": round(mean_value, 1),
        "mean_header_bytes": round(mean_headers, 1),
        "counts": {
            "records_in": counts.records_in,
            "events_out": counts.events_out,
            "dlq": dict(counts.dlq),
            "filtered": dict(counts.filtered),
        },
        "first_events_s_median": round(statistics.median(first), 3),
        "results": res,
        "ratios": {"inlet/raw": round(inlet / raw, 3), "inlet/naive": round(inlet / naive, 2)},
        "pure_cpu_us_per_resource": split,
        "monitors": monitors,
        "memory": mem,
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\ninlet FHIR bulk benchmark — {r['resources']} Observations ({r['ndjson_mb']} MB NDJSON, files of "
        f"{r['file_lines']} lines), naive over {r['naive_resources']}; median of {r['rounds']} rounds"
    )
    print(f"command: {r['command']}")
    print(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; Python {m['python']}, aiokafka {m['aiokafka']}, "
        f"pydantic {m['pydantic']}, fhir.resources {m['fhir.resources']}; {m['java']}; "
        f"load avg at start {m['loadavg_at_start']}"
    )
    print(
        f"events: value {r['mean_value_bytes']} B, headers {r['mean_header_bytes']} B (means); "
        f"last inlet round: {r['counts']}\n"
    )
    print(f"{'path':<40}{'res/s':>8}  {'rounds':<24}{'py CPU':>8}{'of it GC':>9}{'broker':>8}{'others':>8}")
    print(f"{'':<40}{'median':>8}  {'':<24}{'µs/res':>8}{'µs/res':>9}{'µs/res':>8}{'cores':>8}")

    def num(value: float | None, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    for name, s in r["results"].items():
        rounds = ", ".join(f"{x / 1000:.1f}k" for x in s["rounds_per_s"])
        print(
            f"{name:<40}{s['median_per_s']:>8,}  {rounds:<24}{num(s['py_cpu_us']):>8}{num(s['gc_us']):>9}"
            f"{num(s['broker_cpu_us']):>8}{num(s['others_cores'], '.2f'):>8}"
        )
    print(f"(inlet: kick-off to last commit; first events after {r['first_events_s_median']} s, median)\n")
    ratio = r["ratios"]
    print(
        f"inlet / raw aiokafka   {ratio['inlet/raw']:>7.1%}   target >= {TARGET_RAW:.0%}   "
        f"{'MET' if ratio['inlet/raw'] >= TARGET_RAW else 'MISSED'}"
    )
    print(
        f"inlet / naive          {ratio['inlet/naive']:>7.2f}x  target >= {TARGET_NAIVE:.0f}x    "
        f"{'MET' if ratio['inlet/naive'] >= TARGET_NAIVE else 'MISSED'}"
    )
    split = r["pure_cpu_us_per_resource"]
    print(
        "pure CPU µs per resource (no HTTP, no Kafka; two events each): "
        + ", ".join(f"{name} {split[name]}" for name in STAGES)
    )
    mon = r["monitors"]
    if mon:
        print(
            f"\ndata-quality monitors: {mon['pairs']} pairs of inlet passes into Kafka, on and off alternating "
            f"(learnt state {mon['state_bytes']:,} bytes; {mon['events_per_unit']:g} events per resource, "
            f"monitors observe one of them)"
        )
        print("\n".join(overhead_lines(mon, "resource")))
        print(passes_line(mon["passes"], "resources_per_s", "resources/s"))
        print("\n" + mon["observe_profile"])
    mem = r["memory"]
    if mem:
        print(
            f"peak RSS streaming {mem['ndjson_mb']} MB ({mem['lines']} lines) into Kafka: {mem['peak_rss_mb']} MB "
            f"(VmHWM; at start {mem['rss_start_mb']} MB, max sampled {max(mem['rss_samples_mb'], default=0)} MB; "
            f"{mem['records_in']} read in {mem['wall_s']} s; wait4 ru_maxrss {mem['ru_maxrss_mb']} MB incl. the "
            f"parent's image at spawn)\n   "
            f"target < {TARGET_RSS_MB:.0f} MB   {'MET' if mem['peak_rss_mb'] < TARGET_RSS_MB else 'MISSED'}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="Observations in the export")
    parser.add_argument("--naive-events", type=int, default=DEFAULT_NAIVE, help="lines the naive path parses")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument(
        "--memory-mb", type=float, default=DEFAULT_MEMORY_MB, help="NDJSON size for the peak-memory child (0: skip)"
    )
    parser.add_argument("--file-lines", type=int, default=10_000, help="lines per exported file")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("INLET_KAFKA_BOOTSTRAP"),
        help="an existing broker (default: $INLET_KAFKA_BOOTSTRAP, else start one here)",
    )
    parser.add_argument("--json", action="store_true", help="only the JSON document, indented")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-inlet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--topic-template", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument(
        "--monitor-pairs",
        type=int,
        default=DEFAULT_MONITOR_PAIRS,
        help="pairs of inlet passes with data-quality monitors on and off (default 3; 0 skips them)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.file_lines)
        return 0
    if args.child_inlet:
        child_inlet(args)
        return 0
    if not (
        1 <= args.events <= 1_000_000
        and 1 <= args.naive_events <= 200_000
        and 1 <= args.rounds <= 10
        and 0 <= args.memory_mb <= 1000
        and args.file_lines >= 1
        and 0 <= args.monitor_pairs <= 10
    ):
        parser.error(
            "--events 1..1000000, --naive-events 1..200000, --rounds 1..10, --memory-mb 0..1000, --monitor-pairs 0..10"
        )
    quiet_logs()
    host = {**machine(), "fhir.resources": _version("fhir.resources")}
    with tempfile.TemporaryDirectory(prefix="inlet-bench-bulk-") as tmp, contextlib.ExitStack() as stack:
        bootstrap, pid = kafka_broker(stack, args.bootstrap)
        tune_gc()  # the collector settings of `inlet run`
        results = asyncio.run(bench(args, bootstrap, pid, Path(tmp), host))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
        print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
