"""Fixtures of the MQTT meter tests: publishing clients that disconnect themselves."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion


@pytest.fixture
def mqtt_clients() -> Iterator[Callable[..., mqtt.Client]]:
    """``client = mqtt_clients(url, on_publish=...)``: a paho client (callback API 2, a client id of its own)
    connected to ``mqtt://host:port``, its network loop started; every one is disconnected and its loop stopped
    when the test ends (both idempotent, so a test may still disconnect one itself)."""
    clients: list[mqtt.Client] = []

    def connect(url: str, *, on_publish: Callable[..., Any] | None = None) -> mqtt.Client:
        host, port = url.removeprefix("mqtt://").split(":")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
        if on_publish is not None:
            client.on_publish = on_publish
        clients.append(client)  # before connect(): one whose connect failed is cleaned up too
        client.connect(host, int(port))
        client.loop_start()
        return client

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()
