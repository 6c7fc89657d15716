"""The outbox relay: every outbox row reaches Kafka unchanged and in per-key order, kill -9 loses nothing,
pruning deletes only rows shipped longer ago than the retention, and ``relay: {enabled: true}`` ships as the
integrations write. A row Kafka refuses for good becomes a DLQ record and the rest ship; Kafka refusing inlet
(a wrong password) stops the relay at once; missing topics are checked like the supervisor's start-up does."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import ValidationError

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import KafkaSettings, RelaySettings, SupervisorConfig, load_config
from inlet.core.envelope import Event
from inlet.core.errors import SinkRefused
from inlet.core.pipeline import DLQ_TRUNCATED_BYTES
from inlet.core.relay import Relay, RelayFailed, RelayRefused, lock_path, read_watermark
from inlet.core.sinks.outbox import OutboxSink
from inlet.core.supervisor import Supervisor
from tests.helpers import write_config
from tools.servers.fhir import FhirTestServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "config"
DAY_MS = 24 * 3600 * 1000

_OLD_SCHEMA = """
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic    TEXT NOT NULL,
    key      BLOB,
    value    BLOB NOT NULL,
    headers  TEXT NOT NULL
);
CREATE INDEX events_topic ON events(topic, seq);
"""
"""The outbox as it was before the relay: an existing site's file must be migrated by opening it."""


# --- helpers ---------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INLET_KAFKA_BOOTSTRAP", "INLET_STATE_DIR")}
    return {**env, "INLET_LOG_FORMAT": "json", **extra}


