"""ERP invoices from paged OData v4 (Business Central) into a real Kafka, next to the raw producer ceiling.

    .venv/bin/python bench/bench_erp.py [--invoices N] [--page-sizes 100,500] [--rounds R]
                                        [--bootstrap HOST:PORT] [--json]

What one run measures, against one broker (started here with the default JIT unless ``--bootstrap`` or
``INLET_KAFKA_BOOTSTRAP`` names one):

1. **inlet**: N generated Business Central ``salesInvoices`` with their ``salesInvoiceLines``
   (``connectors.erp_rest.synth``, seeded: 200 customers, 1-4 item lines and now and then a comment line per
   invoice, exact amounts as JSON numbers, ``lastModifiedDateTime`` in runs of equal instants) are served once
   by the real OData v4 test server (``tools.servers.odata``, keyset paging with ``Prefer: odata.maxpagesize``
   and ``$expand``) and recorded (``core.recording.RecordingTransport``), once per page size. Each round
   replays those pages (``ReplayTransport``: no HTTP is measured) through the ``erp_rest.odata`` connector
   (``entity: salesInvoices``, delta from the beginning) → ``core.pipeline.Pipeline`` → ``KafkaSink`` with the
   project's default ``KafkaSettings`` (acks=all, idempotent, linger 5 ms, 256 KB batches) →
   ``CheckpointStore``: wall time from the first read to the last committed checkpoint (position: watermark
   and the ``seen`` keys of the overlap window). Every invoice must become exactly one ``erp.invoice`` event
   (no DLQ record, nothing filtered), otherwise the run fails.
2. **raw aiokafka**: the very events the pipeline makes of those pages (pre-built with the same connector
   and ``Enveloper``: same values, keys, headers), sent by the ``AIOKafkaProducer`` that ``KafkaSink`` builds
   (same settings), one ``send()`` each as fast as it takes them, then every ack: the same-producer ceiling,
   measured in the same run. The ratio is inlet's events/s over raw events/s (one event per invoice here).
3. **pure CPU**: ``process_batch`` over the replayed pages without Kafka, split into decode/filter/identity/
   map+validate and envelope (of which the JSON value), and the parse of the pages (``core.exact_json``,
   which keeps every amount exact) on its own: where an invoice's CPU goes.

Each round uses fresh, pre-created one-partition topics and runs the loads in a rotating order; a short
warm-up (other generated invoices, then pre-built events) comes first; a row's headline is its best round.
Every measured load runs with the harness's own data frozen out of the garbage collector (``gc.freeze``),
as in ``bench_pipeline.py``, whose helpers this script uses. CPU figures are per invoice: this process (all
threads), the broker JVM (when started here), and the cores other processes used meanwhile. Every load is
bounded in time (``LOAD_TIMEOUT``); the defaults take a little over a minute here. Progress goes to stderr; the
table (or with ``--json`` a JSON document) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pipeline import (
    Round,
    Row,
    create_topics,
    harness_frozen,
    kafka_broker,
    log,
    machine,
    origin_rewriter,
    pure_cost,
    quiet_logs,
    run_pipeline,
    run_raw,
)
from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings
from inlet.connectors.erp_rest.synth import bc_customers, bc_sales_invoices
from inlet.core import exact_json
from inlet.core.config import KafkaSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper, Event
from inlet.core.http import HttpSettings
from inlet.core.pipeline import process_batch
from inlet.core.recording import RecordingTransport, ReplayTransport
from inlet.core.supervisor import tune_gc
from tools.servers.odata import OdataTestServer

DEFAULT_INVOICES = 20_000
DEFAULT_PAGE_SIZES = (100, 500)
DEFAULT_ROUNDS = 3
CUSTOMERS = 200
SEED = 1  # customers; the invoices take SEED + 1, the warm-up's SEED + 10
WARMUP_INVOICES = 2_000
COMPANY = "c0ffee00-0000-4000-8000-000000000001"
ZONE = "Europe/Berlin"
LOCAL_CURRENCY = "EUR"
# Replay ignores the host but matches the path: the test server serves at its root, so the replay does too.
REPLAY_BASE_URL = "http://erp.invalid"
TARGET = 0.50  # inlet / raw same-producer ceiling


# --- the ERP integration ---------------------------------------------------------------------------


def invoices(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``count`` generated BC sales invoices with lines (seeded)."""
    return bc_sales_invoices(count, bc_customers(CUSTOMERS, seed=seed), seed=seed + 1)


