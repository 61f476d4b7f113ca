"""The ``inference_log`` schema as versioned SQL migrations, one list per dialect.

The first nine columns are the seed chapter's table, names and types exactly; the rest are
what routing, drift, incidents and cost accounting need. Both dialects hold the same logical
schema; SQLite stores ``input_features`` as JSON text, ``served_at`` as ISO-8601 UTC text
(fixed width, so text order is time order) and booleans as 0/1.

A migration is applied once, recorded in ``schema_migrations``; re-applying is a no-op.
Append new migrations at the end with the next version; never edit an applied one.

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

# every column of inference_log, in table order (the row dicts use these keys)
COLUMNS: tuple[str, ...] = (
    "request_id",
    "model_id",
    "input_hash",
    "input_features",
    "output",
    "confidence",
    "served_at",
    "was_correct",
    "failure_cluster",
    "route",
    "arm",
    "flag_version",
    "parent_request_id",
    "base_model_id",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "route_key_hash",
    "policy_version",
    "status",
    "error",
    "engine_ms",
)

INPUT_COLUMNS: tuple[str, ...] = (
    "request_id",
    "subject",
    "route",
    "model_id",
    "prompt",
    "output",
    "stored_at",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_PRODUCT_COLUMNS = """
    route TEXT,
    arm TEXT,
    flag_version INTEGER,
    parent_request_id TEXT,
    base_model_id TEXT,
    latency_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    route_key_hash TEXT,
    policy_version TEXT,
    status TEXT NOT NULL DEFAULT 'ok',
    error TEXT"""

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS inference_log_model_served ON inference_log (model_id, served_at)",
    "CREATE INDEX IF NOT EXISTS inference_log_route_served ON inference_log (route, served_at)",
    "CREATE INDEX IF NOT EXISTS inference_log_served ON inference_log (served_at)",
)

_DELETIONS = """CREATE TABLE IF NOT EXISTS subject_deletions (
    subject_hash TEXT PRIMARY KEY,
    deleted_at {ts} NOT NULL
)"""

_ENGINE_MS = "ALTER TABLE inference_log ADD COLUMN engine_ms {real}"

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "inference_log",
        (
            f"""CREATE TABLE IF NOT EXISTS inference_log (
    request_id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    input_features JSONB,
    output TEXT NOT NULL,
    confidence REAL,
    served_at TIMESTAMPTZ NOT NULL,
    was_correct BOOLEAN,
    failure_cluster TEXT,{_PRODUCT_COLUMNS}
)""",
            *_INDEXES,
        ),
    ),
    Migration(
        2,
        "input_store",
        (
            """CREATE TABLE IF NOT EXISTS input_store (
    request_id TEXT PRIMARY KEY,
    subject TEXT,
    route TEXT,
    model_id TEXT,
    prompt TEXT NOT NULL,
    output TEXT,
    stored_at TIMESTAMPTZ NOT NULL
)""",
            "CREATE INDEX IF NOT EXISTS input_store_subject ON input_store (subject)",
            "CREATE INDEX IF NOT EXISTS input_store_stored_at ON input_store (stored_at)",
        ),
    ),
    Migration(3, "subject_deletions", (_DELETIONS.format(ts="TIMESTAMPTZ"),)),
    Migration(4, "engine_ms", (_ENGINE_MS.format(real="DOUBLE PRECISION"),)),
)

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "inference_log",
        (
            f"""CREATE TABLE IF NOT EXISTS inference_log (
    request_id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    input_features TEXT,
    output TEXT NOT NULL,
    confidence REAL,
    served_at TEXT NOT NULL,
    was_correct INTEGER,
    failure_cluster TEXT,{_PRODUCT_COLUMNS}
)""",
            *_INDEXES,
        ),
    ),
    Migration(
        2,
        "input_store",
        (
            """CREATE TABLE IF NOT EXISTS input_store (
    request_id TEXT PRIMARY KEY,
    subject TEXT,
    route TEXT,
    model_id TEXT,
    prompt TEXT NOT NULL,
    output TEXT,
    stored_at TEXT NOT NULL
)""",
            "CREATE INDEX IF NOT EXISTS input_store_subject ON input_store (subject)",
            "CREATE INDEX IF NOT EXISTS input_store_stored_at ON input_store (stored_at)",
        ),
    ),
    Migration(3, "subject_deletions", (_DELETIONS.format(ts="TEXT"),)),
    Migration(4, "engine_ms", (_ENGINE_MS.format(real="REAL"),)),
)

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


def pending(migrations: tuple[Migration, ...], applied: set[int]) -> list[Migration]:
    """The migrations not yet applied, in version order."""
    return [m for m in sorted(migrations, key=lambda m: m.version) if m.version not in applied]
