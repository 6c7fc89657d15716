"""How every Kafka client of inlet is built from :class:`~inlet.core.config.KafkaSettings`.

The sink's producer, the topic administration (``inlet topics``) and the outbox relay all connect with the
same options, so a security setting (TLS, SASL) added here reaches each of them; nothing else constructs an
aiokafka client's connection options by hand.
"""

from __future__ import annotations

from typing import Any

from inlet.core.config import KafkaSettings

__all__ = ["connection_options"]


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, admin, consumer): where and how to connect."""
    return {"bootstrap_servers": settings.bootstrap, "client_id": settings.client_id,
            "request_timeout_ms": settings.request_timeout_ms}
