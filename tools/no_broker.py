"""A message source that never connects: an MQTT connector decoding messages handed to it directly.

The meter connectors take their broker client from ``IntegrationContext.message_source``; tests of the decoders'
fast paths, the benchmark's pure-CPU pass and the monitors' replay corpus give them this one, which starts, stops
and acknowledges nothing and yields no batches, so ``decode`` / ``map`` run without Mosquitto.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inlet.core.mqtt import MqttMessage

__all__ = ["NoBroker", "no_broker"]


class NoBroker:
    """Starts, stops and acknowledges nothing; yields no batches."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def batches(self) -> AsyncIterator[list[MqttMessage]]:
        return
        yield

    def ack(self, mids: list[int]) -> None:
        return None


def no_broker(settings: Any, client_id: str) -> NoBroker:
    """A ``message_source`` for ``IntegrationContext``: the same signature as the real one."""
    return NoBroker()
