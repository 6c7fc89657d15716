"""Type aliases of inlet's extension points, in one place (after structlog's ``typing.py``)."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Headers", "JSONValue", "Position", "RawRecord"]

JSONValue: TypeAlias = Any
"""A value orjson can serialise: dict / list / str / int / float / bool / None."""

Position: TypeAlias = dict[str, JSONValue]
"""An integration's opaque, JSON-serialisable source position (watermark, cursor, offsets)."""

RawRecord: TypeAlias = Any
"""One record as read(): decoded JSON (dict) or raw bytes the connector decodes itself."""

Headers: TypeAlias = list[tuple[str, bytes]]
"""Kafka record headers, in order."""
