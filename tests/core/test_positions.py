"""Position stores: SQLite (``CheckpointStore``) and the fleet's compacted Kafka topic (``KafkaPositions``), the
factory choosing between them, and the running-supervisor lock the CLI consults."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import NewTopic

from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings, SupervisorConfig
from inlet.core.errors import ConfigError, SinkUnavailable, TopicsMissing
from inlet.core.fleet import replica_name
from inlet.core.positions import (
    KafkaPositions,
    PositionRecord,
    PositionStore,
    open_positions,
    running,
    running_here,
    running_supervisor,
)

Closing = Callable[[Any], Any]


async def _topic(kafka_admin: Callable[[str], Awaitable[Any]], bootstrap: str, partitions: int = 1) -> str:
    """A new compacted topic (the test broker may not create topics by itself)."""
    name = f"positions-{uuid.uuid4().hex[:10]}"
    admin = await kafka_admin(bootstrap)
    await admin.create_topics(
        [NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"})], timeout_ms=30_000
    )
    for _ in range(300):  # the controller has it; wait (up to 60 s) until the metadata says so too
        described = await admin.describe_topics([name])
        if described and described[0]["error_code"] == 0 and len(described[0]["partitions"]) == partitions:
            return name
        await asyncio.sleep(0.2)
    raise AssertionError(f"topic {name} not visible after 60 s")


async def _kafka_store(aclosing: Closing, bootstrap: str, topic: str, replica: str) -> KafkaPositions:
    store = aclosing(KafkaPositions(KafkaSettings(bootstrap=bootstrap), topic, replica=replica))
    await store.start()
    return store  # type: ignore[no-any-return]


# --- SQLite ---------------------------------------------------------------------------------------------------


async def test_checkpoint_store_is_a_position_store(checkpoint_store: CheckpointStore) -> None:
    store: PositionStore = checkpoint_store
    await store.start()
    assert await store.load("acme", "obs") is None and await store.snapshot() == {}
    await store.save("acme", "obs", {"last_updated": "2024-01-01T00:00:00+00:00", "ids": ["a"]})
    await store.save("acme", "meters#2", {"packet_ids": [1]})
    await store.save("acme", "obs", {"last_updated": "2024-02-01T00:00:00+00:00", "ids": []})  # the latest wins
    assert await store.load("acme", "obs") == {"last_updated": "2024-02-01T00:00:00+00:00", "ids": []}
    assert checkpoint_store.load_sync("acme", "meters#2") == {"packet_ids": [1]}  # a slot's name is opaque
    snap = await store.snapshot()
    assert list(snap) == ["acme/meters#2", "acme/obs"]
    assert snap["acme/obs"].position == {"last_updated": "2024-02-01T00:00:00+00:00", "ids": []}
    assert snap["acme/obs"].replica is None and datetime.fromisoformat(snap["acme/obs"].updated_at).tzinfo
    await store.reset("acme", "obs")
    assert await store.load("acme", "obs") is None and list(await store.snapshot()) == ["acme/meters#2"]
    await store.aclose()
    await store.aclose()  # idempotent


# --- Kafka ----------------------------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_kafka_positions_round_trip_and_another_replica_sees_the_latest(
    kafka_bootstrap: str,
    kafka_admin: Callable[[str], Awaitable[Any]],
    kafka_consumer: Callable[..., Awaitable[Any]],
    aclosing: Closing,
) -> None:
    topic = await _topic(kafka_admin, kafka_bootstrap)
    a = await _kafka_store(aclosing, kafka_bootstrap, topic, "replica-a")
    assert await a.load("acme", "obs") is None and await a.snapshot() == {}

    await a.save("acme", "obs", {"last_updated": "t1"})
    assert await a.load("acme", "obs") == {"last_updated": "t1"}
    b = await _kafka_store(aclosing, kafka_bootstrap, topic, "replica-b")
    assert await b.load("acme", "obs") == {"last_updated": "t1"}  # another replica, started later

    # b has read the topic already: what a writes afterwards is still seen (read to the end at each load).
    for i in range(2, 12):
        await a.save("acme", "obs", {"last_updated": f"t{i}"})
    await a.save("acme", "meters#1", {"packet_ids": [7]})
    assert await b.load("acme", "obs") == {"last_updated": "t11"}  # the latest per key wins
    await b.save("acme", "obs", {"last_updated": "t12"})  # taken over by b
    assert await a.load("acme", "obs") == {"last_updated": "t12"}
    snap = await a.snapshot()
    assert snap.keys() == {"acme/obs", "acme/meters#1"}
    assert (snap["acme/obs"].position, snap["acme/obs"].replica) == ({"last_updated": "t12"}, "replica-b")
    assert snap["acme/meters#1"].replica == "replica-a"
    assert datetime.fromisoformat(snap["acme/obs"].updated_at).utcoffset() is not None

    # reset writes a tombstone: no position for anyone, the key gone from the snapshot.
    await a.reset("acme", "obs")
    assert await b.load("acme", "obs") is None and await a.load("acme", "obs") is None
    assert list(await b.snapshot()) == ["acme/meters#1"]

    # What is on the topic: key customer/integration, value JSON with sorted keys, a null value for the reset.
    consumer = await kafka_consumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    records: list[Any] = []
    while len(records) < 14:  # 13 saves and 1 reset, each fetch bounded by its timeout
        fetched = await consumer.getmany(timeout_ms=10_000)
        assert fetched, f"only {len(records)} records on the topic"
        records += [r for batch in fetched.values() for r in batch]
    assert [r.key for r in records[-2:]] == [b"acme/obs", b"acme/obs"] and records[-1].value is None
    value = records[-2].value
    assert orjson.loads(value) == {
        "position": {"last_updated": "t12"},
        "replica": "replica-b",
        "updated_at": snap["acme/obs"].updated_at,
    }
    assert value == orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS)  # keys sorted


@pytest.mark.kafka
async def test_a_position_written_in_an_aborted_transaction_is_never_read(
    kafka_bootstrap: str,
    kafka_admin: Callable[[str], Awaitable[Any]],
    kafka_producer: Callable[..., Awaitable[Any]],
    aclosing: Closing,
) -> None:
    topic = await _topic(kafka_admin, kafka_bootstrap)
    store = await _kafka_store(aclosing, kafka_bootstrap, topic, "replica-a")
    await store.save("acme", "obs", {"n": 1})
    producer = await kafka_producer(bootstrap_servers=kafka_bootstrap, transactional_id=f"t-{uuid.uuid4().hex}")

    # An exactly-once batch writes its position inside its transaction (record()), then fails and aborts.
    t, key, value = store.record("acme", "obs", {"n": 2})
    assert (t, key) == (topic, b"acme/obs") and orjson.loads(value)["position"] == {"n": 2}
    await producer.begin_transaction()
    await producer.send_and_wait(t, value=value, key=key)
    await producer.abort_transaction()
    assert await store.load("acme", "obs") == {"n": 1}
    fresh = await _kafka_store(aclosing, kafka_bootstrap, topic, "replica-b")  # reading from the beginning
    assert await fresh.load("acme", "obs") == {"n": 1}
    assert (await fresh.snapshot())["acme/obs"].position == {"n": 1}

    # The same record in a committed transaction is the position.
    async with producer.transaction():
        t, key, value = store.record("acme", "obs", {"n": 3})
        await producer.send_and_wait(t, value=value, key=key)
    assert await store.load("acme", "obs") == {"n": 3} and await fresh.load("acme", "obs") == {"n": 3}


@pytest.mark.kafka
async def test_kafka_positions_read_every_partition(
    kafka_bootstrap: str, kafka_admin: Callable[[str], Awaitable[Any]], aclosing: Closing
) -> None:
    """A topic made with more partitions than the plan's one still works: every partition is assigned."""
    topic = await _topic(kafka_admin, kafka_bootstrap, partitions=3)
    a = await _kafka_store(aclosing, kafka_bootstrap, topic, "a")
    keys = [f"i{n}" for n in range(12)]
    for n, name in enumerate(keys):
        await a.save("acme", name, {"n": n})
    b = await _kafka_store(aclosing, kafka_bootstrap, topic, "b")
    assert {k: r.position for k, r in (await b.snapshot()).items()} == {f"acme/i{n}": {"n": n} for n in range(12)}


