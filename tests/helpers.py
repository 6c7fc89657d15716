"""Small test doubles and helpers shared by tests (functions and plain classes, no mocking library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from contracts.base import Contract
from contracts.clinical_observation import ObservationV1
from core.connector import Batch, Connector, IntegrationContext, NoSettings
from core.envelope import Event
from core.errors import DecodeError, MappingError
from core.sinks import Sink
from core.types import Position


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
        return [ObservationV1.model_validate({
            "observation_id": record["id"], "patient_id": record.get("patient", "p1"),
            "status": record.get("status", "final"),
            "code": [{"system": "http://loinc.org", "code": "8302-2"}],
            "effective_start": datetime(2024, 1, 1, tzinfo=UTC),
        })]

    async def acknowledge(self, position: Position) -> None:
        self.acknowledged.append(position)


class GatedSink(Sink):
    """Holds every batch's acknowledgement until the test releases it (or fails it)."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, events: Sequence[Event]) -> Awaitable[None]:
        self.batches.append(list(events))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(fut)
        return fut
