"""The key store on PostgreSQL (``DATABASE_URL``, the inference log's database).

One connection (psycopg 3 async, autocommit), one statement at a time; dropped on a
connection error and re-opened on the next call. Every call is bounded (client side and
``statement_timeout``). Reads never create the table; the first write does (its own
migration set, under an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

from lora_router.router.auth import schema
from lora_router.router.auth.errors import KeyNotFound, KeyStoreUnavailable
from lora_router.router.auth.keys import ApiKey
from lora_router.router.auth.roles import Role
from lora_router.router.auth.store import KeyStore
from lora_router.router.log.schema import pending

_MIGRATION_LOCK = 0x6C6F726B  # pg_advisory_xact_lock key of the key-store migrations
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
_COLS = ", ".join(schema.COLUMNS)


def _key(row: Sequence[Any]) -> ApiKey:
    kid, name, role, key_hash, created_at, created_by, revoked_at, revoked_by = row
    return ApiKey(id=kid, name=name, role=Role(role), key_hash=key_hash, created_at=created_at,
                  created_by=created_by, revoked_at=revoked_at, revoked_by=revoked_by)


class PostgresKeyStore(KeyStore):
    name = "postgres"
    location = "PostgreSQL (DATABASE_URL)"

    def __init__(self, url: str, *, timeout_s: float = 5.0, connect_timeout_s: int = 3):
        self.url = url
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._migrated = False

    async def all(self) -> list[ApiKey]:
        async with self._session(migrate=False) as conn:
            cur = await conn.execute("SELECT to_regclass('api_keys') IS NOT NULL")
            exists = await cur.fetchone()
            if exists is None or not exists[0]:
                return []
            cur = await conn.execute(f"SELECT {_COLS} FROM api_keys ORDER BY created_at, id")
            return [_key(r) for r in await cur.fetchall()]

    async def insert(self, key: ApiKey) -> None:
        async with self._session(migrate=True) as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({_COLS}) VALUES "
                f"({', '.join(['%s'] * len(schema.COLUMNS))})",
                (key.id, key.name, key.role.value, key.key_hash, key.created_at,
                 key.created_by, None, None),
            )

    async def revoke(self, key_id: str, *, at: datetime, by: str) -> ApiKey:
        async with self._session(migrate=True) as conn:
            await conn.execute(
                "UPDATE api_keys SET revoked_at = %s, revoked_by = %s"
                " WHERE id = %s AND revoked_at IS NULL", (at, by, key_id),
            )
            cur = await conn.execute(f"SELECT {_COLS} FROM api_keys WHERE id = %s", (key_id,))
            row = await cur.fetchone()
        if row is None:
            raise KeyNotFound(f"no API key {key_id!r} in {self.location}")
        return _key(row)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    @asynccontextmanager
    async def _session(self, *, migrate: bool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    conn = await self._ensure(migrate)
                    yield conn
            except _UNAVAILABLE as exc:
                await self._drop()
                raise KeyStoreUnavailable(f"key store (postgres) unavailable: {exc}") from exc
            except psycopg.Error as exc:
                raise KeyStoreUnavailable(f"key store (postgres): {exc}") from exc

    async def _ensure(self, migrate: bool) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
            await conn.execute(f"SET statement_timeout = {int(self._timeout * 1000)}")
            self._conn = conn
        if migrate and not self._migrated:
            await _migrate(self._conn)
            self._migrated = True
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(schema.MIGRATIONS_TABLE)
        cur = await conn.execute("SELECT version FROM auth_schema_migrations")
        applied = {r[0] for r in await cur.fetchall()}
        for mig in pending(schema.POSTGRES, applied):
            for stmt in mig.statements:
                await conn.execute(stmt)
            await conn.execute(
                "INSERT INTO auth_schema_migrations (version, name, applied_at)"
                " VALUES (%s, %s, %s)",
                (mig.version, mig.name, datetime.now(UTC).isoformat()),
            )
