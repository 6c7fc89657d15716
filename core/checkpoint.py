"""The checkpoint store: the last committed source position of every integration.

A position is written only after the sink acknowledged every event up to it (the pipeline
guarantees the order), as one upsert in its own transaction, so after a crash the store holds either
the old or the new position — never one ahead of what the sink has.

It is the embedded :class:`~inlet.core.positions.PositionStore`; a fleet keeps positions in Kafka instead
(:mod:`inlet.core.positions`).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import orjson

from inlet.core.positions import PositionRecord, PositionStore
from inlet.core.sqlite import SqliteStore
from inlet.core.types import Position

__all__ = ["CheckpointStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    customer    TEXT NOT NULL,
    integration TEXT NOT NULL,
    position    TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (customer, integration)
);
"""


class CheckpointStore(PositionStore):
    """Positions by (customer, integration) in ``<state dir>/checkpoints.sqlite``."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteStore(path, _SCHEMA)

    @staticmethod
    def _get(conn: sqlite3.Connection, customer: str, integration: str) -> Position | None:
        row = conn.execute(
            "SELECT position FROM checkpoints WHERE customer=? AND integration=?", (customer, integration)
        ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    async def start(self) -> None:
        """Nothing to connect: the file is opened on first use."""

    async def load(self, customer: str, integration: str) -> Position | None:
        """The committed position, or None before the first commit."""
        return await self._db.acall(lambda c: self._get(c, customer, integration))

    def load_sync(self, customer: str, integration: str) -> Position | None:
        """Same as :meth:`load`, for the CLI."""
        return self._db.call(lambda c: self._get(c, customer, integration))

    async def save(self, customer: str, integration: str, position: Position) -> None:
        """Commit a position (durable when this returns)."""
        doc = orjson.dumps(position, option=orjson.OPT_SORT_KEYS).decode()
        now = datetime.now(UTC).isoformat()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?) ON CONFLICT(customer, integration) "
                "DO UPDATE SET position=excluded.position, updated_at=excluded.updated_at",
                (customer, integration, doc, now),
            )

        await self._db.acall(write)

    async def reset(self, customer: str, integration: str) -> None:
        """Forget the position (durable when this returns): the next run reads from the connector's beginning."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM checkpoints WHERE customer=? AND integration=?", (customer, integration))

        await self._db.acall(delete)

    async def snapshot(self) -> dict[str, PositionRecord]:
        """Every stored position, keyed ``customer/integration``; ``replica`` is None (one supervisor owns the file)."""

        def read(conn: sqlite3.Connection) -> dict[str, PositionRecord]:
            rows = conn.execute(
                "SELECT customer, integration, position, updated_at FROM checkpoints ORDER BY customer, integration"
            ).fetchall()
            return {f"{c}/{i}": PositionRecord(dict(orjson.loads(p)), u, None) for c, i, p, u in rows}

        return await self._db.acall(read)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    async def aclose(self) -> None:
        """:meth:`close`, for the :class:`PositionStore` interface."""
        self.close()
