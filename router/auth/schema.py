"""The key store's table, as its own migration set (recorded in ``auth_schema_migrations``,
apart from the inference log's ``schema_migrations``), one list per dialect.

``key_hash`` is ``sha256:<hex>`` of the whole key; the key itself is never stored. A revoked
key keeps its row (``revoked_at``, ``revoked_by``), so its id stays taken and listings
show who revoked it when.
"""

from __future__ import annotations

from lora_router.router.log.schema import Migration

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS auth_schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

COLUMNS = ("id", "name", "role", "key_hash", "created_at", "created_by", "revoked_at",
           "revoked_by")

_KEYS = """CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at {ts} NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at {ts},
    revoked_by TEXT
)"""

POSTGRES: tuple[Migration, ...] = (Migration(1, "api_keys", (_KEYS.format(ts="TIMESTAMPTZ"),)),)
SQLITE: tuple[Migration, ...] = (Migration(1, "api_keys", (_KEYS.format(ts="TEXT"),)),)
