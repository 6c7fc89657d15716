"""One way to open the SQLite files inlet keeps (outbox, checkpoints): WAL, full sync, one writer thread.

SQLite calls block, so each store owns a single-thread executor and runs every statement there: the
event loop never waits on an fsync, and the connection is only ever used from that one thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = ["SqliteStore"]

T = TypeVar("T")


class SqliteStore:
    """A SQLite database file in WAL mode with ``synchronous=FULL``: a commit is on disk when it returns."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(self._schema)
            self._conn = conn
        return self._conn

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` synchronously on the store's thread (for CLI and start-up paths)."""
        return self._executor.submit(lambda: fn(self._connect())).result()

    async def acall(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store's thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._connect()))

    def close(self) -> None:
        """Close the connection and the thread; idempotent (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