@pytest.mark.kafka
async def test_a_missing_positions_topic_is_named(kafka_bootstrap: str) -> None:
    store = KafkaPositions(KafkaSettings(bootstrap=kafka_bootstrap), f"absent-{uuid.uuid4().hex}", replica="a")
    with pytest.raises(TopicsMissing, match="inlet topics apply"):
        await store.start()
    await store.aclose()


async def test_kafka_unreachable_is_retriable() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{port}", request_timeout_ms=2000)
    store = KafkaPositions(settings, "inlet.positions", replica="a")
    with pytest.raises(SinkUnavailable) as caught:
        await store.start()
    assert caught.value.retriable
    with pytest.raises(RuntimeError, match="start"):
        await store.load("acme", "obs")
    await store.aclose()


# --- which store, which replica -------------------------------------------------------------------------------


def _cfg(tmp_path: Path, **fleet: Any) -> SupervisorConfig:
    doc: dict[str, Any] = {"state_dir": str(tmp_path / "state")}
    if fleet:
        doc |= {"kafka": {"bootstrap": "127.0.0.1:9"}, "fleet": fleet}
    return SupervisorConfig.model_validate(doc)


async def test_open_positions_picks_the_store_and_names_the_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = open_positions(_cfg(tmp_path))
    assert isinstance(sqlite, CheckpointStore)
    await sqlite.save("acme", "obs", {"n": 1})
    await sqlite.aclose()
    assert (tmp_path / "state" / "checkpoints.sqlite").is_file()

    monkeypatch.delenv("INLET_REPLICA", raising=False)
    fleet = _cfg(tmp_path, group="g", positions_topic="p.positions")
    kafka = open_positions(fleet)
    assert isinstance(kafka, KafkaPositions)
    assert (kafka.topic, kafka.replica) == ("p.positions", f"{socket.gethostname()}-{os.getpid()}")
    monkeypatch.setenv("INLET_REPLICA", "from-env")
    assert replica_name(fleet.fleet) == "from-env"
    assert replica_name(_cfg(tmp_path, group="g", replica="named").fleet) == "named"  # the setting wins


