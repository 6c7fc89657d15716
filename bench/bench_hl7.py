"""HL7 v2 over MLLP into a real Kafka: messages/s to Kafka-acknowledged events, the raw producer ceiling, ACK latency.

    .venv/bin/python bench/bench_hl7.py [--messages N] [--rounds R] [--procs P] [--senders S]
                                        [--latency-seconds T] [--kafka HOST:PORT] [--json]

What one run measures, against one broker (started here unless ``--kafka`` or ``INLET_KAFKA_BOOTSTRAP`` names
one), everything on loopback:

1. **inlet**: N HL7 v2 messages — the ADT + ORU mix of ``connectors.hl7v2.synth.hospital_feed`` (one feed per
   generated hospital, so every MSH-4|MSH-10 is distinct; the SIU and the non-numeric result each feed carries
   on purpose are left out) — are sent over MLLP by P separate ``tools.mllp_send`` processes with S connections
   each, one message in flight per connection as MLLP wants, to the real listener of an ``Hl7v2Connector``
   wired as the supervisor wires it: ``Pipeline`` → ``KafkaSink`` with the project's default ``KafkaSettings``
   (acks=all, idempotent, linger 5 ms, 256 KB batches) → ``CheckpointStore``; every ACK is written only after
   Kafka acknowledged the message's events. The clock runs from the first message the listener received to
   the last ACK handed to its connection (sender process start-up is outside it). Each round uses fresh topics;
   the headline is the best round. Every sender must get ``AA`` for every message, otherwise the run fails.
2. **raw aiokafka**: the very events the pipeline produced for those messages (pre-built with the same
   connector and ``Enveloper``), sent by the producer ``KafkaSink`` builds, one ``send()`` each as fast as it
   takes them, then every ack: the same-producer ceiling in events/s, measured in the same run. The ratio
   inlet / raw is events/s over events/s.
3. **latency**: the senders paced together at about half the best inlet rate for T seconds (at most
   ``--latency-max`` messages); each sender process measures, per message, from writing the frame to reading
   its ACK: p50 / p99 / max.

It prints the machine (cores, CPU model, load), the command, and the results; ``--json`` prints them as JSON
on stdout. Every load is bounded in time (``LOAD_TIMEOUT``) and count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench.bench_pipeline import (
    Round,
    _machine_cpu_s,
    _proc_cpu_s,
    create_topics,
    harness_frozen,
    kafka_broker,
    log,
    machine,
    measure,
    send_raw,
    sink_producer,
)
from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
from inlet.connectors.hl7v2.synth import hospital_feed
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation_v3 import ObservationV3
from inlet.contracts.clinical_patient import PatientV1
from inlet.contracts.clinical_patient_merge import PatientMergeV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper, Event
from inlet.core.metrics import Stats
from inlet.core.mllp import MllpMessage
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.types import Position

ROOT = Path(__file__).resolve().parents[1]
ZONE = "Europe/Berlin"
LOAD_TIMEOUT = 180.0  # seconds: no single measured load may run longer


def messages(count: int, skip: int = 0) -> list[bytes]:
    """``count`` ADT / ORU messages of generated hospitals (after the first ``skip``), in their feeds' order.

    Only messages the family maps (``AA``): each feed's SIU^S12 and its non-numeric NM result are left out.
    """
    check = Hl7v2Connector(IntegrationContext("bench", "hl7", zone=ZONE), Hl7v2Settings())
    check._outcome = {}
    out: list[bytes] = []
    hospital = 0
    while len(out) < skip + count:
        hospital += 1
        for m in hospital_feed(8, seed=hospital, facility=f"HOSP {hospital:04d}", id_prefix=f"H{hospital}-"):
            try:
                check.map(check.decode(MllpMessage(m, 1, "bench", datetime.now(UTC))))
            except Exception:  # the feed's deliberate AR / AE messages
                continue
            out.append(m)
    return out[skip : skip + count]


def prebuilt(msgs: Sequence[bytes], env: Enveloper) -> tuple[list[Event], dict[str, int]]:
    """The events the pipeline makes of ``msgs`` (same connector, same enveloper), and the outcome per ACK code."""
    connector = Hl7v2Connector(IntegrationContext("bench", "hl7", zone=ZONE), Hl7v2Settings())
    connector._outcome = {}
    raws = [MllpMessage(m, i, "bench", datetime.now(UTC)) for i, m in enumerate(msgs, 1)]
    events, _ = process_batch(connector, env, Batch(raws, {}))
    codes: dict[str, int] = {}
    for code, *_ in connector._outcome.values():
        codes[code] = codes.get(code, 0) + 1
    return events, codes


def enveloper(label: str) -> Enveloper:
    base = f"bench-hl7-{label}"
    return Enveloper(
        "bench",
        "hl7",
        topic_template=base + ".{name}.v{major}",
        dlq_topic_template=base + ".dlq",
        drift_topic_template=base + ".drift",
    )


def topics(env: Enveloper) -> list[str]:
    """Every topic the integration writes to (observations go to v3, and to v2 and v1 while they are published)."""
    made = {e.topic for e in prebuilt(messages(300), env)[0]}
    return sorted(
        made | {env.topic_for(c) for c in (PatientV1, EncounterV1, ObservationV3, PatientMergeV1)} | {env.dlq_topic}
    )


def senders(
    port: int, msgs: Sequence[bytes], procs: int, per_proc: int, rate: float = 0.0, timeout: float = LOAD_TIMEOUT
) -> list[subprocess.Popen[bytes]]:
    """``procs`` sender processes, each with ``per_proc`` connections and its share of ``msgs``."""
    out = []
    for i in range(procs):
        share = msgs[i::procs]
        cmd = [
            sys.executable,
            "-m",
            "tools.mllp_send",
            "--port",
            str(port),
            "--senders",
            str(per_proc),
            "--ack-timeout",
            "30",
            "--timeout",
            str(timeout),
        ]
        if rate:
            cmd += ["--rate", f"{rate / procs:.3f}"]
        p = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdin is not None
        p.stdin.write(b"\n\n".join(share))
        p.stdin.close()
        out.append(p)
    return out


def collect(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for p in procs:
        try:
            out = p.stdout.read() if p.stdout else b""  # ends when the sender exits (its own --timeout bounds it)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        if p.returncode != 0:
            raise RuntimeError(f"sender exited {p.returncode}: {p.stderr.read().decode() if p.stderr else ''}")
        results += [json.loads(line) for line in out.splitlines()]
    return results


class Integration:
    """The HL7 integration as the supervisor wires it, with the ACKs it hands out clocked."""

    def __init__(self, bootstrap: str, label: str, expected: int) -> None:
        self.bootstrap, self.expected = bootstrap, expected
        self.env = enveloper(label)
        self.connector = Hl7v2Connector(
            IntegrationContext("bench", "hl7", zone=ZONE),
            Hl7v2Settings.model_validate({"mllp": {"port": 0, "max_connections": 1024}}),
        )
        self.first: float | None = None
        """perf_counter() of the first message's arrival at the listener."""
        self.last = 0.0
        self.acked = 0
        self.done = asyncio.Event()
        acknowledge, read = self.connector.acknowledge, self.connector.read

        async def clocked_acknowledge(position: Position) -> None:
            await acknowledge(position)
            self.acked += len(position.get("serials", ()))
            self.last = time.perf_counter()
            if self.acked >= self.expected:
                self.done.set()

        async def clocked_read(position: Position | None) -> AsyncIterator[Batch]:
            async for batch in read(position):
                if self.first is None:
                    arrived = min(m.received_at.timestamp() for m in batch.records)
                    self.first = time.perf_counter() - (time.time() - arrived)
                yield batch

        self.connector.acknowledge = clocked_acknowledge  # type: ignore[method-assign]
        self.connector.read = clocked_read  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def running(self, tmp: Path) -> AsyncIterator[tuple[int, Stats]]:
        await create_topics(self.bootstrap, topics(self.env))
        sink = KafkaSink(KafkaSettings(bootstrap=self.bootstrap))  # the project's defaults
        await sink.start()
        for topic in topics(self.env):  # metadata before the clock starts
            await sink._producer.partitions_for(topic)
        store = CheckpointStore(tmp / f"cp-{uuid.uuid4().hex[:8]}.sqlite")
        stats = Stats("bench", "hl7")
        stop = asyncio.Event()
        await self.connector.start()
        run = asyncio.create_task(Pipeline(self.connector, self.env, sink, store, stats).run(None, stop))
        try:
            yield self.connector.source.port, stats  # type: ignore[attr-defined]
        finally:
            stop.set()
            await self.connector.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run, 30)
            await sink.stop()
            store.close()


