"""The PostgreSQL sink (``DATABASE_URL``): psycopg 3 async, batched idempotent inserts.

One connection, used by one statement at a time (a lock); it is dropped on any connection
error or timeout and re-opened on the next call, so a restarted server is picked up without
the caller doing anything. Every call is bounded by ``timeout_s`` (client side) and by
``statement_timeout`` (server side).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.log import schema
from lora_router.router.log.rows import Row
from lora_router.router.log.sink import (
    FEEDBACK_SQL,
    LogSink,
    RowRejected,
    StatsRow,
    drop_deleted,
    input_subject_hashes,
    purge_where,
    stats_row,
    stats_sql,
    subject_hash,
)

_MIGRATION_LOCK = 0x6C6F7261  # pg_advisory_xact_lock key: one migrator at a time
# input-row writers hold it shared, a subject deletion exclusive: a deletion never interleaves
# with a write that has read the tombstones but not yet committed its input rows
_DELETION_LOCK = 0x6C6F7264
_TOMBSTONES = "SELECT subject_hash, deleted_at FROM subject_deletions WHERE subject_hash = ANY(%s)"
_TOMBSTONE = (
    "INSERT INTO subject_deletions (subject_hash, deleted_at) VALUES (%s, %s)"
    " ON CONFLICT (subject_hash) DO UPDATE SET deleted_at ="
    " GREATEST(subject_deletions.deleted_at, EXCLUDED.deleted_at)"
)
_COLS = ", ".join(schema.COLUMNS)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
_REJECTED = (psycopg.DataError, psycopg.IntegrityError)


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
        " ON CONFLICT (request_id) DO NOTHING"
    )


_INSERT_LOG = _insert_sql("inference_log", schema.COLUMNS)
_INSERT_INPUT = _insert_sql("input_store", schema.INPUT_COLUMNS)


def _params(rows: Sequence[Row], cols: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [
        tuple(
            Jsonb(r[c]) if c == "input_features" and r.get(c) is not None else r.get(c)
            for c in cols
        )
        for r in rows
    ]


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _from_db(values: Sequence[Any]) -> Row:
    return dict(zip(schema.COLUMNS, values, strict=True))


class PostgresSink(LogSink):
    """``LogSink`` on PostgreSQL (tables in the connection's ``search_path`` schema)."""

    name = "postgres"

    def __init__(self, url: str, *, timeout_s: float = 10.0, connect_timeout_s: int = 3) -> None:
        self.url = url
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._migrated = False

    async def open(self) -> None:
        async with self._lock:
            await self._guard(self._ensure())

    async def _ensure(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
            await conn.execute(f"SET statement_timeout = {int(self._timeout * 1000)}")
            self._conn = conn
            if not self._migrated:
                await self._migrate(conn)
                self._migrated = True
        return self._conn

    @staticmethod
    async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(schema.MIGRATIONS_TABLE)
            cur = await conn.execute("SELECT version FROM schema_migrations")
            applied = {r[0] for r in await cur.fetchall()}
            for mig in schema.pending(schema.POSTGRES, applied):
                for stmt in mig.statements:
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, datetime.now(UTC).isoformat()),
                )

    async def _guard(self, coro: Any) -> Any:
        """Bound a call in time and map driver errors to the project's."""
        try:
            async with asyncio.timeout(self._timeout):
                return await coro
        except _REJECTED as exc:
            raise RowRejected(f"postgres refused a row: {exc}") from exc
        except _UNAVAILABLE as exc:
            await self._drop()
            raise LogStoreUnavailable(f"postgres log unavailable: {exc}") from exc

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken
                await conn.close()

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        async def op() -> list[Any]:
            conn = await self._ensure()
            cur = await conn.execute(sql, args)
            return list(await cur.fetchall())

        async with self._lock:
            result: list[Any] = await self._guard(op())
            return result

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def write(self, rows: Sequence[Row], inputs: Sequence[Row] = ()) -> int:
        # one prepared statement, sent for every row in pipeline mode (psycopg's
        # executemany): a huge multi-row VALUES spent more time in client-side query parsing
        async def op() -> int:
            conn = await self._ensure()
            async with conn.transaction():
                cur = conn.cursor()
                await cur.executemany(_INSERT_LOG, _params(rows, schema.COLUMNS))
                inserted = max(cur.rowcount, 0)
                kept = await self._live_inputs(conn, inputs)
                if kept:
                    await cur.executemany(_INSERT_INPUT, _params(kept, schema.INPUT_COLUMNS))
            return inserted

        if not rows and not inputs:
            return 0
        async with self._lock:
            result: int = await self._guard(op())
            return result

    @staticmethod
    async def _live_inputs(
        conn: psycopg.AsyncConnection[Any], inputs: Sequence[Row]
    ) -> list[Row]:
        """The input rows no deletion tombstone covers (inside the write's transaction)."""
        hashes = input_subject_hashes(inputs)
        if not hashes:
            return list(inputs)
        await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_DELETION_LOCK,))
        cur = await conn.execute(_TOMBSTONES, (hashes,))
        return drop_deleted(inputs, {h: at for h, at in await cur.fetchall()})

    async def set_feedback(
        self, request_id: str, was_correct: bool, failure_cluster: str | None
    ) -> bool:
        async def op() -> bool:
            conn = await self._ensure()
            cur = await conn.execute(_pg(FEEDBACK_SQL), (was_correct, failure_cluster, request_id))
            return cur.rowcount > 0

        async with self._lock:
            result: bool = await self._guard(op())
            return result

    async def get(self, request_id: str) -> Row | None:
        rows = await self._fetch(
            f"SELECT {_COLS} FROM inference_log WHERE request_id = %s", (request_id,)
        )
        return _from_db(rows[0]) if rows else None

    async def tail(self, n: int, route: str | None = None) -> list[Row]:
        where, args = (" WHERE route = %s", [route]) if route else ("", [])
        rows = await self._fetch(
            f"SELECT {_COLS} FROM inference_log{where}"
            " ORDER BY served_at DESC, request_id DESC LIMIT %s",
            [*args, int(n)],
        )
        return [_from_db(r) for r in rows]

    async def stats(self, since: datetime, route: str | None = None) -> list[StatsRow]:
        extra = (
            ", percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)"
            ", percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)"
        )
        args = [since, route] if route else [since]
        rows = await self._fetch(_pg(stats_sql(route, extra)), args)
        return [stats_row(r, _float(r[8]), _float(r[9])) for r in rows]

    async def export(
        self, since: datetime, model_id: str | None = None, chunk: int = 1000
    ) -> AsyncIterator[list[Row]]:
        where = "served_at >= %s" + (" AND model_id = %s" if model_id else "")
        args: list[Any] = [since, model_id] if model_id else [since]
        sql = (
            f"SELECT {_COLS} FROM inference_log WHERE {where}"
            " AND (served_at, request_id) > (%s, %s) ORDER BY served_at, request_id LIMIT %s"
        )
        last: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")
        while True:
            batch = await self._fetch(sql, [*args, *last, chunk])
            if not batch:
                return
            last = (batch[-1][6], batch[-1][0])
            yield [_from_db(r) for r in batch]

    async def purge_inputs(
        self, *, subject: str | None = None, before: datetime | None = None
    ) -> int:
        clauses, args = purge_where(subject, before, lambda t: t)

        async def op() -> int:
            conn = await self._ensure()
            async with conn.transaction():
                if subject is not None:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DELETION_LOCK,))
                    await conn.execute(_TOMBSTONE, (subject_hash(subject), datetime.now(UTC)))
                cur = await conn.execute(_pg(f"DELETE FROM input_store WHERE {clauses}"), args)
            return cur.rowcount

        async with self._lock:
            result: int = await self._guard(op())
            return result

    async def inputs(self, subject: str | None = None) -> list[Row]:
        sql = f"SELECT {', '.join(schema.INPUT_COLUMNS)} FROM input_store"
        args: list[Any] = []
        if subject is not None:
            sql, args = sql + " WHERE subject = %s", [subject]
        rows = await self._fetch(sql + " ORDER BY request_id", args)
        return [dict(zip(schema.INPUT_COLUMNS, r, strict=True)) for r in rows]

    async def applied_migrations(self) -> list[int]:
        rows = await self._fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [int(r[0]) for r in rows]
