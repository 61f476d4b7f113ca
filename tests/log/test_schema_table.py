"""Both dialects' tables come from one column table: what the real databases hold after the
migrations is exactly that table (names, order, types, NOT NULL, keys), in each dialect."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from lora_router.router.log import schema
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.sqlite_sink import SqliteSink

TABLES = (schema.INFERENCE_LOG, schema.INPUT_STORE, schema.SUBJECT_DELETIONS)
# what PostgreSQL's information_schema reports for each declared type
PG_REPORTED = {
    "TEXT": "text",
    "INTEGER": "integer",
    "REAL": "real",
    "DOUBLE PRECISION": "double precision",
    "JSONB": "jsonb",
    "TIMESTAMPTZ": "timestamp with time zone",
    "BOOLEAN": "boolean",
}


def _declared(table: schema.Table, dialect: schema.Dialect) -> list[tuple[str, str, bool]]:
    return [(c.name, schema.TYPES[dialect][c.type], c.required or c.key) for c in table.columns]


async def test_postgres_tables_are_the_column_table(pg_url: str) -> None:
    sink = PostgresSink(pg_url)
    await sink.open()  # applies every migration
    await sink.close()
    with psycopg.connect(pg_url) as conn:
        for table in TABLES:
            got = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "ORDER BY ordinal_position",
                (table.name,),
            ).fetchall()
            want = [(n, PG_REPORTED[t], req) for n, t, req in _declared(table, "postgres")]
            assert [(n, t, nullable == "NO") for n, t, nullable in got] == want
        status_default = conn.execute(
            "SELECT column_default FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'inference_log' AND column_name = 'status'"
        ).fetchone()
        assert status_default is not None and status_default[0].startswith("'ok'")


async def test_sqlite_tables_are_the_column_table(tmp_path: Path) -> None:
    path = tmp_path / "log" / "inference.db"
    sink = SqliteSink(path)
    await sink.open()
    await sink.close()
    conn = sqlite3.connect(path)
    try:
        for table in TABLES:
            info = conn.execute(f"PRAGMA table_info({table.name})").fetchall()
            got = [(name, typ, bool(notnull or pk)) for _, name, typ, notnull, _, pk in info]
            assert got == _declared(table, "sqlite")
            keys = [name for _, name, _, _, _, pk in info if pk]
            assert keys == [c.name for c in table.columns if c.key]
    finally:
        conn.close()


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_later_columns_are_added_by_their_migration(dialect: schema.Dialect) -> None:
    """A column with ``since`` > 1 is not in the CREATE (databases made before it get it from
    its ALTER), so applying the migrations in order never adds a column twice."""
    migrations = schema.migrations(dialect)
    create = migrations[0].statements[0]
    later = [c for c in schema.INFERENCE_LOG.columns if c.since > 1]
    assert later, "engine_ms is added by migration 4"
    for col in later:
        assert f"\n    {col.name} " not in create
        adds = [m for m in migrations if m.version == col.since]
        assert adds and any(f"ADD COLUMN {col.name} " in s for s in adds[0].statements)