async def inlet_round(
    bootstrap: str, msgs: Sequence[bytes], args: argparse.Namespace, broker_pid: int | None, tmp: Path
) -> dict[str, Any]:
    integ = Integration(bootstrap, uuid.uuid4().hex[:10], len(msgs))
    async with integ.running(tmp) as (port, stats):
        with harness_frozen() as gc_clock:
            m0, b0, c0 = _machine_cpu_s(), _proc_cpu_s(broker_pid), time.process_time()
            procs = senders(port, msgs, args.procs, args.senders)
            try:
                await asyncio.wait_for(integ.done.wait(), LOAD_TIMEOUT)
            finally:
                results = await asyncio.to_thread(collect, procs, 60)
            c1, b1, m1 = time.process_time(), _proc_cpu_s(broker_pid), _machine_cpu_s()
        events = stats.totals.events_out + sum(stats.totals.dlq.values())
    codes: dict[str, int] = {}
    for r in results:
        codes[r["ack"]] = codes.get(r["ack"], 0) + 1
    if codes != {"AA": len(msgs)}:
        raise RuntimeError(f"expected AA for all {len(msgs)} messages, the senders got {codes}")
    assert integ.first is not None
    wall = integ.last - integ.first
    broker = (b1 - b0) if b0 is not None and b1 is not None else None
    return {
        "messages": len(msgs),
        "events": events,
        "seconds": wall,
        "msg_per_s": len(msgs) / wall,
        "events_per_s": events / wall,
        "cpu_us_per_msg": (c1 - c0) / len(msgs) * 1e6,
        "broker_cpu_us_per_msg": None if broker is None else broker / len(msgs) * 1e6,
        "others_cores": max(0.0, (m1 - m0) - (c1 - c0) - (broker or 0.0)) / wall,
        "gc_s": gc_clock.seconds,
    }


