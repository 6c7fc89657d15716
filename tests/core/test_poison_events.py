"""Poison events: an event the broker refuses for good becomes a DLQ record at stage ``sink``; the stream goes on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import errors as kafka_errors
from aiokafka.admin import NewTopic

from inlet.connectors.fhir.synth import generate_observations
from inlet.contracts.base import Contract
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings, load_config
from inlet.core.envelope import Enveloper, Event
from inlet.core.errors import SinkRefused
from inlet.core.metrics import Stats
from inlet.core.pipeline import DLQ_TRUNCATED_BYTES, Pipeline
from inlet.core.sinks import EventTooLarge
from inlet.core.sinks.kafka import ERROR_ACTIONS, KafkaSink, action_for
from inlet.core.sinks.memory import MemorySink
from inlet.core.sinks.outbox import OutboxSink, read_outbox
from inlet.core.supervisor import Supervisor
from tests.helpers import ListConnector, consume, header_map, write_config
from tools.servers.fhir import FhirTestServer
from tools.services import KafkaBroker

MAX_MESSAGE_BYTES = 65_536
"""The broker's ``message.max.bytes`` in the real-broker tests: an event of 100 kB is over it for good."""


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return predicate()


def _poisoned(count: int, at: int, size: int = 100_000) -> tuple[list[dict[str, Any]], str]:
    """``count`` synthetic observations, the one at ``at`` (a final one) with a ``code.text`` of ``size`` bytes."""
    resources = generate_observations(count, seed=5)
    while resources[at]["status"] == "entered-in-error":
        at += 1
    resources[at]["code"]["text"] = "x" * size
    return resources, resources[at]["id"]


@pytest.mark.kafka
@pytest.mark.slow
async def test_an_event_over_message_max_bytes_goes_to_the_dlq_and_the_stream_goes_on(
    tmp_path: Path,
    kafka_broker_factory: Callable[..., KafkaBroker],
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
) -> None:
    broker = kafka_broker_factory(overrides={"message.max.bytes": str(MAX_MESSAGE_BYTES)})
    resources, poison = _poisoned(300, at=137)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"} - {poison}
    prefix = f"poison-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, kafka=broker.bootstrap, topic_prefix=prefix, page_size=20
        )
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations)
        stats = supervisor.stats["acme/observations"]
        run = run_supervisor(supervisor)  # stopped here once the records are in; by the fixture if that fails
        started = time.monotonic()
        done = await _until(lambda: stats.totals.records_in == len(resources) or run.done(), 120)
        elapsed = time.monotonic() - started
        supervisor.stop()
        await asyncio.wait_for(run, 60)
    assert done and stats.totals.records_in == len(resources), (
        f"stalled at the poison event: {stats.totals.records_in}/{len(resources)} records committed, "
        f"{stats.restarts} restarts, last error {stats.last_error}"
    )
    assert stats.restarts == 0, stats.last_error
    t = stats.totals
    assert t.balanced() and t.dlq == {"sink": 1}, t
    # The FHIR family publishes v2 and, converted, v1: two events per record, both refused for the poison one.
    assert t.events_out == 2 * len(wanted)

    topics = [f"{prefix}clinical.observation.v1", f"{prefix}clinical.observation.v2"]
    events = await consume(
        broker.bootstrap,
        topics,
        timeout=60,
        until=lambda got: len({(r.topic, orjson.loads(r.value)["observation_id"]) for r in got}) >= 2 * len(wanted),
    )
    for topic in topics:
        assert {orjson.loads(r.value)["observation_id"] for r in events if r.topic == topic} == wanted
    dlq = await consume(broker.bootstrap, [f"{prefix}inlet.dlq.acme.observations"], expect=2, timeout=60)
    assert len(dlq) == 2
    seen = [{k: v.decode() for k, v in header_map(record).items()} for record in dlq]
    assert {h["dlq_topic"] for h in seen} == set(topics)
    assert len({h["ce_id"] for h in seen}) == 2  # one DLQ record per refused event, each with its own id
    for headers, record in zip(seen, dlq, strict=True):
        assert headers["dlq_stage"] == "sink"
        assert headers["dlq_error_type"] == "MessageSizeTooLargeError"
        assert "maximum" in headers["dlq_error_message"]  # the broker's own description of the error
        assert headers["dlq_source_key"] == f"Observation/{poison}"
        assert orjson.loads(headers["dlq_position"])  # where to re-read the record from
        # The DLQ record of a 100 kB event is itself too large: its payload is truncated and the headers say so.
        assert headers["dlq_payload_truncated"] == "true"
        assert int(headers["dlq_payload_bytes"]) > MAX_MESSAGE_BYTES
        assert len(record.value) < MAX_MESSAGE_BYTES
    print(f"poison run: {len(resources)} records in {elapsed:.1f} s, restarts {stats.restarts}")


