"""The pipeline's promises: accounting, DLQ per stage, commit only after the sink, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import Batch
from inlet.core.envelope import Enveloper, event_id, integration_namespace
from inlet.core.errors import SinkUnavailable
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.sinks.outbox import OutboxSink, read_outbox
from tests.helpers import GatedSink, ListConnector

GOOD = {"id": "o1"}


def test_every_record_is_counted_once_and_bad_ones_reach_the_dlq_with_their_stage() -> None:
    conn = ListConnector([])
    env = Enveloper("acme", "obs")
    records = [
        GOOD,
        {"id": "o2", "bad": "decode"},
        {"id": "o3", "bad": "map"},
        {"id": "o4", "bad": "bug"},
        {"id": "o5", "status": "not-a-status"},
        {"id": "o6", "skip": True},
        {"id": ""},
    ]
    events, counts = process_batch(conn, env, Batch(records, {"batch": 0}))
    assert counts.records_in == 7
    assert counts.records_mapped == 1 and counts.events_out == 1
    assert dict(counts.dlq) == {"decode": 1, "map": 2, "validate": 2}
    assert dict(counts.filtered) == {"test filter": 1}
    assert counts.balanced()
    dlq = [e for e in events if e.topic == "inlet.dlq.acme.obs"]
    assert len(dlq) == 5
    by_key = {dict(e.headers).get("dlq_source_key", b"").decode(): dict(e.headers) for e in dlq}
    bad_status = by_key["Observation/o5"]
    assert bad_status["dlq_stage"] == b"validate"
    assert b"status" in bad_status["dlq_error_message"]
    assert orjson.loads(bad_status["dlq_position"]) == {"batch": 0}
    assert by_key["Observation/o4"]["dlq_error_type"] == b"KeyError"
    # The original payload is the DLQ value.
    assert {orjson.loads(e.value)["id"] for e in dlq} == {"o2", "o3", "o4", "o5", ""}


def test_event_ids_are_deterministic_and_differ_per_record() -> None:
    env = Enveloper("acme", "obs")
    conn = ListConnector([])
    a, _ = process_batch(conn, env, Batch([GOOD, {"id": "o2"}], {}))
    b, _ = process_batch(conn, env, Batch([GOOD], {}))
    assert a[0].id == b[0].id
    assert a[0].id != a[1].id
    c, _ = process_batch(conn, Enveloper("other", "obs"), Batch([GOOD], {}))
    assert c[0].id != a[0].id


async def test_positions_are_committed_only_after_the_sink_acknowledges_in_order(
    checkpoint_store: CheckpointStore,
) -> None:
    conn = ListConnector([[{"id": f"o{b}{i}"} for i in range(3)] for b in range(3)])
    sink = GatedSink()
    store = checkpoint_store
    stats = Stats("acme", "obs")
    pipeline = Pipeline(conn, Enveloper("acme", "obs"), sink, store, stats, max_in_flight=8)
    task = asyncio.create_task(pipeline.run(None, asyncio.Event()))
    while len(sink.acks) < 3:
        await asyncio.sleep(0.01)
    assert await store.load("acme", "obs") is None  # all three handed over, none acknowledged
    sink.acks[1].set_result([])  # out of order: batch 1 done, batch 0 not
    await asyncio.sleep(0.05)
    assert await store.load("acme", "obs") is None
    sink.acks[0].set_result([])
    await asyncio.sleep(0.05)
    assert await store.load("acme", "obs") == {"batch": 1}
    sink.acks[2].set_result([])
    assert await task == {"batch": 2}
    assert await store.load("acme", "obs") == {"batch": 2}
    assert conn.acknowledged == [{"batch": 0}, {"batch": 1}, {"batch": 2}]
    assert stats.totals.records_in == 9 and stats.totals.events_out == 9 and stats.batches == 3


async def test_a_failed_acknowledgement_commits_nothing_after_it(checkpoint_store: CheckpointStore) -> None:
    conn = ListConnector([[{"id": f"o{b}"}] for b in range(3)])
    sink = GatedSink()
    store = checkpoint_store
    pipeline = Pipeline(conn, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs"), max_in_flight=8)
    task = asyncio.create_task(pipeline.run(None, asyncio.Event()))
    while len(sink.acks) < 3:
        await asyncio.sleep(0.01)
    sink.acks[0].set_result([])
    sink.acks[1].set_exception(SinkUnavailable("broker gone"))
    sink.acks[2].set_result([])
    with pytest.raises(SinkUnavailable):
        await task
    assert await store.load("acme", "obs") == {"batch": 0}


async def test_reading_waits_while_the_sink_holds_max_in_flight_batches(checkpoint_store: CheckpointStore) -> None:
    conn = ListConnector([[{"id": f"o{b}"}] for b in range(10)])
    sink = GatedSink()
    store = checkpoint_store
    pipeline = Pipeline(conn, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs"), max_in_flight=2)
    task = asyncio.create_task(pipeline.run(None, asyncio.Event()))
    await asyncio.sleep(0.2)
    assert len(sink.batches) == 2  # backpressure: no third batch is read while two await their ack
    for i in range(10):
        while len(sink.acks) <= i:
            await asyncio.sleep(0.01)
        sink.acks[i].set_result([])
    assert await task == {"batch": 9}


async def test_stop_drains_what_was_handed_over_and_resume_starts_after_it(
    tmp_path: Path, checkpoint_store: CheckpointStore, outbox_sinks: Callable[..., OutboxSink]
) -> None:
    conn = ListConnector([[{"id": f"o{b}"}] for b in range(5)])
    sink = outbox_sinks(tmp_path / "outbox.sqlite")
    store = checkpoint_store
    stop = asyncio.Event()
    stop.set()
    first = Pipeline(conn, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs"))
    assert await first.run(None, stop) is None  # stopped before reading anything
    second = Pipeline(conn, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs"))
    assert await second.run(await store.load("acme", "obs"), asyncio.Event()) == {"batch": 4}
    third = Pipeline(conn, Enveloper("acme", "obs"), sink, store, Stats("acme", "obs"))
    assert await third.run(await store.load("acme", "obs"), asyncio.Event()) == {"batch": 4}
    await sink.stop()
    rows = read_outbox(tmp_path / "outbox.sqlite", limit=100)
    assert [orjson.loads(r.value)["observation_id"] for r in rows] == [f"o{b}" for b in range(5)]


@given(key=st.text(), version=st.text(), contract=st.text(min_size=1), ordinal=st.integers(0, 10_000))
def test_event_id_is_exactly_uuid5_of_the_documented_name(key: str, version: str, contract: str, ordinal: int) -> None:
    ns = integration_namespace("acme", "obs")
    name = f"{key}\x1f{version}\x1f{contract}\x1f{ordinal}"
    try:
        expected = str(uuid.uuid5(ns, name))
    except UnicodeEncodeError:  # lone surrogates cannot be names in either implementation
        return
    assert event_id(ns, key, version, contract, ordinal) == expected


async def test_an_exactly_once_push_source_filters_what_came_back_after_its_commit(
    checkpoint_store: CheckpointStore,
) -> None:
    """The position of the last commit names its messages; after a crash before the acknowledgement the sender
    redelivers them: those are filtered, counted, and the ones not met yet stay named for a second crash."""
    from inlet.core.pipeline import COMMITTED_KEY, REDELIVERED, _digest
    from inlet.core.sinks.memory import MemorySink

    a, b, c = {"id": "a"}, {"id": "b"}, {"id": "c"}
    conn = ListConnector([[a, b]])
    sink = MemorySink()
    stats = Stats("acme", "obs")
    position = {"batch": -1, COMMITTED_KEY: [_digest(conn, a), _digest(conn, c)]}
    pipeline = Pipeline(conn, Enveloper("acme", "obs"), sink, checkpoint_store, stats, redelivered=True)
    await pipeline.run(position, asyncio.Event())
    assert [orjson.loads(e.value)["observation_id"] for e in sink.events] == ["b"]
    assert stats.totals.filtered == {REDELIVERED: 1} and stats.totals.records_in == 2 and stats.totals.balanced()
    saved = await checkpoint_store.load("acme", "obs")
    assert saved is not None and saved[COMMITTED_KEY] == [_digest(conn, a), _digest(conn, b), _digest(conn, c)]
    # Without exactly-once nothing is filtered (duplicates keep their event ids instead).
    again = MemorySink()
    await Pipeline(
        ListConnector([[a, b]]), Enveloper("acme", "obs"), again, checkpoint_store, Stats("acme", "obs")
    ).run(position, asyncio.Event())
    assert len(again.events) == 2