def connector_for(transport: Any, page_size: int, base_url: str = REPLAY_BASE_URL) -> ErpODataConnector:
    """The ``erp_rest.odata`` connector for ``salesInvoices`` as a customer configures it, on ``transport``."""
    ctx = replace(IntegrationContext("bench", "invoices", zone=ZONE), http_transport=transport)
    settings = ErpODataSettings(
        http=HttpSettings(base_url=base_url),
        entity="salesInvoices",
        company_id=COMPANY,
        page_size=page_size,
        local_currency=LOCAL_CURRENCY,
    )
    return ErpODataConnector(ctx, settings)


async def record_pages(rows: list[dict[str, Any]], page_size: int, path: Path) -> tuple[int, int]:
    """Serve ``rows`` from the OData v4 test server once, read them all, record every page: (records, pages)."""
    records = pages = 0
    server = OdataTestServer(
        {"salesInvoices": rows},
        dialect="odata4",
        company=COMPANY,
        page_size=page_size,
        expand={"salesInvoices": "salesInvoiceLines"},
    )
    with server:
        transport = RecordingTransport(path, redact=origin_rewriter(server.url, REPLAY_BASE_URL))
        async with connector_for(transport, page_size, server.url) as connector:
            async for batch in connector.read(None):
                records += len(batch.records)
                pages += 1
    return records, pages


async def replay_batches(recording: Path, page_size: int) -> tuple[ErpODataConnector, list[Batch]]:
    """Every batch of a recording, read through a started connector (for the pre-built events, the pure part)."""
    connector = connector_for(ReplayTransport(recording), page_size)
    await connector.start()
    batches = [b async for b in connector.read(None)]
    return connector, batches


def page_parse_us(recording: Path, invoices: int, passes: int = 3) -> float:
    """CPU µs per invoice of parsing the recorded page bodies with ``core.exact_json.loads`` (best pass)."""
    bodies = [
        exact_json.dumps(exact_json.loads(line)["response"]["json"]) for line in recording.read_bytes().splitlines()
    ]
    best = float("inf")
    with harness_frozen():
        for _ in range(passes):
            t0 = time.thread_time()
            for body in bodies:
                exact_json.loads(body)
            best = min(best, time.thread_time() - t0)
    return best / invoices * 1e6


def template(prefix: str) -> str:
    return prefix + ".{name}.v{major}"


# --- the run ---------------------------------------------------------------------------------------


