"""The embedded default sink: a SQLite outbox in WAL mode, for running inlet without Kafka.

Each batch is one transaction, so a batch is either wholly in the outbox or not at all; the
pipeline commits the source position only after that transaction. ``inlet events tail`` reads it.
:mod:`inlet.core.relay` ships it to Kafka in ``seq`` order; its watermark lives in the ``relay_shipped`` table,
which the sink never writes (the write path is one INSERT per event, as without a relay).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from inlet.core.envelope import Event
from inlet.core.errors import SinkUnavailable
from inlet.core.sinks import Rejected, Sink, reject_oversized
from inlet.core.sqlite import SqliteStore

__all__ = ["OutboxRow", "OutboxSink", "open_outbox", "read_outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic    TEXT NOT NULL,
    key      BLOB,
    value    BLOB NOT NULL,
    headers  TEXT NOT NULL,
    at       REAL
);
CREATE INDEX IF NOT EXISTS events_topic ON events(topic, seq);
-- The relay's shipped-up-to watermark (core.relay): every events row with seq <= upto was acknowledged by Kafka,
-- at acked_at (unix seconds) at the latest; the watermark is MAX(upto). A row is one mark: the newest is moved
-- forward until it is older (opened_at) than a hundredth of the retention, then a new one is opened, so pruning
-- knows when each shipped row was acknowledged without a column in events. Created on every open: an outbox file
-- from before the relay is migrated by opening it (no mark: nothing shipped yet).
CREATE TABLE IF NOT EXISTS relay_shipped (
    upto      INTEGER PRIMARY KEY,
    acked_at  REAL NOT NULL,
    opened_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxRow:
    """One stored event, as ``inlet events tail`` shows it."""

    seq: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


MAX_EVENT_BYTES = 1_000_000_000
"""SQLite's default limit of one string or blob (SQLITE_MAX_LENGTH): a larger value cannot be stored at all."""


class OutboxSink(Sink):
    """Writes events to ``<state dir>/outbox.sqlite``.

    An event whose value is over ``max_event_bytes`` (default: what SQLite can store) is refused and reported
    (a DLQ record at stage ``sink``) instead of failing its whole batch's transaction again on every retry.
    """

    def __init__(self, path: Path, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.path = path
        self.max_event_bytes = max_event_bytes
        self._db: SqliteStore | None = None

    async def start(self) -> None:
        if self._db is None:
            self._db = SqliteStore(self.path, _SCHEMA)
            await self._db.acall(_add_write_time)  # open and create the schema now, not on first batch

    async def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        if self._db is None:
            await self.start()
        assert self._db is not None
        refused = reject_oversized(events, self.max_event_bytes, "the outbox")
        if refused:
            skip = {r.index for r in refused}
            events = [e for i, e in enumerate(events) if i not in skip]
        now = time.time()
        rows = [
            (
                e.id,
                e.topic,
                e.key,
                e.value,
                orjson.dumps({k: v.decode("utf-8", "replace") for k, v in e.headers}).decode(),
                now,
            )
            for e in events
        ]

        def write(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction per batch
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO events (event_id, topic, key, value, headers, at) VALUES (?, ?, ?, ?, ?, ?)", rows
                )

        try:
            if rows:  # a batch with no event (a poll that found only what it had delivered): nothing to write
                await self._db.acall(write)
        except sqlite3.Error as exc:
            raise SinkUnavailable(f"outbox {self.path}: {exc}") from exc
        done: asyncio.Future[Sequence[Rejected]] = asyncio.get_running_loop().create_future()
        done.set_result(refused)
        return done


def _add_write_time(conn: sqlite3.Connection) -> None:
    """Migrate an outbox file from before the ``at`` column (when a row was written, unix seconds: what
    ``inlet dlq list --since`` selects on); its older rows keep no time (NULL)."""
    if "at" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}:
        conn.execute("ALTER TABLE events ADD COLUMN at REAL")


def open_outbox(path: Path) -> SqliteStore:
    """The outbox database with its schema (created or migrated on first use), for the relay."""
    return SqliteStore(path, _SCHEMA)


def read_outbox(path: Path, *, limit: int = 20, topic: str | None = None, after: int = 0) -> list[OutboxRow]:
    """The last ``limit`` events (or those after ``seq`` ``after``), oldest first."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        where, args = "WHERE seq > ?", [after]
        if topic:
            where += " AND topic = ?"
            args.append(topic)  # type: ignore[arg-type]
        order = "ASC" if after else "DESC"
        try:
            rows = conn.execute(
                f"SELECT seq, event_id, topic, key, value, headers FROM events {where} ORDER BY seq {order} LIMIT ?",
                (*args, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created but not yet initialised by a starting supervisor
                return []
            raise
    finally:
        conn.close()
    out = [OutboxRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]
    return out if after else out[::-1]
