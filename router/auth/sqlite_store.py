"""The embedded key store: SQLite at ``<home>/auth/keys.db`` (folder 0700, file 0600).

Its own file, not the log's ``inference.db``: a corrupt, locked or full log database is
spooled around and must not lock everyone out (or let everyone in), and the log file is
the one people copy for analysis. Each call opens a short-lived connection on a worker
thread (keys are read once per ``keys_refresh_s``, written by hand): nothing is held open.
Reads open the file read-only and never create it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lora_router.router.auth import schema
from lora_router.router.auth.errors import KeyNotFound, KeyStoreUnavailable
from lora_router.router.auth.keys import ApiKey
from lora_router.router.auth.roles import Role
from lora_router.router.auth.store import KeyStore
from lora_router.router.log.schema import pending

T = TypeVar("T")

_COLS = ", ".join(schema.COLUMNS)
_HAS_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _key(row: Sequence[Any]) -> ApiKey:
    kid, name, role, key_hash, created_at, created_by, revoked_at, revoked_by = row
    created = _dt(created_at)
    assert created is not None
    return ApiKey(id=kid, name=name, role=Role(role), key_hash=key_hash, created_at=created,
                  created_by=created_by, revoked_at=_dt(revoked_at), revoked_by=revoked_by)


class SqliteKeyStore(KeyStore):
    name = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, timeout_s: float = 10.0):
        self.path = path
        self.location = str(path)
        self._busy_ms = busy_timeout_ms
        self._timeout = timeout_s

    async def all(self) -> list[ApiKey]:
        def op(conn: sqlite3.Connection) -> list[ApiKey]:
            if conn.execute(_HAS_TABLE).fetchone() is None:
                return []
            rows = conn.execute(f"SELECT {_COLS} FROM api_keys ORDER BY created_at, id")
            return [_key(r) for r in rows]

        if not self.path.is_file():
            return []
        return await self._run(op, write=False)

    async def insert(self, key: ApiKey) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO api_keys ({_COLS}) VALUES ({', '.join('?' * len(schema.COLUMNS))})",
                (key.id, key.name, key.role.value, key.key_hash, _ts(key.created_at),
                 key.created_by, None, None),
            )

        await self._run(op, write=True)

    async def revoke(self, key_id: str, *, at: datetime, by: str) -> ApiKey:
        def op(conn: sqlite3.Connection) -> ApiKey | None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ?"
                " WHERE id = ? AND revoked_at IS NULL", (_ts(at), by, key_id),
            )
            row = conn.execute(f"SELECT {_COLS} FROM api_keys WHERE id = ?", (key_id,))
            found = row.fetchone()
            return None if found is None else _key(found)

        key = await self._run(op, write=True) if self.path.is_file() else None
        if key is None:
            raise KeyNotFound(f"no API key {key_id!r} in {self.location}")
        return key

    async def close(self) -> None:
        return None

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.to_thread(self._call, fn, write)
        except TimeoutError as exc:
            raise KeyStoreUnavailable(
                f"key store at {self.path}: no answer within {self._timeout:g} s") from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            conn = self._connect(write)
        except (sqlite3.Error, OSError) as exc:
            raise KeyStoreUnavailable(f"key store at {self.path}: {exc}") from exc
        try:
            if write:
                _migrate(conn)
                conn.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            if write:
                conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise KeyStoreUnavailable(f"key store at {self.path}: {exc}") from exc
        finally:
            conn.close()

    def _connect(self, write: bool) -> sqlite3.Connection:
        if write:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():  # owner-only from the start
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            conn = sqlite3.connect(self.path, isolation_level=None)
        else:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(schema.MIGRATIONS_TABLE)
        applied = {r[0] for r in conn.execute("SELECT version FROM auth_schema_migrations")}
        for mig in pending(schema.SQLITE, applied):
            for stmt in mig.statements:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO auth_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, datetime.now(UTC).isoformat()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
