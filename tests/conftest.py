"""Shared pytest fixtures.

Real services (DESIGN.md, "Real components in tests"): Kafka and Mosquitto are started from tools.services the
first time a test asks for them, or taken from ``INLET_KAFKA_BOOTSTRAP`` / ``INLET_MQTT_URL`` (docker compose,
a broker started with ``python -m tools.services kafka``). A service that cannot start fails the test that
needs it, never skips it: a silently skipped integration test is how lost messages reach production.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.secure_kafka import Pki, make_pki, secure_broker
from tools.servers import sample_data_dir
from tools.services import KafkaBroker, Mosquitto, ServiceError

_Service = TypeVar("_Service", KafkaBroker, Mosquitto)

# --- real services and sample data ---------------------------------------------------------------------


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


# --- fixtures of other areas go below this line ------------------------------------------------------------
