"""Small test doubles and helpers shared by tests (functions and plain classes, no mocking library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml

from inlet.contracts.base import Contract
from inlet.contracts.clinical_observation import ObservationV1
from inlet.core import envelope as envelope_module
from inlet.core.connector import Batch, Connector, IntegrationContext, NoSettings
from inlet.core.envelope import Event
from inlet.core.errors import DecodeError, MappingError
from inlet.core.sinks import Rejected, Sink
from inlet.core.types import Position


@contextmanager
def python_envelopes() -> Iterator[None]:
    """Within: ``Enveloper.envelope`` is its Python twin and event values are pydantic's ``to_json``, not the
    compiled helpers (core/_speedups.c). The fast-path tests envelope their checked side so, which proves the
    compiled envelope and dump on their generated and real feeds."""
    before = envelope_module._compiled_envelope, envelope_module._compiled_dump
    envelope_module._compiled_envelope = envelope_module._compiled_dump = None
    try:
        yield
    finally:
        envelope_module._compiled_envelope, envelope_module._compiled_dump = before


class ListConnector(Connector[NoSettings]):
    """Yields the given batches of dicts; ``{"bad": "decode"}`` / ``"map"`` / ``"bug"`` fail on purpose."""

    contracts: ClassVar[tuple[type[Contract], ...]] = (ObservationV1,)

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        super().__init__(IntegrationContext("acme", "obs"), NoSettings())
        self.batches = batches
        self.acknowledged: list[Position] = []

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        start = int((position or {}).get("batch", -1)) + 1
        for i in range(start, len(self.batches)):
            await asyncio.sleep(0)
            yield Batch(self.batches[i], {"batch": i})

    def decode(self, raw: Any) -> Any:
        if raw.get("bad") == "decode":
            raise DecodeError("not JSON: b'{oops'")
        return raw

    def filter(self, record: dict[str, Any]) -> str | None:
        return "test filter" if record.get("skip") else None

    def identity(self, record: dict[str, Any]) -> tuple[str, str]:
        return f"Observation/{record.get('id')}", "1"

    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        if record.get("bad") == "map":
            raise MappingError("unsupported value type valueFoo")
        if record.get("bad") == "bug":
            raise KeyError("plugin bug")
        return [
            ObservationV1.model_validate(
                {
                    "observation_id": record["id"],
                    "patient_id": record.get("patient", "p1"),
                    "status": record.get("status", "final"),
                    "code": [{"system": "http://loinc.org", "code": "8302-2"}],
                    "effective_start": datetime(2024, 1, 1, tzinfo=UTC),
                }
            )
        ]

    async def acknowledge(self, position: Position) -> None:
        self.acknowledged.append(position)


class GatedSink(Sink):
    """Holds each batch's acknowledgement until the test releases it (``set_result([])``: none refused) or fails it."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.acks: list[asyncio.Future[Sequence[Rejected]]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        self.batches.append(list(events))
        fut: asyncio.Future[Sequence[Rejected]] = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut


# --- config directories and Kafka read-back -------------------------------------------------------------


def write_kafka_config(root: Path, *, kafka: str, prefix: str, integration: dict[str, Any]) -> Path:
    """A config directory with one integration writing to Kafka under topic prefix ``prefix`` (DLQ ``<prefix>dlq``)
    and restarting quickly: what the kill -9 tests run as a supervisor process."""
    (root / "integrations").mkdir(parents=True, exist_ok=True)
    sup = {
        "state_dir": str(root / "state"),
        "restart_backoff_initial_seconds": 0.2,
        "topic_template": prefix + "{name}.v{major}",
        "dlq_topic_template": prefix + "dlq",
        "kafka": {"bootstrap": kafka, "request_timeout_ms": 5000},
    }
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    (root / "integrations" / f"{integration['integration']}.yaml").write_text(yaml.safe_dump(integration))
    return root