# --- the error table, case by case ----------------------------------------------------------------------------

E = kafka_errors


@pytest.mark.parametrize(
    ("error", "action"),
    [
        # refused for good, the event is to blame: DLQ
        (E.MessageSizeTooLargeError(), "dlq"),
        (E.RecordListTooLargeError(), "dlq"),
        (E.RecordTooLargeError(), "dlq"),
        (E.CorruptRecordException(), "dlq"),
        (E.InvalidMessageError(), "dlq"),
        (E.InvalidTimestampError(), "dlq"),
        (E.InvalidTopicError("bad topic!"), "dlq"),
        (E.TopicAuthorizationFailedError("secret.topic"), "dlq"),
        (E.PolicyViolationError(), "dlq"),
        (E.UnsupportedForMessageFormatError(), "dlq"),
        # inlet itself is refused: fatal, nothing goes to the DLQ
        (E.ClusterAuthorizationFailedError(), "fatal"),
        (E.TransactionalIdAuthorizationFailed(), "fatal"),
        (E.SaslAuthenticationFailed(), "fatal"),
        (E.AuthenticationFailedError(), "fatal"),
        (E.UnsupportedSaslMechanismError(), "fatal"),
        (E.UnsupportedVersionError(), "fatal"),
        (E.InvalidRequiredAcksError(), "fatal"),
        (E.KafkaConfigurationError(), "fatal"),
        # Kafka away, busy, electing, or a producer state to start over: retried from the checkpoint
        (E.UnknownTopicOrPartitionError(), "retry"),
        (E.NotEnoughReplicasError(), "retry"),
        (E.NotEnoughReplicasAfterAppendError(), "retry"),
        (E.NotLeaderForPartitionError(), "retry"),
        (E.LeaderNotAvailableError(), "retry"),
        (E.RequestTimedOutError(), "retry"),
        (E.KafkaTimeoutError(), "retry"),
        (E.KafkaConnectionError(), "retry"),
        (E.NodeNotReadyError(), "retry"),
        (E.OutOfOrderSequenceNumber(), "retry"),
        (E.UnknownProducerId(), "retry"),
        (E.ProducerFenced(), "retry"),
        (E.ProducerClosed(), "retry"),
        (E.KafkaStorageError(), "retry"),  # not listed: the KafkaError fallback
        (E.UnknownError(), "retry"),
        (ConnectionResetError(), "retry"),
        (TimeoutError(), "retry"),
        (ValueError("not Kafka's"), "retry"),  # not in the table at all
    ],
)
def test_the_error_table_tells_retriable_from_permanent(error: BaseException, action: str) -> None:
    assert action_for(error) == action


def test_every_error_aiokafka_can_answer_a_produce_request_with_is_decided_by_the_table() -> None:
    """Every broker error class has an entry or falls to the KafkaError catch-all, which is last (first match)."""
    classes = list(ERROR_ACTIONS)
    assert classes.index(E.KafkaError) > max(
        classes.index(c) for c in classes if c not in (E.KafkaError, OSError, TimeoutError)
    )
    assert {ERROR_ACTIONS[c] for c in classes} == {"retry", "dlq", "fatal"}
    assert all(issubclass(c, BaseException) for c in classes)


# --- the pipeline: refused events become DLQ records, counted once --------------------------------------------


