"""The ``inference_log`` schema: one column table, and the versioned SQL migrations that
both dialects' DDL is generated from.

The first nine columns are the seed chapter's table, names and types exactly; the rest are
what routing, drift, incidents and cost accounting need. Both dialects hold the same logical
schema, declared once below (:data:`INFERENCE_LOG`, :data:`INPUT_STORE`,
:data:`SUBJECT_DELETIONS`); :data:`TYPES` says how each logical type is stored. SQLite
stores ``input_features`` as JSON text, ``served_at`` as ISO-8601 UTC text (fixed width, so
text order is time order) and booleans as 0/1.

A migration is applied once, recorded in ``schema_migrations``; re-applying is a no-op.
A column added later names the migration that adds it (``since``); append new migrations
at the end with the next version; never edit an applied one.

``engine_ms`` (migration 4): the request's share of the engine's forward passes, in
milliseconds (:mod:`adapters.batcher` says how it is measured); the source of engine
seconds in cost accounting (:mod:`router.log.cost`). NULL for failed requests and rows
written before it existed. An 8-byte float in both dialects (PostgreSQL's ``REAL`` is 4).

``subject_deletions`` holds one tombstone per deleted data subject (the sha256 of the subject,
never the subject itself, and the time of the deletion): input-store rows of that subject
stored at or before that time are never written again (see ``LogSink.write``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["postgres", "sqlite"]
LogicalType = Literal["text", "int", "real", "double", "json", "time", "bool"]

# how each logical type is stored, per dialect
TYPES: dict[Dialect, dict[LogicalType, str]] = {
    "postgres": {
        "text": "TEXT",
        "int": "INTEGER",
        "real": "REAL",
        "double": "DOUBLE PRECISION",
        "json": "JSONB",
        "time": "TIMESTAMPTZ",
        "bool": "BOOLEAN",
    },
    "sqlite": {
        "text": "TEXT",
        "int": "INTEGER",
        "real": "REAL",
        "double": "REAL",
        "json": "TEXT",
        "time": "TEXT",
        "bool": "INTEGER",
    },
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: LogicalType
    required: bool = False  # NOT NULL
    key: bool = False  # PRIMARY KEY
    default: str | None = None  # an SQL literal, the same in both dialects
    since: int = 1  # the migration that adds it (1: the table's CREATE)

    def ddl(self, dialect: Dialect) -> str:
        parts = [self.name, TYPES[dialect][self.type]]
        if self.key:
            parts.append("PRIMARY KEY")
        if self.required:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (index name, columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create(self, dialect: Dialect) -> tuple[str, ...]:
        """``CREATE TABLE`` with the columns of its first migration, and its indexes."""
        cols = ",\n    ".join(c.ddl(dialect) for c in self.columns if c.since == 1)
        table = f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {cols}\n)"
        return (table, *(
            f"CREATE INDEX IF NOT EXISTS {index} ON {self.name} ({', '.join(on)})"
            for index, on in self.indexes
        ))

    def add(self, column: str, dialect: Dialect) -> str:
        """``ALTER TABLE ... ADD COLUMN`` for a column added after the table's CREATE."""
        col = next(c for c in self.columns if c.name == column)
        return f"ALTER TABLE {self.name} ADD COLUMN {col.ddl(dialect)}"


INFERENCE_LOG = Table(
    "inference_log",
    (
        # the seed chapter's columns
        Column("request_id", "text", key=True),
        Column("model_id", "text", required=True),
        Column("input_hash", "text", required=True),
        Column("input_features", "json"),
        Column("output", "text", required=True),
        Column("confidence", "real"),
        Column("served_at", "time", required=True),
        Column("was_correct", "bool"),
        Column("failure_cluster", "text"),
        # routing, drift, incidents and cost
        Column("route", "text"),
        Column("arm", "text"),
        Column("flag_version", "int"),
        Column("parent_request_id", "text"),
        Column("base_model_id", "text"),
        Column("latency_ms", "real"),
        Column("prompt_tokens", "int"),
        Column("completion_tokens", "int"),
        Column("route_key_hash", "text"),
        Column("policy_version", "text"),
        Column("status", "text", required=True, default="'ok'"),
        Column("error", "text"),
        Column("engine_ms", "double", since=4),
    ),
    indexes=(
        ("inference_log_model_served", ("model_id", "served_at")),
        ("inference_log_route_served", ("route", "served_at")),
        ("inference_log_served", ("served_at",)),
    ),
)

INPUT_STORE = Table(
    "input_store",
    (
        Column("request_id", "text", key=True),
        Column("subject", "text"),
        Column("route", "text"),
        Column("model_id", "text"),
        Column("prompt", "text", required=True),
        Column("output", "text"),
        Column("stored_at", "time", required=True),
    ),
    indexes=(
        ("input_store_subject", ("subject",)),
        ("input_store_stored_at", ("stored_at",)),
    ),
)

SUBJECT_DELETIONS = Table(
    "subject_deletions",
    (
        Column("subject_hash", "text", key=True),
        Column("deleted_at", "time", required=True),
    ),
)

# every column of inference_log, in table order (the row dicts use these keys)
COLUMNS: tuple[str, ...] = INFERENCE_LOG.names
INPUT_COLUMNS: tuple[str, ...] = INPUT_STORE.names


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """Every migration, generated for ``dialect`` from the tables above."""
    return (
        Migration(1, "inference_log", INFERENCE_LOG.create(dialect)),
        Migration(2, "input_store", INPUT_STORE.create(dialect)),
        Migration(3, "subject_deletions", SUBJECT_DELETIONS.create(dialect)),
        Migration(4, "engine_ms", (INFERENCE_LOG.add("engine_ms", dialect),)),
    )


POSTGRES: tuple[Migration, ...] = migrations("postgres")
SQLITE: tuple[Migration, ...] = migrations("sqlite")

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


def pending(migrations: tuple[Migration, ...], applied: set[int]) -> list[Migration]:
    """The migrations not yet applied, in version order."""
    return [m for m in sorted(migrations, key=lambda m: m.version) if m.version not in applied]
