"""The drift store on the PostgreSQL log (``DATABASE_URL``).

One connection (psycopg 3 async, autocommit), one statement or transaction at a time; it is
dropped on a connection error and re-opened on the next call. Cursors: (transaction id,
sequence) below the oldest running transaction (see :mod:`router.drift.schema`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.drift import schema
from lora_router.router.drift.events import LogRow, Position
from lora_router.router.drift.store import LOG_COLS, DriftStore, Tx, log_row
from lora_router.router.log.schema import pending

_MIGRATION_LOCK = 0x6C6F7278  # pg_advisory_xact_lock key of the drift migrations
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_ROWS = (
    f"SELECT {LOG_COLS}, l.drift_xid, l.drift_seq FROM inference_log l"
    " WHERE l.drift_xid IS NOT NULL AND (l.drift_xid, l.drift_seq) > (?, ?)"
    f" AND l.drift_xid < {_HORIZON} ORDER BY l.drift_xid, l.drift_seq LIMIT ?"
)
_LABELS = (
    f"SELECT {LOG_COLS}, e.xid, e.seq, e.labelled_at FROM drift_label_events e"
    " JOIN inference_log l ON l.request_id = e.request_id"
    f" WHERE (e.xid, e.seq) > (?, ?) AND e.xid < {_HORIZON} ORDER BY e.xid, e.seq LIMIT ?"
)


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.AsyncConnection[Any], timeout_s: float) -> None:
        self._conn = conn
        self._timeout = timeout_s

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with asyncio.timeout(self._timeout):
            cur = await self._conn.execute(_pg(sql), tuple(args))
            return list(await cur.fetchall()) if cur.description else []


class PostgresDriftStore(DriftStore):
    name = "postgres"

    def __init__(
        self, url: str, *, timeout_s: float = 10.0, connect_timeout_s: int = 3,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.url = url
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._migrated = False

    async def open(self) -> None:
        async with self._lock, self._unavailable():
            await self._ensure()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _ensure(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
            await conn.execute(f"SET statement_timeout = {int(self._timeout * 1000)}")
            self._conn = conn
        if not self._migrated:
            await _migrate(self._conn)
            self._migrated = True
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    @asynccontextmanager
    async def _unavailable(self) -> AsyncIterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            await self._drop()
            raise LogStoreUnavailable(f"drift store (postgres) unavailable: {exc}") from exc
        except psycopg.errors.UndefinedTable as exc:  # the log writer has not created it yet
            raise LogStoreUnavailable(f"drift store (postgres): {exc}") from exc

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        async with self._lock, self._unavailable():
            conn = await self._ensure()
            async with conn.transaction():
                yield _PgTx(conn, self._timeout)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._lock, self._unavailable():
            return await _PgTx(await self._ensure(), self._timeout).run(sql, args)

    def ts(self, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    async def read_rows(self, after: Position, limit: int) -> list[LogRow]:
        rows = await self.fetch(_ROWS, (*after, limit))
        return [log_row(r[:10], (int(r[10]), int(r[11]))) for r in rows]

    async def read_labels(self, after: Position, limit: int) -> list[LogRow]:
        rows = await self.fetch(_LABELS, (*after, limit))
        return [log_row(r[:10], (int(r[10]), int(r[11])), r[12]) for r in rows]


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(schema.MIGRATIONS_TABLE)
        cur = await conn.execute("SELECT version FROM drift_schema_migrations")
        applied = {r[0] for r in await cur.fetchall()}
        for mig in pending(schema.POSTGRES, applied):
            for stmt in mig.statements:
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO drift_schema_migrations (version, name, applied_at)"
                " VALUES (%s, %s, %s)",
                (mig.version, mig.name, datetime.now(UTC).isoformat()),
            )