class PairConnector(ListConnector):
    """Two events per record (like dual publishing): the observation, and a copy with ``-b`` appended to its id;
    ``text`` pads both."""

    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        (model,) = super().map(record)
        model = model.model_copy(update={"code_text": record.get("text")})
        return [model, model.model_copy(update={"observation_id": f"{record['id']}-b"})]


def _dlq_headers(sink: MemorySink, env: Enveloper) -> list[dict[str, str]]:
    return [{k: v.decode() for k, v in e.headers} for e in sink.events if e.topic == env.dlq_topic]


async def test_an_event_the_sink_refuses_becomes_a_sink_dlq_record_counted_once(
    checkpoint_store: CheckpointStore,
) -> None:
    limit = DLQ_TRUNCATED_BYTES + 400
    big = "x" * (2 * DLQ_TRUNCATED_BYTES)
    records = [{"id": "o1"}, {"id": "o2", "text": big}, {"id": "o3", "bad": "decode", "pad": big}, {"id": "o4"}]
    connector = PairConnector([records[:2], records[2:]])
    env = Enveloper("acme", "obs")
    sink = MemorySink(max_event_bytes=limit)
    store = checkpoint_store
    stats = Stats("acme", "obs")
    assert await Pipeline(connector, env, sink, store, stats).run(None, asyncio.Event()) == {"batch": 1}
    assert await store.load("acme", "obs") == {"batch": 1}
    t = stats.totals
    assert (t.records_in, t.records_mapped, t.events_out) == (4, 2, 4)
    assert dict(t.dlq) == {"sink": 1, "decode": 1} and t.balanced()
    contract = [orjson.loads(e.value)["observation_id"] for e in sink.events if e.topic != env.dlq_topic]
    assert contract == ["o1", "o1-b", "o4", "o4-b"]

    dlq = _dlq_headers(sink, env)
    sink_stage = [h for h in dlq if h["dlq_stage"] == "sink"]
    assert len(sink_stage) == 2 and len({h["ce_id"] for h in sink_stage}) == 2  # both refused events, own ids
    for h in sink_stage:
        assert h["dlq_error_type"] == EventTooLarge
        assert h["dlq_source_key"] == "Observation/o2"
        assert orjson.loads(h["dlq_position"]) == {"batch": 0}
        assert h["dlq_topic"] == "clinical.observation.v1"
        assert h["dlq_payload_truncated"] == "true" and int(h["dlq_payload_bytes"]) > limit
    # The decode-stage DLQ record of the oversized raw record was refused too: truncated, still counted once.
    (decode,) = [h for h in dlq if h["dlq_stage"] == "decode"]
    assert decode["dlq_payload_truncated"] == "true" and decode["dlq_source_key"] == "Observation/o3"
    assert all(len(e.value) <= limit for e in sink.events)
    assert {len(e.value) for e in sink.events if e.topic == env.dlq_topic} == {DLQ_TRUNCATED_BYTES}


async def test_a_dlq_record_refused_even_truncated_commits_nothing(checkpoint_store: CheckpointStore) -> None:
    connector = PairConnector([[{"id": "o1"}], [{"id": "o2"}]])
    store = checkpoint_store
    stats = Stats("acme", "obs")
    with pytest.raises(SinkRefused, match="even with its payload truncated"):
        await Pipeline(connector, Enveloper("acme", "obs"), MemorySink(max_event_bytes=10), store, stats).run(
            None, asyncio.Event()
        )
    assert await store.load("acme", "obs") is None
    assert stats.batches == 0


async def test_the_outbox_refuses_what_it_cannot_store_and_keeps_the_rest(
    tmp_path: Path, outbox_sinks: Callable[..., OutboxSink]
) -> None:
    sink = outbox_sinks(tmp_path / "outbox.sqlite", max_event_bytes=100)
    events = [Event("t", b"k", b"a" * size, [("n", str(i).encode())], f"id{i}") for i, size in enumerate((10, 500, 20))]
    refused = await sink.send(events)
    await sink.stop()
    assert [(r.index, r.error_type) for r in refused] == [(1, EventTooLarge)]
    assert "500 bytes" in refused[0].message
    assert [row.event_id for row in read_outbox(tmp_path / "outbox.sqlite", limit=10)] == ["id0", "id2"]


