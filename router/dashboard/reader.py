"""Read-only queries on the inference-log database, for the dashboard.

The dashboard never writes there: the SQLite file is opened without creating it and with
``query_only``; PostgreSQL sessions are read-only. Every query is bounded in time (SQLite:
interrupted after ``timeout_s``; PostgreSQL: ``statement_timeout``) and runs off the event
loop (SQLite: one dedicated thread; PostgreSQL: an async connection). SQL is written once
with ``?`` placeholders. What is not there yet (no log written, no drift tables) reads as
absent (:meth:`LogReader.has_table`); a database that cannot be read raises
:class:`~ground.errors.LogStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.log.rows import as_utc

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
_PG_UNAVAILABLE = (psycopg.Error, OSError, TimeoutError)


class LogReader(ABC):
    """Read access to the inference-log database (see the module docstring)."""

    name = "abstract"

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """The rows of one query (``?`` placeholders)."""

    @abstractmethod
    async def has_table(self, table: str) -> bool:
        """Whether ``table`` exists (False when the database itself does not exist yet)."""

    @abstractmethod
    def ts(self, value: datetime) -> Any:
        """A timestamp as this database compares it."""

    @abstractmethod
    def feature(self, path: str) -> tuple[str, Any]:
        """The SQL expression (one ``?``) and its argument reading ``input_features`` at
        the dotted ``path`` as text."""

    @abstractmethod
    def bucket(self, since: datetime, bucket_s: int) -> tuple[str, list[Any]]:
        """The SQL expression and its arguments numbering ``served_at``'s time bucket:
        0 for ``[since, since + bucket_s)``, 1 for the next, ..."""

    @abstractmethod
    async def close(self) -> None: ...


class SqliteReader(LogReader):
    """The embedded log (``<home>/log/inference.db``), read on one dedicated thread."""

    name = "sqlite"

    def __init__(self, path: Path, *, timeout_s: float = 5.0, busy_ms: int = 2000) -> None:
        self.path = path
        self._timeout = timeout_s
        self._busy_ms = busy_ms
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-sqlite")

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        return await self._call(lambda c: c.execute(sql, tuple(args)).fetchall())

    async def has_table(self, table: str) -> bool:
        if not self.path.is_file():
            return False
        rows = await self.fetch(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
        return bool(rows)

    def ts(self, value: datetime) -> str:
        return as_utc(value).isoformat(timespec="microseconds")

    def feature(self, path: str) -> tuple[str, Any]:
        parts = "".join(f'."{p.replace(chr(34), "")}"' for p in path.split("."))
        return "json_extract(input_features, ?)", f"${parts}"

    def bucket(self, since: datetime, bucket_s: int) -> tuple[str, list[Any]]:
        # whole milliseconds first (julianday is a float of days), then integer division
        sql = "CAST(ROUND((julianday(served_at) - julianday(?)) * 86400000.0) AS INTEGER) / ?"
        return sql, [self.ts(since), int(bucket_s * 1000)]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._disconnect)
        self._pool.shutdown(wait=True)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._run, fn)
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            conn = self._conn
            if conn is not None:
                conn.interrupt()  # the thread's statement stops; the next call reconnects
            raise LogStoreUnavailable(
                f"inference log at {self.path}: query took over {self._timeout}s"
            ) from None

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._connect())
        except sqlite3.Error as exc:  # locked, interrupted, not a database, ...
            self._disconnect()
            raise LogStoreUnavailable(f"inference log at {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.is_file():
                raise LogStoreUnavailable(f"no inference log at {self.path} yet")
            # mode=rw: never create the file; query_only: never write to it
            uri = f"{self.path.resolve().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute("PRAGMA query_only = ON")
            self._conn = conn
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class PostgresReader(LogReader):
    """The PostgreSQL log (``DATABASE_URL``): one read-only connection, re-opened after a
    connection error."""

    name = "postgres"

    def __init__(self, url: str, *, timeout_s: float = 5.0, connect_timeout_s: int = 3) -> None:
        self.url = url
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout + 1):
                    conn = await self._ensure()
                    cur = await conn.execute(sql.replace("?", "%s"), tuple(args))
                    return list(await cur.fetchall())
            except _PG_UNAVAILABLE as exc:
                await self._drop()
                raise LogStoreUnavailable(f"inference log (postgres): {exc}") from exc

    async def has_table(self, table: str) -> bool:
        rows = await self.fetch("SELECT to_regclass(?) IS NOT NULL", (table,))
        return bool(rows and rows[0][0])

    def ts(self, value: datetime) -> datetime:
        return as_utc(value)

    def feature(self, path: str) -> tuple[str, Any]:
        return "(input_features #>> ?)", path.split(".")

    def bucket(self, since: datetime, bucket_s: int) -> tuple[str, list[Any]]:
        sql = "CAST(FLOOR(EXTRACT(EPOCH FROM (served_at - ?::timestamptz)) / ?) AS INTEGER)"
        return sql, [self.ts(since), bucket_s]

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _ensure(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
            await conn.execute(f"SET statement_timeout = {int(self._timeout * 1000)}")
            await conn.execute("SET default_transaction_read_only = on")
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def build_reader(database_url: str | None, sqlite_file: Path) -> LogReader:
    """PostgreSQL when ``database_url`` is set, else the home's SQLite log."""
    if database_url:
        return PostgresReader(database_url)
    return SqliteReader(sqlite_file)