# --- is a supervisor running here? ----------------------------------------------------------------------------


def test_running_holds_the_lock_and_names_the_integrations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert running_supervisor(state) is None and running_here(state) == set()
    with running(state, ["acme/obs", "acme/meters#1"]):
        found = running_supervisor(state)
        assert found is not None and found.pid == os.getpid()
        assert running_here(state) == {"acme/obs", "acme/meters#1"}
        with pytest.raises(ConfigError, match=f"another supervisor \\(pid {os.getpid()}\\)"), running(state, []):
            pass
    assert running_supervisor(state) is None and not (state / "supervisor.json").exists()
    # A JSON left behind by a process that died (kill -9 skips the clean-up) without the lock: nothing runs.
    (state / "supervisor.json").write_bytes(orjson.dumps({"pid": 1, "integrations": ["acme/obs"]}))
    assert running_supervisor(state) is None and running_here(state) == set()


def test_position_record_is_frozen() -> None:
    record = PositionRecord({"n": 1}, "2024-01-01T00:00:00+00:00", None)
    with pytest.raises(AttributeError):
        record.replica = "x"  # type: ignore[misc]


# --- what a position means, for people --------------------------------------------------------------------------


def test_families_say_what_the_next_run_reads() -> None:
    from inlet.connectors.erp_rest.b1 import ErpB1Connector, ErpB1Settings
    from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings
    from inlet.connectors.erp_rest.xero import ErpXeroConnector, ErpXeroSettings
    from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
    from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
    from inlet.core.connector import Connector, IntegrationContext

    ctx = IntegrationContext("acme", "x", zone="Europe/Berlin")
    http: Any = {"base_url": "https://erp.invalid/"}
    bulk = FhirBulkExportConnector(ctx, FhirBulkSettings(http=http))
    assert bulk.describe_position(None) == "kicks off a full export: every resource"
    assert bulk.describe_position({"transaction_time": "T"}) == (
        "kicks off an export of every resource changed since T (_since)"
    )
    assert "at file 2, line 40" in bulk.describe_position(
        {"transaction_time": "T", "export": {"status_url": "u", "file": 2, "line": 40}}
    )
    odata = ErpODataConnector(
        ctx, ErpODataSettings(http=http, entity="salesInvoices", company_id="c", delta="track_changes")
    )
    assert odata.describe_position({"modified_since": "W", "seen": []}) == (
        "re-reads every salesInvoices modified since W less 300 s of overlap (rows delivered are skipped)"
    )
    assert "delta link" in odata.describe_position({"modified_since": "W", "delta_link": "L"})
    xero = ErpXeroConnector(ctx, ErpXeroSettings(http=http, tenant_id="t", since="2024-01-01T00:00:00Z"))
    assert "every Invoices modified since 2024-01-01T00:00:00Z" in xero.describe_position(None)
    b1 = ErpB1Connector(ctx, ErpB1Settings(http=http, entity="Invoices", local_currency="EUR"))
    assert "since the day of W less 300 s" in b1.describe_position({"modified_since": "W"})
    hl7 = Hl7v2Connector(ctx, Hl7v2Settings())
    assert hl7.describe_position({"serials": [1]}) == "senders resend what was not ACKed: a position changes nothing"
    # The default, for a family that says nothing more.
    assert Connector.describe_position(hl7, None) == "reads from the start: no position"
    assert Connector.describe_position(hl7, {"b": 1, "a": [2]}) == 'reads on after {"a":[2],"b":1}'
