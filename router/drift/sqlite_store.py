"""The drift store on the embedded SQLite log (``<home>/log/inference.db``).

Its own connection, used from one dedicated thread (like the log's sink), WAL mode, a busy
timeout: the log writer and the monitor take turns for the write lock, briefly. Row cursor:
``rowid`` (see :mod:`router.drift.schema`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.drift import schema
from lora_router.router.drift.events import LogRow, Position
from lora_router.router.drift.store import LOG_COLS, DriftStore, Tx, log_row
from lora_router.router.log.rows import as_utc
from lora_router.router.log.schema import pending

T = TypeVar("T")

_ROWS = (
    f"SELECT {LOG_COLS}, l.rowid FROM inference_log l WHERE l.rowid > ?"
    " ORDER BY l.rowid LIMIT ?"
)
_LABELS = (
    f"SELECT {LOG_COLS}, e.seq, e.labelled_at FROM drift_label_events e"
    " JOIN inference_log l ON l.request_id = e.request_id WHERE e.seq > ? ORDER BY e.seq LIMIT ?"
)


class _SqliteTx:
    def __init__(self, store: SqliteDriftStore) -> None:
        self._store = store

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._store.call(lambda c: c.execute(sql, tuple(args)).fetchall())


class SqliteDriftStore(DriftStore):
    name = "sqlite"

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = 5000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.path = path
        self._busy_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._tx_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._conn is not None:
            return
        if not self.path.is_file():
            raise LogStoreUnavailable(f"no inference log at {self.path} yet")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._pool, self._connect)
            await self.call(_migrate)
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise LogStoreUnavailable(f"drift store at {self.path}: {exc}") from exc
        return conn

    async def close(self) -> None:
        conn, pool = self._conn, self._pool
        self._conn = self._pool = None
        if pool is not None and conn is not None:
            await asyncio.get_running_loop().run_in_executor(pool, conn.close)
        if pool is not None:
            pool.shutdown(wait=True)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._conn is None:
            raise LogStoreUnavailable("the drift store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._guarded, fn)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:  # locked, disk I/O, missing table
            if self._conn.in_transaction:
                self._conn.rollback()
            raise LogStoreUnavailable(f"drift store at {self.path}: {exc}") from exc

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        async with self._tx_lock:
            await self.call(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                yield _SqliteTx(self)
            except BaseException:
                await self.call(_rollback)
                raise
            await self.call(lambda c: c.execute("COMMIT"))

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._tx_lock:  # never inside another task's transaction
            return await self.call(lambda c: c.execute(sql, tuple(args)).fetchall())

    def ts(self, value: datetime) -> str:
        return as_utc(value).isoformat(timespec="microseconds")

    async def read_rows(self, after: Position, limit: int) -> list[LogRow]:
        rows = await self.fetch(_ROWS, (after[1], limit))
        return [log_row(r[:10], (0, int(r[10]))) for r in rows]

    async def read_labels(self, after: Position, limit: int) -> list[LogRow]:
        rows = await self.fetch(_LABELS, (after[1], limit))
        return [log_row(r[:10], (0, int(r[10])), r[11]) for r in rows]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(schema.MIGRATIONS_TABLE)
        applied = {r[0] for r in conn.execute("SELECT version FROM drift_schema_migrations")}
        for mig in pending(schema.SQLITE, applied):
            for stmt in mig.statements:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO drift_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, datetime.now(UTC).isoformat()),
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