def write_config(
    root: Path,
    *,
    base_url: str,
    kafka: str | None = None,
    topic_prefix: str = "",
    plugin: str = "fhir.observation_search",
    page_size: int = 100,
    zone: str = "Europe/Berlin",
    poll_interval_seconds: float = 0.5,
    backoff_seconds: float = 0.2,
    http: dict[str, Any] | None = None,
) -> Path:
    """A config directory with one FHIR search integration (``acme/observations``) for tests."""
    (root / "integrations").mkdir(parents=True, exist_ok=True)
    sup: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "restart_backoff_initial_seconds": backoff_seconds,
        "restart_backoff_max_seconds": max(backoff_seconds, 2.0),
        "topic_template": topic_prefix + "{name}.v{major}",
        "dlq_topic_template": topic_prefix + "inlet.dlq.{customer}.{integration}",
    }
    if kafka:
        sup["kafka"] = {"bootstrap": kafka, "request_timeout_ms": 5000}
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    integration = {
        "customer": "acme",
        "integration": "observations",
        "plugin": plugin,
        "zone": zone,
        "poll_interval_seconds": poll_interval_seconds,
        "settings": {
            "page_size": page_size,
            "http": {"base_url": base_url, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5, **(http or {})},
        },
    }
    (root / "integrations" / "acme.yaml").write_text(yaml.safe_dump(integration))
    return root


async def consume(
    bootstrap: str,
    topics: list[str],
    *,
    expect: int | None = None,
    idle: float = 3.0,
    timeout: float = 90.0,
    until: Callable[[list[Any]], bool] | None = None,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record on ``topics`` from the beginning: until ``expect`` are read (or ``until(records)`` holds),
    or, with neither given, until ``idle`` seconds bring nothing new."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    try:
        await consumer.start()  # inside the try: a start that fails half-way is closed too
        deadline = loop.time() + timeout
        last = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            got = [r for records in batch.values() for r in records]
            out.extend(got)
            now = loop.time()
            if got:
                last = now
            if (expect is not None and len(out) >= expect) or (until is not None and got and until(out)):
                break
            if expect is None and until is None and now - last > idle:
                break
    finally:
        await consumer.stop()
    return out


def header_map(record: Any) -> dict[str, bytes]:
    """A Kafka record's headers as a dict (CloudEvents headers are unique)."""
    return dict(record.headers)


def start_supervisor(
    root: Path, *, once: bool = False, log_level: str = "warning", env: dict[str, str] | None = None
) -> Any:
    """``inlet run`` on config ``root`` as its own process (for kill -9 tests); log in ``root/supervisor.log``;
    ``env``: variables to add (``INLET_FAILPOINT``)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "INLET_LOG_FORMAT": "json", "INLET_LOG_LEVEL": log_level, **(env or {})}
    args = [sys.executable, "-m", "inlet", "run", "--config", str(root), *(["--once"] if once else [])]
    with (root / "supervisor.log").open("ab") as log:
        return subprocess.Popen(
            args, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL, stderr=log
        )


def supervisor_log(root: Path) -> str:
    """The tail of ``root/supervisor.log``, for assertion messages."""
    return (root / "supervisor.log").read_text()[-3000:]


def read_checkpoint(root: Path) -> dict[str, Any] | None:
    """The one committed position in ``root/state/checkpoints.sqlite``, read as an outside observer would:
    a plain read-only query while the supervisor may be writing (None before the first commit)."""
    import sqlite3

    import orjson

    path = root / "state" / "checkpoints.sqlite"
    if not path.exists():
        return None
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT position FROM checkpoints").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return None if row is None else dict(orjson.loads(row[0]))


async def owners_when(cfg: Any, done: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str]:
    """A fleet's owners (unit → replica, ``core.fleet.owners``) once ``done(owners)`` holds, or as last seen
    when ``timeout`` seconds have passed (the caller asserts what it needs)."""
    import time

    from inlet.core.fleet import owners

    deadline = time.monotonic() + timeout
    while True:
        seen = await owners(cfg)
        if done(seen) or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.25)