# --- the Kafka sink: refused events found, everything else delivered in order ----------------------------------


async def _topic(admin: Any, name: str, partitions: int = 1, **configs: str) -> None:
    response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    assert all(code == 0 for _, code, *_ in response.topic_errors), response


def _numbered(topic: str, numbers: range, poison: set[int]) -> list[Event]:
    """Events ``n`` of four keys (``k{n % 4}``); those in ``poison`` of 100 kB."""
    return [
        Event(
            topic,
            f"k{n % 4}".encode(),
            orjson.dumps({"n": n, "pad": "x" * (100_000 if n in poison else 300)}),
            [("n", str(n).encode())],
            f"e{n}",
        )
        for n in numbers
    ]


@pytest.mark.kafka
@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("batch_bytes", [16 * 1024, 256 * 1024], ids=["poison-alone", "poison-shares-a-batch"])
async def test_the_kafka_sink_rejects_only_the_refused_events_and_keeps_order(
    kafka_bootstrap: str, batch_bytes: int, partitions: int, kafka_admin: Callable[[str], Awaitable[Any]]
) -> None:
    """Three submissions in flight at once; two of them hold an event over the topic's max.message.bytes."""
    topic = f"poison-sink-{uuid.uuid4().hex[:8]}"
    await _topic(await kafka_admin(kafka_bootstrap), topic, partitions, **{"max.message.bytes": str(MAX_MESSAGE_BYTES)})
    sink = KafkaSink(KafkaSettings(bootstrap=kafka_bootstrap, max_batch_size=batch_bytes, request_timeout_ms=10_000))
    poison = {30, 100}
    batches = [
        _numbered(topic, range(0, 60), poison),
        _numbered(topic, range(60, 90), poison),
        _numbered(topic, range(90, 120), poison),
    ]
    try:
        acks = [await sink.submit(batch) for batch in batches]  # queued, none settled yet
        outcomes = [await ack for ack in acks]
        after = await sink.send(_numbered(topic, range(120, 130), poison))  # a fresh producer after the repair
    finally:
        await sink.stop()
    assert [[r.index for r in o] for o in outcomes] == [[30], [], [10]]
    assert {r.error_type for o in outcomes for r in o} == {"MessageSizeTooLargeError"}
    assert after == []

    wanted = set(range(130)) - poison
    records = await consume(
        kafka_bootstrap, [topic], timeout=60, until=lambda got: {orjson.loads(r.value)["n"] for r in got} >= wanted
    )
    assert {orjson.loads(r.value)["n"] for r in records} == wanted
    # Resent events are duplicates, never out of order: per key, the last copy of each event is later than the
    # last copy of every event submitted before it, so a consumer keeping the latest per key ends with the latest.
    for key in {r.key for r in records}:
        sequence = [
            orjson.loads(r.value)["n"] for r in sorted(records, key=lambda r: (r.partition, r.offset)) if r.key == key
        ]
        last = {n: i for i, n in enumerate(sequence)}
        assert sorted(last, key=last.__getitem__) == sorted(last), key
        assert set(sequence) == {n for n in wanted if f"k{n % 4}".encode() == key}


@pytest.mark.kafka
async def test_events_for_a_topic_kafka_does_not_allow_are_rejected_without_sending(kafka_bootstrap: str) -> None:
    topic = f"poison-names-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(KafkaSettings(bootstrap=kafka_bootstrap))
    events = _numbered(topic, range(3), set())
    events[1] = Event("not a topic!", None, b"{}", [], "bad")
    try:
        refused = await sink.send(events)
    finally:
        await sink.stop()
    assert [(r.index, r.error_type) for r in refused] == [(1, "InvalidTopicError")]
    records = await consume(kafka_bootstrap, [topic], expect=2, timeout=60)
    assert [orjson.loads(r.value)["n"] for r in records] == [0, 2]
