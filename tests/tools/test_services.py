"""Smoke tests of the real brokers the suite runs against (tools/services.py, tests/conftest.py).

If these fail, every integration test would fail for a reason that has nothing to do with inlet; they also
prove the two behaviours later tests lean on: Kafka keeps its data across a restart, and Mosquitto keeps a
persistent session's QoS 1 backlog across one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from tools.services import KafkaBroker, Mosquitto

HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"3f1c"), ("content-type", b"application/json")]


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()  # inside the try: a start that fails half-way is closed too
        for value in values:
            await producer.send_and_wait(topic, value, key=b"meter-1", headers=HEADERS)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    records: list[Any] = []
    try:
        await consumer.start()  # inside the try: a start that fails half-way is closed too
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka
async def test_kafka_round_trip_keeps_key_value_and_headers(kafka_bootstrap: str) -> None:
    topic = f"inlet.smoke.{uuid.uuid4().hex}"
    await _produce(kafka_bootstrap, topic, [b'{"kwh": 1.5}'])

    [record] = await _consume(kafka_bootstrap, topic, 1)

    assert (record.key, record.value, list(record.headers)) == (b"meter-1", b'{"kwh": 1.5}', HEADERS)


@pytest.mark.kafka
@pytest.mark.slow
async def test_kafka_restart_keeps_ports_and_messages(
    kafka_broker_factory: Callable[..., KafkaBroker],
) -> None:
    broker = kafka_broker_factory()
    bootstrap, topic = broker.bootstrap, f"inlet.smoke.{uuid.uuid4().hex}"
    await _produce(bootstrap, topic, [b"1", b"2", b"3"])

    broker.stop()
    assert not broker.running
    broker.start()

    assert broker.bootstrap == bootstrap
    assert [r.value for r in await _consume(bootstrap, topic, 3)] == [b"1", b"2", b"3"]


@contextmanager
def _mqtt_client(
    url: str, on_message: Callable[[mqtt.MQTTMessage], None] | None = None, **kwargs: Any
) -> Iterator[mqtt.Client]:
    """A connected paho client with its network loop in a thread; disconnected at the end."""
    address = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    if on_message:
        client.on_message = lambda _client, _userdata, message: on_message(message)
    client.connect(address.hostname or "127.0.0.1", address.port or 1883)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK from the broker"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mqtt
def test_mqtt_qos1_round_trip(mqtt_url: str) -> None:
    topic = f"inlet/smoke/{uuid.uuid4().hex}"
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    with _mqtt_client(mqtt_url, received.put) as subscriber, _mqtt_client(mqtt_url) as publisher:
        _subscribe(subscriber, topic)
        publisher.publish(topic, b'{"power": 230}', qos=1).wait_for_publish(10)

        message = received.get(timeout=10)

    assert (message.topic, message.payload, message.qos) == (topic, b'{"power": 230}', 1)


@pytest.mark.mqtt
def test_mosquitto_restart_keeps_a_persistent_session_backlog(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    broker = mosquitto_factory()
    topic, client_id = f"inlet/smoke/{uuid.uuid4().hex}", f"inlet-smoke-{uuid.uuid4().hex[:8]}"
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    session: dict[str, Any] = {"client_id": client_id, "clean_session": False}
    with _mqtt_client(broker.url, **session) as subscriber:
        _subscribe(subscriber, topic)
    with _mqtt_client(broker.url) as publisher:  # the subscriber is offline: the broker queues these
        for n in range(3):
            publisher.publish(topic, str(n).encode(), qos=1).wait_for_publish(10)

    broker.restart()

    with _mqtt_client(broker.url, received.put, **session):
        payloads = [received.get(timeout=10).payload for _ in range(3)]
    assert payloads == [b"0", b"1", b"2"]


def _subscribe(client: mqtt.Client, topic: str) -> None:
    granted = threading.Event()
    client.on_subscribe = lambda *_: granted.set()
    client.subscribe(topic, qos=1)
    assert granted.wait(10), "no SUBACK from the broker"