async def raw_round(bootstrap: str, events: Sequence[Event], broker_pid: int | None) -> Round:
    topic = f"bench-hl7-raw-{uuid.uuid4().hex[:10]}"
    await create_topics(bootstrap, [topic])
    sink, producer = await sink_producer(KafkaSettings(bootstrap=bootstrap))
    out: list[Round] = []
    try:
        await producer.partitions_for(topic)
        with measure(len(events), broker_pid, out):
            await asyncio.wait_for(send_raw(producer, topic, events), LOAD_TIMEOUT)
    finally:
        await sink.stop()
    return out[0]


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    s = sorted(samples)
    q = statistics.quantiles(s, n=100, method="inclusive")
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": s[-1], "samples": len(s)}


async def latency_phase(
    bootstrap: str, msgs: Sequence[bytes], rate: float, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    integ = Integration(bootstrap, uuid.uuid4().hex[:10], len(msgs))
    async with integ.running(tmp) as (port, _):
        t0 = time.perf_counter()
        procs = senders(port, msgs, args.procs, args.senders, rate=rate)
        results = await asyncio.to_thread(collect, procs, LOAD_TIMEOUT + 60)
        wall = time.perf_counter() - t0
    if any(r["ack"] != "AA" for r in results) or len(results) != len(msgs):
        raise RuntimeError("the latency phase lost or refused messages")
    return {
        "target_msg_per_s": rate,
        "achieved_msg_per_s": len(msgs) / wall,
        **percentiles([float(r["latency_ms"]) for r in results]),
    }


async def bench(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, tmp: Path) -> dict[str, Any]:
    msgs = messages(args.messages)
    events, codes = prebuilt(msgs, enveloper("prebuilt"))
    oru = sum(b"|ORU^" in m.split(b"\r", 1)[0] for m in msgs)
    log(f"{len(msgs)} messages ({oru} ORU, {len(msgs) - oru} ADT) -> {len(events)} events (offline: {codes})")
    log("warm-up")
    await inlet_round(bootstrap, messages(500, skip=args.messages), args, broker_pid, tmp)
    await raw_round(bootstrap, events[:2000], broker_pid)
    inlet, raw = [], []
    for r in range(args.rounds):  # alternate, so both see the same neighbours
        inlet.append(await inlet_round(bootstrap, msgs, args, broker_pid, tmp))
        log(f"round {r + 1}: inlet {inlet[-1]['msg_per_s']:.0f} msg/s ({inlet[-1]['events_per_s']:.0f} events/s)")
        raw.append(await raw_round(bootstrap, events, broker_pid))
        log(f"round {r + 1}: raw aiokafka {raw[-1].rate:.0f} events/s")
    best = max(inlet, key=lambda x: x["msg_per_s"])
    best_raw = max(raw, key=lambda x: x.rate)
    rate = best["msg_per_s"] / 2
    count = min(args.latency_max, max(100, int(rate * args.latency_seconds)))
    log(f"latency: {count} messages paced at {rate:.0f} msg/s")
    lat = await latency_phase(bootstrap, messages(count, skip=args.messages + 500), rate, args, tmp)
    return {
        "inlet_rounds": inlet,
        "inlet_best": best,
        "raw_rounds_events_per_s": [x.rate for x in raw],
        "raw_best_events_per_s": best_raw.rate,
        "raw_cpu_us_per_event": best_raw.cpu_s / best_raw.events * 1e6,
        "ratio_events_per_s": best["events_per_s"] / best_raw.rate,
        "latency": lat,
        "events_per_message": len(events) / len(msgs),
    }


def print_report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; load average at start {m['loadavg_at_start']}; "
        f"Python {m['python']}, aiokafka {m['aiokafka']}, {m['java']}"
    )
    print(f"command: {r['command']}")
    print(f"broker: {r['broker']}; senders: {r['procs']} processes x {r['senders']} MLLP connections")
    b = r["inlet_best"]
    print(f"\n{'row':34}{'msg/s':>10}{'events/s':>11}{'CPU µs/msg':>12}{'senders+others (cores)':>24}")
    print(
        f"{'inlet MLLP -> Kafka (best)':34}{b['msg_per_s']:>10.0f}{b['events_per_s']:>11.0f}"
        f"{b['cpu_us_per_msg']:>12.0f}{b['others_cores']:>24.2f}"
    )
    if b["broker_cpu_us_per_msg"] is not None:
        print(f"{'  (the broker JVM, per message)':34}{'':>10}{'':>11}{b['broker_cpu_us_per_msg']:>12.0f}")
    print(
        f"{'raw aiokafka, same events (best)':34}{'':>10}{r['raw_best_events_per_s']:>11.0f}"
        f"{r['raw_cpu_us_per_event']:>12.0f}"
    )
    print(
        f"\nall rounds, inlet msg/s: {[round(x['msg_per_s']) for x in r['inlet_rounds']]}; "
        f"raw events/s: {[round(x) for x in r['raw_rounds_events_per_s']]}"
    )
    print(f"events per message: {r['events_per_message']:.2f}; inlet / raw (events/s): {r['ratio_events_per_s']:.1%}")
    lat = r["latency"]
    print(
        f"ACK latency at {lat['target_msg_per_s']:.0f} msg/s target ({lat['achieved_msg_per_s']:.0f} achieved, "
        f"{lat['samples']} messages): p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
        f"max {lat['max_ms']:.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--procs", type=int, default=2, help="sender processes")
    p.add_argument("--senders", type=int, default=25, help="MLLP connections per sender process")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--latency-max", type=int, default=20_000)
    p.add_argument("--kafka", default=os.environ.get("INLET_KAFKA_BOOTSTRAP"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    host = machine()
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        bootstrap, broker_pid = kafka_broker(stack, args.kafka)
        result = asyncio.run(bench(args, bootstrap, broker_pid, Path(tmp)))
    result.update(
        machine=host,
        command=" ".join([".venv/bin/python", "bench/bench_hl7.py", *sys.argv[1:]]),
        broker="given" if args.kafka else "started here",
        procs=args.procs,
        senders=args.senders,
    )
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
