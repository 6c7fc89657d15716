"""Shared pytest fixtures.

Real services (docs/development.md, "The test command"): Kafka and Mosquitto are started from tools.services the
first time a test asks for them, or taken from ``INLET_KAFKA_BOOTSTRAP`` / ``INLET_MQTT_URL`` (docker compose,
a broker started with ``python -m tools.services kafka``). A service that cannot start fails the test that
needs it, never skips it: a silently skipped integration test is how lost messages reach production.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.sinks.outbox import OutboxSink
from inlet.core.supervisor import Supervisor
from tests.secure_kafka import Pki, make_pki, secure_broker
from tools.servers import sample_data_dir
from tools.services import KafkaBroker, Mosquitto, ServiceError

_Service = TypeVar("_Service", KafkaBroker, Mosquitto)


class _AsyncClosable(Protocol):
    async def aclose(self) -> None: ...


_Closable = TypeVar("_Closable", bound=_AsyncClosable)

# --- real services and sample data ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs the CLI in-process configures structlog for the whole process (a level filter, a
    renderer): put the configuration back, so the next test's ``capture_logs`` sees every level again."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka broker shared by the whole session; topics must be unique per test."""
    if bootstrap := os.environ.get("INLET_KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    with _started(KafkaBroker(fast_jit=True)) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """``mqtt://host:port`` of a Mosquitto shared by the whole session (no persistence)."""
    if url := os.environ.get("INLET_MQTT_URL"):
        yield url
        return
    with _started(Mosquitto()) as mosquitto:
        yield mosquitto.url


@pytest.fixture
def kafka_broker_factory() -> Iterator[Callable[..., KafkaBroker]]:
    """Start a dedicated KafkaBroker (KafkaBroker's keyword arguments) for a test that stops or restarts it.

    Every broker made is closed, and its data deleted, when the test ends.
    """
    with ExitStack() as stack:

        def make(**kwargs: Any) -> KafkaBroker:
            kwargs.setdefault("fast_jit", True)
            return stack.enter_context(_started(KafkaBroker(**kwargs)))

        yield make


@pytest.fixture(scope="session")
def kafka_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates of :func:`secure_kafka` and its clients (``tests.secure_kafka``)."""
    return make_pki(tmp_path_factory.mktemp("kafka-pki"))


@pytest.fixture(scope="session")
def secure_kafka(kafka_pki: Pki) -> Iterator[KafkaBroker]:
    """A broker with SASL_SSL (SCRAM-SHA-512, OAUTHBEARER), mutual-TLS and expired-certificate listeners, shared by
    the session (``tests.secure_kafka``); topics must be unique per test."""
    with _started(secure_broker(kafka_pki)) as broker:
        yield broker


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., Mosquitto]]:
    """Start a dedicated Mosquitto, persistence on by default, so that restart() keeps sessions and queues."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> Mosquitto:
            kwargs.setdefault("persistence", True)
            return stack.enter_context(_started(Mosquitto(**kwargs)))

        yield make


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The third-party sample data (read in place, never copied): fails in CI when missing, else skips."""
    path = sample_data_dir()
    if not path.is_dir():
        reason = f"third-party sample data not found at {path} (set INLET_SAMPLE_DATA)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


@contextmanager
def _started(service: _Service) -> Iterator[_Service]:
    """Start `service` or fail the test that needs it; close it (and delete its data) at the end."""
    try:
        service.start()
    except ServiceError as exc:
        service.close()
        # `from None`: the ServiceError already says what failed and how to fix it.
        raise pytest.fail.Exception(f"could not start {service.name}: {exc}", pytrace=False) from None
    try:
        yield service
    finally:
        service.close()


# --- stores, sinks and broker clients that close themselves -----------------------------------------------
# Each is a fixture, so what a test opens is closed (stopped) in teardown even when an assertion fails first;
# a test may still close one itself (every close here is idempotent). Factories, so a test opens as many as
# it needs: e.g. ``store = checkpoint_stores(tmp_path / "a.sqlite")``, ``consumer = await kafka_consumer(...)``.


@pytest.fixture
def checkpoint_stores() -> Iterator[Callable[[Path], CheckpointStore]]:
    """Open a :class:`CheckpointStore` at a path; every store opened is closed when the test ends."""
    stores: list[CheckpointStore] = []

    def make(path: Path) -> CheckpointStore:
        store = CheckpointStore(path)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def checkpoint_store(checkpoint_stores: Callable[[Path], CheckpointStore], tmp_path: Path) -> CheckpointStore:
    """A :class:`CheckpointStore` at ``tmp_path / "cp.sqlite"``, closed when the test ends."""
    return checkpoint_stores(tmp_path / "cp.sqlite")


@pytest.fixture
async def outbox_sinks() -> AsyncIterator[Callable[..., OutboxSink]]:
    """Make an :class:`OutboxSink` (``OutboxSink``'s arguments; not started); every one is stopped at the end."""
    sinks: list[OutboxSink] = []

    def make(path: Path, **kwargs: Any) -> OutboxSink:
        sink = OutboxSink(path, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.stop()


@pytest.fixture
async def aclosing() -> AsyncIterator[Callable[[_Closable], _Closable]]:
    """``http = aclosing(HttpClient(...))``: anything with ``async aclose()`` (an ``HttpClient``, an
    ``httpx.AsyncClient``) is closed when the test ends; returns its argument."""
    opened: list[_AsyncClosable] = []

    def register(client: _Closable) -> _Closable:
        opened.append(client)
        return client

    yield register
    for client in reversed(opened):
        await client.aclose()


@pytest.fixture
async def run_supervisor() -> AsyncIterator[Callable[[Supervisor], asyncio.Task[Any]]]:
    """``run = run_supervisor(supervisor)``: ``supervisor.run()`` as a task (its result the per-integration
    stats); when the test ends, a task still running is stopped (``supervisor.stop()``, 30 s to drain, then
    cancelled), so a failed assertion does not leave a supervisor polling on."""
    running: list[tuple[Supervisor, asyncio.Task[Any]]] = []

    def start(supervisor: Supervisor) -> asyncio.Task[Any]:
        task = asyncio.create_task(supervisor.run())
        running.append((supervisor, task))
        return task

    yield start
    for supervisor, task in running:
        if not task.done():
            supervisor.stop()
            await asyncio.wait({task}, timeout=30)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved, so it is not logged again: the test's own failure is the report


@pytest.fixture
async def kafka_sinks() -> AsyncIterator[Callable[[KafkaSettings], KafkaSink]]:
    """Make a :class:`KafkaSink` (not started); every one is stopped (its producer closed) when the test ends."""
    sinks: list[KafkaSink] = []

    def make(settings: KafkaSettings) -> KafkaSink:
        sink = KafkaSink(settings)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.stop()


@pytest.fixture
async def kafka_consumer() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await kafka_consumer(*topics, bootstrap_servers=..., **options)``: a started ``AIOKafkaConsumer``
    (``group_id=None``, no auto commit unless given); every one is stopped when the test ends."""
    consumers: list[Any] = []

    async def make(*topics: str, **options: Any) -> Any:
        options.setdefault("group_id", None)
        options.setdefault("enable_auto_commit", False)
        consumer = AIOKafkaConsumer(*topics, **options)
        consumers.append(consumer)  # before start(): a start that fails half-way is stopped too
        await consumer.start()
        return consumer

    yield make
    for consumer in consumers:
        await consumer.stop()


@pytest.fixture
async def kafka_producer() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await kafka_producer(bootstrap_servers=..., **options)``: a started ``AIOKafkaProducer``; every one is
    stopped when the test ends."""
    producers: list[Any] = []

    async def make(**options: Any) -> Any:
        producer = AIOKafkaProducer(**options)
        producers.append(producer)
        await producer.start()
        return producer

    yield make
    for producer in producers:
        await producer.stop()


@pytest.fixture
async def kafka_admin() -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """``await kafka_admin(bootstrap)``: a started ``AIOKafkaAdminClient``; every one is closed when the test ends."""
    admins: list[Any] = []

    async def make(bootstrap: str) -> Any:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        admins.append(admin)  # before start(): closing one whose start failed is safe
        await admin.start()
        return admin

    yield make
    for admin in admins:
        await admin.close()


# --- fixtures of other areas go below this line ------------------------------------------------------------
