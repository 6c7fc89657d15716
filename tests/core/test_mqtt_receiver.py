"""``receiver: process``: the MQTT client in a child process, against a real Mosquitto.

Messages arrive in batches exactly as with the thread (topic, payload, QoS, packet id, receive time), PUBACKs sent
back over the pipe reach the broker (nothing acknowledged comes again), what is not acknowledged is redelivered
after a stop, and a receiver process that dies is a retriable error for the supervisor, not a silent stall.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from inlet.core.connector import IntegrationContext
from inlet.core.errors import ConfigError, UpstreamError
from inlet.core.mqtt import MqttMessage, MqttSettings, MqttSource, create_session, open_source
from inlet.core.mqtt_receiver import ProcessSource, _child_settings, _settings_document
from inlet.core.secrets import known_secrets, mask

pytestmark = [pytest.mark.mqtt]


def _settings(url: str, topic: str, **extra: object) -> MqttSettings:
    return MqttSettings.model_validate(
        {"url": url, "topics": [topic], "receiver": "process", "batch_max": 50, "batch_linger_seconds": 0.01, **extra}
    )


def _publish(url: str, topic: str, count: int) -> None:
    """``count`` QoS 1 messages, returning once the broker acknowledged them all."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(f"{topic}/{i}", f"reading {i}".encode(), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@asynccontextmanager
async def _started(source: ProcessSource) -> AsyncIterator[ProcessSource]:
    await source.start()
    try:
        yield source
    finally:
        await source.stop()


async def _receive(
    source: ProcessSource, count: int, timeout: float = 60, ack: Callable[[MqttMessage], bool] = lambda m: True
) -> list[MqttMessage]:
    """``count`` messages, acknowledging those ``ack`` picks batch by batch (the broker sends at most 20 more than
    were acknowledged: Mosquitto's default window)."""
    got: list[MqttMessage] = []
    async with asyncio.timeout(timeout):
        async for batch in source.batches():
            got += batch
            source.ack([m.mid for m in batch if ack(m)])
            if len(got) >= count:
                return got
    return got


async def test_batches_cross_the_pipe_and_acknowledged_messages_do_not_come_back(mqtt_url: str) -> None:
    topic = f"receiver/{uuid.uuid4().hex[:8]}"
    settings = _settings(mqtt_url, f"{topic}/+")
    client_id = f"inlet-test-{uuid.uuid4().hex[:8]}"
    source = open_source(IntegrationContext("acme", "meters"), settings, client_id)
    assert isinstance(source, ProcessSource)
    create_session(settings, client_id)
    await asyncio.to_thread(_publish, mqtt_url, topic, 120)
    before = datetime.now(UTC)
    async with _started(source):
        assert await asyncio.to_thread(source.connected.wait, 30)
        first = await _receive(source, 120, ack=lambda m: int(m.topic.rsplit("/", 1)[1]) < 100)
        assert sorted(m.payload for m in first) == sorted(f"reading {i}".encode() for i in range(120))
        assert {m.topic for m in first} == {f"{topic}/{i}" for i in range(120)}
        assert {m.qos for m in first} == {1} and len({m.mid for m in first}) == 120
        assert all(before - timedelta(seconds=5) <= m.received_at <= datetime.now(UTC) for m in first)
        assert all(m.received_at.tzinfo is UTC for m in first)
        await asyncio.sleep(1.0)  # the last PUBACKs travel to the child and on to the broker
    # The 20 not acknowledged come back to the same session, and only they.
    again = ProcessSource(settings, client_id)
    async with _started(again):
        redelivered = await _receive(again, 20)
        assert sorted(m.payload for m in redelivered) == sorted(f"reading {i}".encode() for i in range(100, 120))
        await asyncio.sleep(1.0)
        with pytest.raises(TimeoutError):
            await _receive(again, 1, timeout=2)


async def test_a_receiver_process_that_dies_is_a_retriable_error(mqtt_url: str) -> None:
    settings = _settings(mqtt_url, f"receiver/{uuid.uuid4().hex[:8]}/+")
    source = ProcessSource(settings, f"inlet-test-{uuid.uuid4().hex[:8]}")
    async with _started(source):
        assert await asyncio.to_thread(source.connected.wait, 30)
        assert source._process is not None
        os.kill(source._process.pid, signal.SIGKILL)
        with pytest.raises(UpstreamError, match="MQTT receiver process ended"):
            await _receive(source, 1, timeout=30)
        assert UpstreamError.retriable
        assert not source.connected.is_set()


def test_the_receiver_gets_the_same_settings_and_fails_as_early_as_the_thread(mqtt_url: str) -> None:
    """Bad settings fail in the supervisor's process at once, as with the thread; secrets reach the child whole
    (over its private pipe) and nothing else changes but where the client runs."""
    with pytest.raises(ConfigError, match="expected mqtt://host:port") as thread_error:
        MqttSource(MqttSettings.model_construct(url="http://x", topics=["t"]), "c")
    with pytest.raises(ConfigError) as process_error:
        ProcessSource(MqttSettings.model_construct(url="http://x", topics=["t"], receiver="process"), "c")
    assert str(process_error.value) == str(thread_error.value)
    settings = _settings(mqtt_url, "t/+", username="meter", password=SecretStr("s3cret"), keepalive_seconds=17)
    document = json.loads(_settings_document(settings, "client-7"))
    child = _child_settings(document)
    assert child.password is not None and child.password.get_secret_value() == "s3cret"
    assert child.model_dump(exclude={"password", "receiver"}) == settings.model_dump(exclude={"password", "receiver"})
    assert child.receiver == "thread" and document["client_id"] == "client-7"
    assert "s3cret" in known_secrets() and mask("password s3cret") == "password ***"  # masked in the child's logs
