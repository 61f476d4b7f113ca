"""Which key store the settings select: PostgreSQL with ``DATABASE_URL`` (shared by every
replica, like the inference log), else ``<home>/auth/keys.db``.

Not Redis: the project's Redis holds route flags, which survive its loss (fail-static,
re-seeded from the routes file); keys do not re-seed, so a Redis without persistence would
lose them on a restart, locking everyone out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from lora_router.router.auth.pg_store import PostgresKeyStore
from lora_router.router.auth.sqlite_store import SqliteKeyStore
from lora_router.router.auth.store import KeyStore
from lora_router.router.settings import Settings

_STORES: dict[str, Callable[[Settings], KeyStore]] = {
    "postgres": lambda s: PostgresKeyStore(s.database_url or ""),
    "sqlite": lambda s: SqliteKeyStore(sqlite_keys_path(s.home)),
}


def sqlite_keys_path(home: Path) -> Path:
    return home / "auth" / "keys.db"


def build_key_store(settings: Settings) -> KeyStore:
    return _STORES["postgres" if settings.database_url else "sqlite"](settings)


def count_keys(settings: Settings) -> tuple[int, int]:
    """How many keys the store holds, and how many of them are not revoked (for
    ``serve``'s start-up check; blocking)."""

    async def count() -> tuple[int, int]:
        store = build_key_store(settings)
        try:
            keys = await store.all()
        finally:
            await store.close()
        return len(keys), sum(1 for k in keys if k.active)

    return asyncio.run(count())
