"""The embedded sink: SQLite in WAL mode at ``<home>/log/inference.db``.

All statements run on one dedicated thread that owns the connection, so the event loop never
blocks on disk and statements never interleave. Writes take SQLite's write lock first
(``BEGIN IMMEDIATE``), so the deletion tombstones a write reads are current (see
``router.log.sink``). A new database file is created with mode 0600 (it holds the input
store's raw prompts and subjects; SQLite gives its ``-wal``/``-shm`` files the same mode).

Every call is bounded: SQLite waits at most ``busy_timeout_ms`` for a lock, and the caller
at most ``timeout_s`` for an answer (then the running statement is interrupted). Any
database error, a file that is not (or no longer) a database included, raises
``LogStoreUnavailable``: a corrupt ``inference.db`` never stops the gateway, its records
spool. Commits are ``synchronous = FULL`` (the WAL is fsynced at each batch's commit), so a
row the writer counts as written survives a machine crash and its journal line can go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.log import schema
from lora_router.router.log.rows import Row, as_utc
from lora_router.router.log.sink import (
    FEEDBACK_SQL,
    LogSink,
    RowRejected,
    StatsRow,
    drop_deleted,
    input_subject_hashes,
    percentile,
    purge_where,
    stats_row,
    stats_sql,
    subject_hash,
)

T = TypeVar("T")

_INSERT = "INSERT INTO {table} ({cols}) VALUES ({qs}) ON CONFLICT (request_id) DO NOTHING"
_TOMBSTONE = (
    "INSERT INTO subject_deletions (subject_hash, deleted_at) VALUES (?, ?)"
    " ON CONFLICT (subject_hash) DO UPDATE SET deleted_at ="
    " MAX(subject_deletions.deleted_at, excluded.deleted_at)"
)


def _ts(ts: datetime) -> str:
    return as_utc(ts).isoformat(timespec="microseconds")


def _to_db(row: Row) -> tuple[Any, ...]:
    out = dict(row)
    out["served_at"] = _ts(row["served_at"])
    feats = row.get("input_features")
    out["input_features"] = None if feats is None else json.dumps(feats, sort_keys=True)
    wc = row.get("was_correct")
    out["was_correct"] = None if wc is None else int(bool(wc))
    return tuple(out.get(c) for c in schema.COLUMNS)


def _from_db(values: Sequence[Any]) -> Row:
    row = dict(zip(schema.COLUMNS, values, strict=True))
    row["served_at"] = datetime.fromisoformat(row["served_at"])
    if row["input_features"] is not None:
        row["input_features"] = json.loads(row["input_features"])
    if row["was_correct"] is not None:
        row["was_correct"] = bool(row["was_correct"])
    return row


class SqliteSink(LogSink):
    """``LogSink`` on a local SQLite file."""

    name = "sqlite"

    def __init__(
        self, path: Path, *, busy_timeout_ms: int = 5000, timeout_s: float = 10.0
    ) -> None:
        self.path = path
        self._busy_ms = busy_timeout_ms
        self._timeout = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None or self._conn is None:
            await self.open()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        return await self._bounded(loop.run_in_executor(self._pool, self._call, fn))

    async def _bounded(self, fut: asyncio.Future[T]) -> T:
        try:
            return await asyncio.wait_for(fut, self._timeout)
        except TimeoutError as exc:
            conn = self._conn
            if conn is not None:
                conn.interrupt()  # the statement stops at its next step
            raise LogStoreUnavailable(
                f"sqlite log at {self.path}: no answer within {self._timeout:g} s"
            ) from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise LogStoreUnavailable(f"sqlite log at {self.path}: closed")
        try:
            return fn(conn)
        except sqlite3.IntegrityError as exc:
            _rollback(conn)
            raise RowRejected(f"sqlite refused a row: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # locked, disk I/O, full, not a database
            _rollback(conn)
            raise LogStoreUnavailable(f"sqlite log at {self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._conn is not None:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await self._bounded(loop.run_in_executor(pool, self._connect))
            self._pool = pool
            await self._run(self._migrate)
        except (sqlite3.Error, OSError, LogStoreUnavailable) as exc:
            conn, self._conn, self._pool = self._conn, None, None
            if conn is not None:
                pool.submit(conn.close)
            pool.shutdown(wait=False)
            if isinstance(exc, LogStoreUnavailable):
                raise
            raise LogStoreUnavailable(f"sqlite log at {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # owner-only from the start: it may hold raw prompts
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(schema.MIGRATIONS_TABLE)
            applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for mig in schema.pending(schema.SQLITE, applied):
                for stmt in mig.statements:
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (mig.version, mig.name, datetime.now(UTC).isoformat()),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    async def close(self) -> None:
        conn, pool = self._conn, self._pool
        self._conn = self._pool = None
        if pool is None:
            return
        stuck = False
        if conn is not None:
            try:
                await self._bounded(asyncio.get_running_loop().run_in_executor(pool, conn.close))
            except LogStoreUnavailable:
                stuck = True  # a statement still running: its thread ends on its own
        pool.shutdown(wait=not stuck)

    async def write(self, rows: Sequence[Row], inputs: Sequence[Row] = ()) -> int:
        values = [_to_db(r) for r in rows]

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(_insert_sql("inference_log", schema.COLUMNS), values)
            inserted = conn.total_changes - before
            ins = [
                tuple(_ts(i[c]) if c == "stored_at" else i.get(c) for c in schema.INPUT_COLUMNS)
                for i in _live_inputs(conn, inputs)
            ]
            if ins:
                conn.executemany(_insert_sql("input_store", schema.INPUT_COLUMNS), ins)
            conn.execute("COMMIT")
            return inserted

        return await self._run(op)

    async def set_feedback(
        self, request_id: str, was_correct: bool, failure_cluster: str | None
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(FEEDBACK_SQL, (int(was_correct), failure_cluster, request_id))
            return cur.rowcount > 0

        return await self._run(op)

    async def get(self, request_id: str) -> Row | None:
        sql = f"SELECT {', '.join(schema.COLUMNS)} FROM inference_log WHERE request_id = ?"
        rows = await self._run(lambda c: c.execute(sql, (request_id,)).fetchall())
        return _from_db(rows[0]) if rows else None

    async def tail(self, n: int, route: str | None = None) -> list[Row]:
        where, args = (" WHERE route = ?", (route,)) if route else ("", ())
        sql = (
            f"SELECT {', '.join(schema.COLUMNS)} FROM inference_log{where}"
            " ORDER BY served_at DESC, request_id DESC LIMIT ?"
        )
        rows = await self._run(lambda c: c.execute(sql, (*args, int(n))).fetchall())
        return [_from_db(r) for r in rows]

    async def stats(self, since: datetime, route: str | None = None) -> list[StatsRow]:
        args: tuple[Any, ...] = (_ts(since), route) if route else (_ts(since),)
        lat_sql = (
            "SELECT model_id, arm, latency_ms FROM inference_log WHERE served_at >= ?"
            + (" AND route = ?" if route else "")
            + " AND latency_ms IS NOT NULL ORDER BY latency_ms"
        )

        def op(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            return (
                conn.execute(stats_sql(route), args).fetchall(),
                conn.execute(lat_sql, args).fetchall(),
            )

        groups, lats = await self._run(op)
        by_key: dict[tuple[str, str | None], list[float]] = {}
        for model_id, arm, lat in lats:
            by_key.setdefault((model_id, arm), []).append(float(lat))
        out = []
        for g in groups:
            vals = by_key.get((g[0], g[1]), [])
            out.append(stats_row(g, percentile(vals, 0.5), percentile(vals, 0.99)))
        return out

    async def export(
        self, since: datetime, model_id: str | None = None, chunk: int = 1000
    ) -> AsyncIterator[list[Row]]:
        where = "served_at >= ?" + (" AND model_id = ?" if model_id else "")
        args: tuple[Any, ...] = (_ts(since), model_id) if model_id else (_ts(since),)
        cols = ", ".join(schema.COLUMNS)
        sql = (
            f"SELECT {cols} FROM inference_log WHERE {where}"
            " AND (served_at, request_id) > (?, ?)"
            " ORDER BY served_at, request_id LIMIT ?"
        )
        last: tuple[str, str] = ("", "")
        while True:
            params = (*args, *last, chunk)

            def op(conn: sqlite3.Connection, params: tuple[Any, ...] = params) -> list[Any]:
                return conn.execute(sql, params).fetchall()

            batch = await self._run(op)
            if not batch:
                return
            last = (batch[-1][6], batch[-1][0])
            yield [_from_db(r) for r in batch]

    async def purge_inputs(
        self, *, subject: str | None = None, before: datetime | None = None
    ) -> int:
        clauses, args = purge_where(subject, before, _ts)
        sql = f"DELETE FROM input_store WHERE {clauses}"

        def op(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            if subject is not None:
                conn.execute(_TOMBSTONE, (subject_hash(subject), _ts(datetime.now(UTC))))
            n = conn.execute(sql, args).rowcount
            conn.execute("COMMIT")
            return int(n)

        return await self._run(op)

    async def applied_migrations(self) -> list[int]:
        rows = await self._run(
            lambda c: c.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        )
        return [int(r[0]) for r in rows]

    async def inputs(self, subject: str | None = None) -> list[Row]:
        sql = f"SELECT {', '.join(schema.INPUT_COLUMNS)} FROM input_store"
        args: tuple[Any, ...] = ()
        if subject is not None:
            sql, args = sql + " WHERE subject = ?", (subject,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY request_id", args).fetchall())
        out = [dict(zip(schema.INPUT_COLUMNS, r, strict=True)) for r in rows]
        for r in out:
            r["stored_at"] = datetime.fromisoformat(r["stored_at"])
        return out


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever is open (nothing may be: then it is a no-op)."""
    with contextlib.suppress(sqlite3.Error):
        conn.rollback()


def _live_inputs(conn: sqlite3.Connection, inputs: Sequence[Row]) -> list[Row]:
    """The input rows no deletion tombstone covers (inside the write's transaction)."""
    hashes = input_subject_hashes(inputs)
    if not hashes:
        return list(inputs)
    qs = ", ".join("?" * len(hashes))
    found = conn.execute(
        f"SELECT subject_hash, deleted_at FROM subject_deletions WHERE subject_hash IN ({qs})",
        hashes,
    ).fetchall()
    return drop_deleted(inputs, {h: datetime.fromisoformat(at) for h, at in found})


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return _INSERT.format(table=table, cols=", ".join(cols), qs=", ".join("?" * len(cols)))