async def bench(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, tmp: Path, host: dict[str, Any]
) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap=bootstrap)  # the project defaults: acks=all, idempotent, 5 ms, 256 KB
    run_id = uuid.uuid4().hex[:8]
    sizes: list[int] = args.page_sizes

    t0 = time.perf_counter()
    rows = invoices(args.invoices)
    lines = sum(len(r["salesInvoiceLines"]) for r in rows)
    log(f"generated {len(rows)} invoices ({lines / len(rows):.2f} lines each) in {time.perf_counter() - t0:.1f} s")
    recordings: dict[int, Path] = {}
    pages: dict[int, int] = {}
    for size in sizes:
        t0 = time.perf_counter()
        recordings[size] = tmp / f"pages-{size}" / "http.jsonl"
        read, pages[size] = await record_pages(rows, size, recordings[size])
        if read != len(rows):
            raise SystemExit(f"recording with pages of {size} read {read} of {len(rows)} invoices")
        log(
            f"recorded {pages[size]} pages of {size} ({recordings[size].stat().st_size / 1e6:.1f} MB) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
    warm_recording = tmp / "warm" / "http.jsonl"
    await record_pages(invoices(WARMUP_INVOICES, seed=SEED + 10), max(sizes), warm_recording)
    del rows

    # The events the pipeline makes of those pages, with the connector and enveloper run_pipeline uses.
    big = max(sizes)
    connector, batches = await replay_batches(recordings[big], big)
    ctx = connector.ctx
    env = Enveloper(ctx.customer, ctx.integration, topic_template=template(f"bench-{run_id}-prebuilt"))
    events: list[Event] = []
    for b in batches:
        made, counts = process_batch(connector, env, b)
        if counts.dlq or counts.filtered:
            raise SystemExit(f"pre-building: dlq {dict(counts.dlq)}, filtered {dict(counts.filtered)}")
        events += made
    total = sum(len(b.records) for b in batches)
    per_invoice = len(events) / total
    mean_value = sum(len(e.value) for e in events) / len(events)
    mean_headers = sum(sum(len(k) + len(v) for k, v in e.headers) for e in events) / len(events)
    mean_key = sum(len(e.key or b"") for e in events) / len(events)
    log(f"{total} invoices -> {len(events)} events, value {mean_value:.0f} B, key {mean_key:.0f} B")

    log("pure part (process_batch without Kafka, page parsing)")
    pure = pure_cost(connector, env, batches)
    parse_us = page_parse_us(recordings[big], total)
    await connector.stop()
    del batches

    contract_topics = sorted({e.topic.removeprefix(f"bench-{run_id}-prebuilt.") for e in events})
    prefixes = {
        (size, i): f"bench-{run_id}-inlet{size}-{i}" for size in sizes for i in range(args.rounds)
    }  # one per pipeline pass
    raw_topics = [f"bench-{run_id}-raw-{i}" for i in range(args.rounds)]
    warm_prefix, warm_raw = f"bench-{run_id}-warm", f"bench-{run_id}-warm-raw"
    await create_topics(
        bootstrap,
        [
            *raw_topics,
            warm_raw,
            *(f"{p}.{t}" for p in [*prefixes.values(), warm_prefix] for t in contract_topics),
        ],
    )

    log(f"warm-up: a pipeline pass over {WARMUP_INVOICES} other invoices, then {min(2000, len(events))} raw sends")
    warm: list[Round] = []
    await run_pipeline(
        settings,
        warm_recording,
        template(warm_prefix),
        tmp,
        broker_pid,
        warm,
        make_connector=partial(connector_for, page_size=big),
    )
    await run_raw(settings, warm_raw, events[:2000], broker_pid, warm)

    inlet = {size: Row(f"inlet, pages of {size}") for size in sizes}
    raw = Row("raw aiokafka")
    loads: list[int | None] = [*sizes, None]  # None: the raw load
    for i in range(args.rounds):
        for load in loads[i % len(loads) :] + loads[: i % len(loads)]:  # rotate: each load sees each slot
            if load is None:
                log(f"round {i + 1}/{args.rounds}: raw aiokafka")
                await run_raw(settings, raw_topics[i], events, broker_pid, raw.rounds)
                continue
            log(f"round {i + 1}/{args.rounds}: inlet, pages of {load}")
            counts = await run_pipeline(
                settings,
                recordings[load],
                template(prefixes[load, i]),
                tmp,
                broker_pid,
                inlet[load].rounds,
                make_connector=partial(connector_for, page_size=load),
            )
            if counts.records_in != total or counts.events_out != len(events) or counts.dlq or counts.filtered:
                raise SystemExit(
                    f"pages of {load}: {counts.records_in} invoices in, {counts.events_out} events out "
                    f"(expected {total} and {len(events)}), dlq {dict(counts.dlq)}, filtered {dict(counts.filtered)}"
                )

    def summary(row: Row) -> dict[str, Any]:
        s = row.summary()
        b = row.best()
        invoices_done = b.events / per_invoice
        return {
            "invoices_per_s": round(invoices_done / b.wall_s),
            "events_per_s": s["events_per_s"],
            "rounds_invoices_per_s": [round(r.events / per_invoice / r.wall_s) for r in row.rounds],
            "wall_s": s["wall_s"],
            "cpu_us_per_invoice": round(b.cpu_s / invoices_done * 1e6, 1),
            "gc_us_per_invoice": round(b.gc_s / invoices_done * 1e6, 1),
            "broker_cpu_us_per_invoice": None
            if b.broker_cpu_s is None
            else round(b.broker_cpu_s / invoices_done * 1e6, 1),
            "others_cpu_cores": s["others_cpu_cores"],
        }

    results = {row.name: summary(row) for row in [*inlet.values(), raw]}
    raw_best = raw.best().rate
    return {
        "machine": host,
        "invoices": total,
        "lines_per_invoice": round(lines / total, 2),
        "events": len(events),
        "events_per_invoice": round(per_invoice, 3),
        "pages": {str(size): pages[size] for size in sizes},
        "rounds": args.rounds,
        "mean_value_bytes": round(mean_value, 1),
        "mean_key_bytes": round(mean_key, 1),
        "mean_header_bytes": round(mean_headers, 1),
        "headers_per_event": round(sum(len(e.headers) for e in events) / len(events), 2),
        "producer": settings.model_dump(exclude={"bootstrap"}),
        "results": results,
        "ratios": {f"inlet pages of {size} / raw": round(inlet[size].best().rate / raw_best, 3) for size in sizes},
        "target": TARGET,
        "pure_cpu_us_per_invoice": {
            **{k: round(v * per_invoice, 1) for k, v in asdict(pure).items()},
            "page_parse_us": round(parse_us, 1),
        },
    }


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    pages = ", ".join(f"{n} pages of {size}" for size, n in r["pages"].items())
    print(
        f"\ninlet ERP benchmark — {r['invoices']} Business Central sales invoices ({r['lines_per_invoice']} lines "
        f"each; {pages}), best of {r['rounds']} rounds"
    )
    print(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; Python {m['python']}, aiokafka {m['aiokafka']}, "
        f"pydantic {m['pydantic']}; {m['java']}"
    )
    print(f"load average at start: {m['loadavg_at_start']}")
    print(f"command: {r['command']}")
    print(
        f"events: {r['events_per_invoice']} per invoice; value {r['mean_value_bytes']} B, key {r['mean_key_bytes']} B, "
        f"{r['headers_per_event']} headers {r['mean_header_bytes']} B (means)"
    )
    p = r["producer"]
    print(f"producer: acks=all idempotent linger {p['linger_ms']} ms max_batch_size {p['max_batch_size']} B\n")
    print(
        f"{'row':<22}{'invoices/s':>11}{'events/s':>10}  {'rounds (invoices/s)':<22}"
        f"{'CPU µs':>8}{'of it GC':>9}{'broker':>8}{'others':>8}"
    )
    print(f"{'':<22}{'(best)':>11}{'(best)':>10}  {'':<22}{'/invoice':>8}{'µs/inv':>9}{'µs/inv':>8}{'cores':>8}")

    def num(value: float | None, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    for name, s in r["results"].items():
        rounds = ", ".join(f"{x / 1000:.1f}k" for x in s["rounds_invoices_per_s"])
        print(
            f"{name:<22}{s['invoices_per_s']:>11,}{s['events_per_s']:>10,}  {rounds:<22}"
            f"{s['cpu_us_per_invoice']:>8.1f}{s['gc_us_per_invoice']:>9.1f}"
            f"{num(s['broker_cpu_us_per_invoice']):>8}{num(s['others_cpu_cores'], '.2f'):>8}"
        )
    print(
        "(CPU: this process, all threads; broker: the JVM started here; others: cores busy with other processes\n"
        " during the best round. inlet: recorded OData pages replayed -> erp_rest.odata -> Pipeline -> KafkaSink ->"
        " checkpoint;\n raw aiokafka: the same pre-built events on KafkaSink's own producer, one send() each)\n"
    )
    for k, v in r["ratios"].items():
        print(f"{k:<30}{v:>6.1%}   (target >= {r['target']:.0%})")
    pc = r["pure_cpu_us_per_invoice"]
    print(
        f"\npure CPU per invoice (no Kafka, this thread): page parse (exact_json) {pc['page_parse_us']:.1f} µs; "
        f"process_batch {pc['process_batch_us']:.1f} µs = decode/filter/identity/map+validate "
        f"{pc['read_side_us']:.1f} µs + envelope {pc['envelope_us']:.1f} µs (of which JSON value "
        f"{pc['value_json_us']:.1f} µs)"
    )


def page_sizes(text: str) -> list[int]:
    sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    if not sizes or not all(1 <= s <= 20_000 for s in sizes):
        raise argparse.ArgumentTypeError("page sizes are 1..20000, comma-separated")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--invoices", type=int, default=DEFAULT_INVOICES, help="invoices to generate (20000)")
    parser.add_argument(
        "--page-sizes",
        type=page_sizes,
        default=list(DEFAULT_PAGE_SIZES),
        help="OData page sizes (Prefer: odata.maxpagesize), one inlet row each (default 100,500)",
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="measured rounds per row (3)")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("INLET_KAFKA_BOOTSTRAP"),
        help="an existing broker (default: $INLET_KAFKA_BOOTSTRAP, else start one here)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    if not 1 <= args.invoices <= 200_000 or not 1 <= args.rounds <= 10:
        parser.error("--invoices must be 1..200000 and --rounds 1..10")
    quiet_logs()
    host = machine()  # the load average before anything here starts
    with tempfile.TemporaryDirectory(prefix="inlet-bench-erp-") as tmp, contextlib.ExitStack() as stack:
        bootstrap, pid = kafka_broker(stack, args.bootstrap)
        tune_gc()  # the collector settings of `inlet run`
        results = asyncio.run(bench(args, bootstrap, pid, Path(tmp), host))
    results["command"] = " ".join([".venv/bin/python", "bench/bench_erp.py", *sys.argv[1:]])
    results["broker"] = "given" if args.bootstrap else "started here"
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