def _inlet(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inlet", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start_relay(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``inlet relay`` (following) on config ``root`` as its own process, for kill -9."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "inlet", "relay", "--config", str(root)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _rows(outbox: Path) -> list[tuple[int, str, str, bytes | None, bytes, dict[str, str]]]:
    """Every outbox row: seq, event id, topic, key, value, headers."""
    conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        got = conn.execute("SELECT seq, event_id, topic, key, value, headers FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(s, e, t, k, v, orjson.loads(h)) for s, e, t, k, v, h in got]


def _marks(outbox: Path) -> list[tuple[int, float]]:
    conn = sqlite3.connect(outbox)
    try:
        return conn.execute("SELECT upto, acked_at FROM relay_shipped ORDER BY upto").fetchall()
    finally:
        conn.close()


async def _read_all(bootstrap: str, topics: Iterable[str], timeout: float = 120.0) -> list[Any]:
    """Every record of every partition of ``topics``, up to the end offsets at the time of the call."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()  # inside the try: a start that fails half-way is closed too
        described = await admin.describe_topics(sorted(topics))
    finally:
        await admin.close()
    parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    assert {tp.topic for tp in parts} == set(topics), described
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    out: list[Any] = []
    try:
        await consumer.start()  # inside the try: a start that fails half-way is closed too
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        behind = [tp for tp in parts if ends[tp] > 0]
        while behind:
            assert loop.time() < deadline, "timed out reading the topics back"
            batch = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            out.extend(r for records in batch.values() for r in records)
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return out


def _event_id(record: Any) -> str:
    """The event a DLQ record stands for: its ``dlq_event_id`` header, else its own ``ce_id`` (Kafka headers)."""
    headers: dict[str, bytes] = dict(record.headers)
    return headers.get("dlq_event_id", headers["ce_id"]).decode()


def _same(record: Any, row: tuple[int, str, str, bytes | None, bytes, dict[str, str]]) -> bool:
    _, _, topic, key, value, headers = row
    return (
        record.topic == topic
        and record.key == key
        and record.value == value
        and list(record.headers) == [(k, v.encode()) for k, v in headers.items()]
    )


async def _fill(outbox: Path, events: list[Event]) -> None:
    sink = OutboxSink(outbox)
    await sink.start()
    try:
        for i in range(0, len(events), 500):
            await sink.send(events[i : i + 500])
    finally:
        await sink.stop()


def _events(
    prefix: str, n: int, *, start: int = 0, keys: int = 400, pad: int = 200, integration: tuple[str, str] | None = None
) -> list[Event]:
    """``n`` events over three topics (one with three partitions, a DLQ-like one), ``keys`` keys, some without;
    with ``integration`` (customer, integration) they carry its CloudEvents headers, as the pipeline's do."""
    out = []
    for i in range(start, start + n):
        topic = f"{prefix}multi" if i % 4 else (f"{prefix}single" if i % 8 else f"{prefix}dlq")
        key = None if i % 53 == 0 else f"patient-{i * 7919 % keys}".encode()
        eid = str(uuid.uuid4())
        value = orjson.dumps({"n": i, "pad": "x" * pad})
        who = (
            []
            if integration is None
            else [("ce_customer", integration[0].encode()), ("ce_integration", integration[1].encode())]
        )
        headers = [
            ("ce_specversion", b"1.0"),
            *who,
            ("ce_id", eid.encode()),
            ("ce_type", b"test.relay"),
            ("ce_subject", f"Thing/{i}".encode()),
            ("content-type", b"application/json"),
        ]
        out.append(Event(topic=topic, key=key, value=value, headers=headers, id=eid))
    return out


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()  # inside the try: a start that fails half-way is closed too
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def _relay_config(
    root: Path,
    *,
    kafka: str | dict[str, Any],
    topics: dict[str, Any] | None = None,
    dlq_topic_template: str | None = None,
    **relay: object,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    section = {"bootstrap": kafka} if isinstance(kafka, str) else kafka
    doc: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "kafka": {"request_timeout_ms": 5000, **section},
        "restart_backoff_initial_seconds": 0.2,
        "restart_backoff_max_seconds": 1.0,
        "relay": relay,
    }
    if topics is not None:
        doc["topics"] = topics
    if dlq_topic_template is not None:
        doc["dlq_topic_template"] = dlq_topic_template
    (root / "inlet.yaml").write_text(yaml.safe_dump(doc))
    return root / "state" / "outbox.sqlite"


# --- configuration ---------------------------------------------------------------------------------------


def test_relay_option_semantics() -> None:
    with pytest.raises(ValidationError, match=r"needs kafka\.bootstrap"):
        SupervisorConfig.model_validate({"relay": {"enabled": True}})
    with pytest.raises(ValidationError, match=r"needs the outbox sink"):
        SupervisorConfig.model_validate({"sink": "kafka", "kafka": {"bootstrap": "k:9092"}, "relay": {"enabled": True}})
    with_relay = SupervisorConfig.model_validate({"kafka": {"bootstrap": "k:9092"}, "relay": {"enabled": True}})
    assert with_relay.resolved_sink() == "outbox"  # the relay is the way to Kafka
    assert SupervisorConfig.model_validate({"kafka": {"bootstrap": "k:9092"}}).resolved_sink() == "kafka"
    assert SupervisorConfig().relay.retention_seconds == 7 * 86400


def test_one_relay_per_outbox_and_once_gives_up_when_kafka_is_away(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    outbox = _relay_config(tmp_path, kafka=dead)
    asyncio.run(_fill(outbox, _events("x.", 10)))
    with lock_path(outbox).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert busy.returncode == 1 and "another relay" in busy.stderr, busy.stderr[-2000:]
    away = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert away.returncode == 1, away.stderr[-2000:]
    assert "gave up after 3 failures" in away.stderr and "10 remaining" in away.stdout
    assert read_watermark(outbox) == 0


# --- against the real broker -----------------------------------------------------------------------------


@pytest.mark.kafka
async def test_the_bundled_examples_outbox_reaches_kafka_unchanged(tmp_path: Path, kafka_bootstrap: str) -> None:
    state = tmp_path / "state"
    made = _inlet("run", "--config", str(EXAMPLE), "--once", env=_env(INLET_STATE_DIR=str(state)))
    assert made.returncode == 0, made.stderr[-2000:]
    outbox = state / "outbox.sqlite"
    rows = _rows(outbox)
    topics = {r[2] for r in rows}
    assert len(rows) > 200 and any(".dlq." in t for t in topics), topics  # events and DLQ records
    started_ms = int(time.time() * 1000) - 1000

    shipped = _inlet(
        "relay",
        "--config",
        str(EXAMPLE),
        "--once",
        env=_env(INLET_STATE_DIR=str(state), INLET_KAFKA_BOOTSTRAP=kafka_bootstrap),
    )
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    assert f"shipped {len(rows)} event(s)" in shipped.stdout and "0 remaining" in shipped.stdout, shipped.stdout
    assert read_watermark(outbox) == rows[-1][0]
    assert _rows(outbox) == rows, "the default retention (a week) keeps shipped rows"

    # These topics are the example's own, shared with any other run of it on this broker: look at this relay's
    # records only (produced after it started, with this outbox's event ids).
    by_id = {r[1]: r for r in rows}
    got: dict[str, list[Any]] = {}
    for rec in await _read_all(kafka_bootstrap, topics):
        eid = dict(rec.headers).get("ce_id", b"").decode()
        if eid in by_id and rec.timestamp >= started_ms:
            got.setdefault(eid, []).append(rec)
    assert set(got) == set(by_id), f"missing: {len(set(by_id) - set(got))}"
    assert all(len(recs) == 1 for recs in got.values()), "a clean relay sends each row once"
    assert all(_same(recs[0], by_id[eid]) for eid, recs in got.items())

    again = _inlet(
        "relay",
        "--config",
        str(EXAMPLE),
        "--once",
        env=_env(INLET_STATE_DIR=str(state), INLET_KAFKA_BOOTSTRAP=kafka_bootstrap),
    )
    assert again.returncode == 0 and "shipped 0 event(s)" in again.stdout, again.stdout + again.stderr[-2000:]


@pytest.mark.kafka
@pytest.mark.slow
async def test_kill_minus_9_mid_stream_loses_nothing_and_keeps_per_key_order(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = f"relay-kill9-{uuid.uuid4().hex[:8]}."
    await _create_topic(kafka_bootstrap, f"{prefix}multi", partitions=3)
    total = 60_000
    # Small pages and a small in-flight bound: many watermark commits, so kills land between ack and commit.
    outbox = _relay_config(
        tmp_path, kafka=kafka_bootstrap, page_size=200, max_in_flight_events=2000, progress_interval_seconds=1.0
    )
    await _fill(outbox, _events(prefix, total))
    rows = _rows(outbox)
    assert len(rows) == total
    rng = random.Random(int(os.environ.get("INLET_TEST_SEED", "0")) or None)
    env = _env(INLET_LOG_LEVEL="info")
    log = tmp_path / "relay.log"
    kills, killed_at = 0, []
    for _ in range(4):
        start = read_watermark(outbox)
        proc = _start_relay(tmp_path, env, log)
        deadline = time.monotonic() + 120
        while read_watermark(outbox) < start + total // 12 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, log.read_text()[-3000:]
        before = read_watermark(outbox)
        proc.kill()
        proc.wait(timeout=30)
        kills += 1
        killed_at.append(before)
        assert start < before < total, f"killed at watermark {before} of {total}: not mid-stream"
    final = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert final.returncode == 0, final.stderr[-3000:]
    assert "0 remaining" in final.stdout, final.stdout
    assert kills == 4 and read_watermark(outbox) == rows[-1][0]

    records = await _read_all(kafka_bootstrap, [f"{prefix}multi", f"{prefix}single", f"{prefix}dlq"])
    duplicates = _check_order(records, rows)
    print(f"kill -9 at watermarks {killed_at}: {duplicates} duplicates (same event ids) of {total} rows")
    assert {r.partition for r in records if r.topic.endswith("multi")} == {0, 1, 2}


def _check_order(records: list[Any], rows: list[tuple[int, str, str, bytes | None, bytes, dict[str, str]]]) -> int:
    """Every row is in ``records``, each record equals its row, and a key's rows appear in outbox order (first
    and last copies alike); returns how many duplicates there are."""
    by_id = {r[1]: r for r in rows}
    seen: set[str] = set()
    per_key: dict[tuple[str, bytes], list[tuple[int, int, int]]] = {}
    for rec in records:
        eid = dict(rec.headers)["ce_id"].decode()
        row = by_id[eid]
        assert _same(rec, row), f"record {eid} differs from its outbox row"
        seen.add(eid)
        if rec.key is not None:
            per_key.setdefault((rec.topic, rec.key), []).append((rec.partition, rec.offset, row[0]))
    assert seen == set(by_id), f"lost: {len(set(by_id) - seen)}"
    expected: dict[tuple[str, bytes], list[int]] = {}
    for seq, _, topic, key, _, _ in rows:
        if key is not None:
            expected.setdefault((topic, key), []).append(seq)
    assert set(per_key) == set(expected)
    for tk, recs in per_key.items():
        assert len({p for p, _, _ in recs}) == 1, f"{tk} spread over partitions"
        seqs = [s for _, _, s in sorted(recs)]
        first = list(dict.fromkeys(seqs))
        last = list(dict.fromkeys(reversed(seqs)))[::-1]
        # In Kafka's order a key's rows appear in outbox order, whether duplicates are read or skipped.
        assert first == expected[tk] and last == expected[tk], f"{tk} reordered"
    return len(records) - len(by_id)


@pytest.mark.kafka
@pytest.mark.slow
async def test_kafka_going_away_mid_relay_loses_nothing_and_a_bounded_run_gives_up(
    tmp_path: Path, kafka_broker_factory: Any
) -> None:
    broker = kafka_broker_factory()
    prefix = f"relay-outage-{uuid.uuid4().hex[:8]}."
    await _create_topic(broker.bootstrap, f"{prefix}multi", partitions=3)
    outbox = tmp_path / "outbox.sqlite"
    await _fill(outbox, _events(prefix, 30_000))
    rows = _rows(outbox)
    kafka = KafkaSettings(bootstrap=broker.bootstrap, request_timeout_ms=2000)
    relay = Relay(
        outbox,
        kafka,
        RelaySettings(page_size=200, max_in_flight_events=2000, progress_interval_seconds=1.0),
        backoff_initial_seconds=0.2,
        backoff_max_seconds=1.0,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(relay.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while read_watermark(outbox) < 3000 and loop.time() < deadline and not run.done():
        await asyncio.sleep(0.01)
    await asyncio.to_thread(broker.stop)
    frozen = read_watermark(outbox)
    assert 0 < frozen < len(rows), "Kafka went away after the end: not mid-relay"
    await asyncio.sleep(6.0)  # three request timeouts: batches expire, sessions fail and back off
    assert not run.done(), "following, the relay waits for Kafka"
    assert read_watermark(outbox) == frozen, "nothing is marked shipped while Kafka is away"
    assert relay.progress.last_error is not None
    await asyncio.to_thread(broker.start)
    while read_watermark(outbox) < rows[-1][0] and loop.time() < deadline + 120:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(run, 30)
    assert read_watermark(outbox) == rows[-1][0] and relay.progress.last_error is None
    duplicates = _check_order(await _read_all(broker.bootstrap, {r[2] for r in rows}), rows)
    print(f"Kafka away at watermark {frozen}: {duplicates} duplicates of {len(rows)} rows")

    # A bounded run (--once, inlet run --once) does not wait for a Kafka that acknowledges nothing.
    await _fill(outbox, _events(prefix, 100, start=30_000))
    await asyncio.to_thread(broker.stop)
    once = Relay(outbox, kafka, RelaySettings(), backoff_initial_seconds=0.1, backoff_max_seconds=0.2)
    with pytest.raises(RelayFailed):
        await asyncio.wait_for(once.run(asyncio.Event(), once=True, max_failures=3), 60)
    assert read_watermark(outbox) == rows[-1][0] and once.progress.remaining == 100


MAX_MESSAGE_BYTES = 65_536
"""The dedicated broker's ``message.max.bytes`` in the refused-row test: a row of 100 kB is over it for good."""


def _big(event: Event, size: int = 100_000) -> Event:
    return Event(
        topic=event.topic, key=event.key, value=orjson.dumps({"pad": "x" * size}), headers=event.headers, id=event.id
    )


def _as_dlq_record(event: Event, dlq_topic: str) -> Event:
    """``event`` turned into what the pipeline writes for a record it could not map: a DLQ record on ``dlq_topic``."""
    headers = [(k, b"inlet.dlq" if k == "ce_type" else v) for k, v in event.headers if k != "content-type"]
    headers += [
        ("dlq_stage", b"map"),
        ("dlq_error_type", b"MappingError"),
        ("dlq_error_message", b"no code"),
        ("dlq_position", b'{"page": 3}'),
        ("dlq_source_key", b"Thing/x"),
    ]
    return Event(topic=dlq_topic, key=b"Thing/x", value=event.value, headers=headers, id=event.id)


@pytest.mark.kafka
async def test_a_row_kafka_refuses_becomes_a_dlq_record_and_the_rest_ship(
    tmp_path: Path, kafka_broker_factory: Any
) -> None:
    """Rows over ``message.max.bytes`` among good ones: each goes to its integration's DLQ topic (stage ``sink``,
    the broker's error, truncated like the pipeline's), every other row ships in per-key order, and the watermark
    moves past them; a refused row naming no integration stops the relay there, saying which."""
    broker = kafka_broker_factory(overrides={"message.max.bytes": str(MAX_MESSAGE_BYTES)})
    prefix = f"relay-poison-{uuid.uuid4().hex[:8]}."
    dlq_topic = f"{prefix}inlet.dlq.acme.obs"
    outbox = _relay_config(
        tmp_path,
        kafka=broker.bootstrap,
        progress_interval_seconds=1.0,
        dlq_topic_template=prefix + "inlet.dlq.{customer}.{integration}",
    )
    events = _events(prefix, 400, keys=5, pad=100, integration=("acme", "obs"))
    poison = {
        37: _big(events[37]),
        150: _big(events[150]),
        151: _big(events[151]),
        260: _as_dlq_record(_big(events[260]), dlq_topic),
    }  # each in a batch of good rows at first
    events = [poison.get(i, e) for i, e in enumerate(events)]
    await _fill(outbox, events)
    rows = _rows(outbox)
    poisoned = {rows[i][1] for i in poison}

    started = time.monotonic()
    shipped = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    elapsed = time.monotonic() - started
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    assert "shipped 400 event(s)" in shipped.stdout and "(4 refused by Kafka, as DLQ records)" in shipped.stdout, (
        shipped.stdout
    )
    assert read_watermark(outbox) == rows[-1][0], "the watermark moves past the refused rows"

    good = [r for r in rows if r[1] not in poisoned]
    records = await _read_all(broker.bootstrap, {r[2] for r in good})
    duplicates = _check_order(records, good)  # every other row, each like its row, per-key order kept
    dead = {dict(r.headers)["ce_id"].decode(): r for r in await _read_all(broker.bootstrap, [dlq_topic])}
    assert len(dead) == 4, sorted(dead)  # one DLQ record per refused row (resent copies have its id)
    by_event = {_event_id(r): r for r in dead.values()}
    assert set(by_event) == poisoned
    for i in (37, 150, 151):
        record, row = by_event[events[i].id], rows[i]
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["dlq_stage"] == "sink" and headers["dlq_error_type"] == "MessageSizeTooLargeError"
        assert "maximum" in headers["dlq_error_message"], headers  # the broker's own description of the error
        assert f"event {row[1]}" in headers["dlq_error_message"]
        assert headers["dlq_topic"] == row[2] and headers["ce_customer"] == "acme" and headers["ce_type"] == "inlet.dlq"
        assert headers["ce_id"] != row[1]  # its own id, derived from the refused event's
        # The DLQ record of a 100 kB row is itself too large: sent again with its payload truncated, as the pipeline's.
        assert headers["dlq_payload_truncated"] == "true" and int(headers["dlq_payload_bytes"]) == len(row[4])
        assert record.value == row[4][:DLQ_TRUNCATED_BYTES]
    # A row that is a DLQ record already (an unmappable record's payload) is sent again truncated, on its topic.
    record, row = by_event[events[260].id], rows[260]
    headers = {k: v.decode() for k, v in record.headers}
    assert {k: v for k, v in headers.items() if not k.startswith("dlq_payload_")} == row[5]
    assert headers["dlq_payload_truncated"] == "true" and record.value == row[4][:DLQ_TRUNCATED_BYTES]
    print(f"relay with 4 refused rows of 400: {elapsed:.1f} s, {duplicates} duplicates")

    # A refused row that names no integration cannot be dead-lettered: the relay stops there and says which.
    before = rows[-1][0]
    anonymous = _events(prefix, 3, start=400, keys=5, pad=100)
    anonymous[1] = _big(anonymous[1])
    await _fill(outbox, anonymous)
    stopped = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    message = " ".join(stopped.stderr.split())
    assert f"outbox row seq {before + 2}" in message and "names no integration" in message, message
    assert "MessageSizeTooLargeError" in message and "Not retried" in message
    assert read_watermark(outbox) == before + 1, "the row before it is shipped, nothing after it"


@pytest.mark.kafka
async def test_missing_topics_are_refused_naming_them_unless_topics_create_says_so(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """``inlet relay`` runs the supervisor's start-up check for the topics its rows target (and their DLQ topic)."""
    prefix = f"relay-topics-{uuid.uuid4().hex[:8]}."
    template = prefix + "inlet.dlq.{customer}.{integration}"
    outbox = _relay_config(tmp_path, kafka=kafka_bootstrap, topics={"create": False}, dlq_topic_template=template)
    await _fill(outbox, _events(prefix, 50, keys=5, integration=("acme", "obs")))
    wanted = [f"{prefix}{name}" for name in ("dlq", "inlet.dlq.acme.obs", "multi", "single")]

    refused = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    message = " ".join(refused.stderr.split())
    assert "4 topic(s) this configuration writes are missing" in message and "topics.create is false" in message
    assert all(name in message for name in wanted), message
    assert "inlet topics apply" in message and "key topics" in message
    assert read_watermark(outbox) == 0

    _relay_config(
        tmp_path,
        kafka=kafka_bootstrap,
        topics={"create": True, "dlq": {"retention_ms": DAY_MS}},
        dlq_topic_template=template,
    )
    created = _inlet("relay", "--config", str(tmp_path), "--once", env=_env())
    assert created.returncode == 0, created.stderr[-3000:]
    assert "shipped 50 event(s)" in created.stdout and read_watermark(outbox) == 50
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        await admin.start()  # inside the try: a start that fails half-way is closed too
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(wanted)}
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, wanted[1])])
    finally:
        await admin.close()
    # Created as configured: contract topics 6 partitions (the built-in default), the DLQ topic 1, its retention set.
    assert partitions == {wanted[0]: 6, wanted[1]: 1, wanted[2]: 6, wanted[3]: 6}
    entries = {e["config_names"]: e["config_value"] for e in response.to_object()["resources"][0]["config_entries"]}
    assert entries["retention.ms"] == str(DAY_MS)


@pytest.mark.kafka
@pytest.mark.slow
async def test_a_wrong_password_stops_the_relay_at_once_and_nothing_is_marked_shipped(
    tmp_path: Path, secure_kafka: Any, kafka_pki: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.secure_kafka import PASSWORD, USER, WRONG

    kafka = {
        "bootstrap": secure_kafka.bootstrap_of("SASL_SSL"),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "username": USER,
        "password": {"env": "RELAY_KAFKA_PASSWORD"},
        "ssl_cafile": str(kafka_pki.ca.cert),
    }
    outbox = _relay_config(tmp_path, kafka=kafka)
    await _fill(outbox, _events(f"relay-refused-{uuid.uuid4().hex[:8]}.", 20, integration=("acme", "obs")))

    # Following (no bound on failures), as inlet run's relay does: a refusal ends it, an outage would not.
    monkeypatch.setenv("RELAY_KAFKA_PASSWORD", WRONG)
    settings = KafkaSettings.model_validate({**kafka, "request_timeout_ms": 5000})
    relay = Relay(outbox, settings, RelaySettings(), backoff_initial_seconds=0.05)
    with pytest.raises(RelayRefused, match="SASL authentication failed") as refused:
        await asyncio.wait_for(relay.run(asyncio.Event()), 60)
    assert isinstance(refused.value, SinkRefused) and relay.progress.failures == 0, "not retried like an outage"
    assert f"user {USER}" in str(refused.value) and WRONG not in str(refused.value)
    assert read_watermark(outbox) == 0

    # `inlet relay`: the same refusal, from its topic check already.
    cli = _inlet("relay", "--config", str(tmp_path), "--once", env=_env(RELAY_KAFKA_PASSWORD=WRONG))
    assert cli.returncode == 1, cli.stderr[-3000:]
    message = " ".join(cli.stderr.split())
    assert "Kafka refused it" in message and "SASL authentication failed" in message and "Not retried" in message
    assert WRONG not in cli.stderr and "gave up" not in message
    assert read_watermark(outbox) == 0

    # The right password: everything ships.
    right = _inlet("relay", "--config", str(tmp_path), "--once", env=_env(RELAY_KAFKA_PASSWORD=PASSWORD))
    assert right.returncode == 0 and "shipped 20 event(s)" in right.stdout, right.stderr[-3000:]


@pytest.mark.kafka
async def test_pruning_deletes_only_rows_shipped_longer_ago_than_the_retention(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = f"relay-prune-{uuid.uuid4().hex[:8]}."
    outbox = tmp_path / "outbox.sqlite"
    conn = sqlite3.connect(outbox)  # an outbox file from before the relay existed
    conn.executescript(_OLD_SCHEMA)
    first = _events(prefix, 100, keys=7)
    with conn:
        conn.executemany(
            "INSERT INTO events (event_id, topic, key, value, headers) VALUES (?, ?, ?, ?, ?)",
            [
                (e.id, e.topic, e.key, e.value, orjson.dumps({k: v.decode() for k, v in e.headers}).decode())
                for e in first
            ],
        )
    conn.close()
    retention_seconds = 36.0  # marks are then opened every 0.36 s
    settings = RelaySettings(retention_seconds=retention_seconds, prune_interval_seconds=3600)
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, request_timeout_ms=5000)

    async def ship() -> None:
        progress = await Relay(outbox, kafka, settings).run(asyncio.Event(), once=True, max_failures=3)
        assert progress.remaining == 0

    await ship()  # A: seq 1-100 (and the file gains the watermark table)
    assert read_watermark(outbox) == 100
    shipped_a = dict(_marks(outbox))[100]
    await asyncio.sleep(0.5)
    second = _events(prefix, 100, start=100, keys=7)
    await _fill(outbox, second)
    await ship()  # B: seq 101-200
    assert read_watermark(outbox) == 200 and [u for u, _ in _marks(outbox)] == [100, 200]
    third = _events(prefix, 100, start=200, keys=7)
    await _fill(outbox, third)  # C: seq 201-300, not shipped

    relay = Relay(outbox, kafka, settings)
    # Just after A is older than the retention: A goes; B (shipped 0.5 s later) and C stay.
    assert await relay.prune(now=shipped_a + retention_seconds + 0.1) == 100
    assert [r[0] for r in _rows(outbox)] == list(range(101, 301))
    # Much later: every shipped row goes, never an unshipped one.
    assert await relay.prune(now=time.time() + 100 * retention_seconds) == 100
    assert [r[0] for r in _rows(outbox)] == list(range(201, 301))
    assert [u for u, _ in _marks(outbox)] == [200]

    await ship()  # C; then everything is pruned and new rows get new seqs (AUTOINCREMENT)
    assert await relay.prune(now=time.time() + 100 * retention_seconds) == 100
    assert _rows(outbox) == []
    fourth = _events(prefix, 50, start=300, keys=7)
    await _fill(outbox, fourth)
    assert [r[0] for r in _rows(outbox)] == list(range(301, 351))
    await ship()
    assert read_watermark(outbox) == 350

    records = await _read_all(kafka_bootstrap, [f"{prefix}multi", f"{prefix}single", f"{prefix}dlq"])
    got = [dict(r.headers)["ce_id"].decode() for r in records]
    assert sorted(got) == sorted(e.id for e in first + second + third + fourth)


@pytest.mark.kafka
async def test_the_supervisor_option_ships_events_as_they_are_written(
    tmp_path: Path, kafka_bootstrap: str, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    resources = generate_observations(3000, seed=12)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    prefix = f"relay-sup-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources, page_delay=0.05) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix, page_size=50
        )
        doc = yaml.safe_load((root / "inlet.yaml").read_text())
        doc["relay"] = {"enabled": True, "poll_interval_seconds": 0.1}
        (root / "inlet.yaml").write_text(yaml.safe_dump(doc))
        sup_cfg, integrations = load_config(root)
        assert sup_cfg.resolved_sink() == "outbox"
        supervisor = Supervisor(sup_cfg, integrations)
        stats = supervisor.stats["acme/observations"]
        outbox = root / "state" / "outbox.sqlite"
        run = run_supervisor(supervisor)  # stopped below once all is shipped; by the fixture if an assert fails
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while read_watermark(outbox) == 0 and loop.time() < deadline and not run.done():
            await asyncio.sleep(0.02)
        read_then = stats.totals.records_in
        assert read_watermark(outbox) > 0, "nothing shipped"
        assert read_then < len(resources), "shipped only after the integration had read everything"
        while (
            stats.totals.records_in < len(resources) or read_watermark(outbox) < _rows(outbox)[-1][0]
        ) and loop.time() < deadline + 60:
            await asyncio.sleep(0.05)
        assert supervisor.status().get("relay") is None
        supervisor.stop()
        await asyncio.wait_for(run, 30)
    rows = _rows(outbox)
    assert read_watermark(outbox) == rows[-1][0]
    records = await _read_all(kafka_bootstrap, {r[2] for r in rows})
    ids = [dict(r.headers)["ce_id"].decode() for r in records]
    assert len(ids) == len(set(ids)) == len(rows), "each row once"
    assert {
        orjson.loads(r.value)["observation_id"] for r in records if r.topic.endswith("clinical.observation.v1")
    } == wanted


@pytest.mark.kafka
async def test_run_once_with_the_relay_ships_everything_before_it_returns(tmp_path: Path, kafka_bootstrap: str) -> None:
    resources = generate_observations(300, seed=13)
    prefix = f"relay-once-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix)
        doc = yaml.safe_load((root / "inlet.yaml").read_text())
        doc["relay"] = {"enabled": True}
        (root / "inlet.yaml").write_text(yaml.safe_dump(doc))
        supervisor = Supervisor(*load_config(root), once=True)
        await asyncio.wait_for(supervisor.run(), 120)
    assert supervisor.failed == {}
    rows = _rows(root / "state" / "outbox.sqlite")
    assert rows and read_watermark(root / "state" / "outbox.sqlite") == rows[-1][0]
    records = await _read_all(kafka_bootstrap, {r[2] for r in rows})
    assert sorted(dict(r.headers)["ce_id"].decode() for r in records) == sorted(r[1] for r in rows)
