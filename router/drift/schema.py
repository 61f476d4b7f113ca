"""The drift monitor's tables, as its own migration set in the inference-log database.

Separate from the log's migrations (:mod:`router.log.schema`, ``schema_migrations``): this
set is recorded in ``drift_schema_migrations`` and applied by the monitor when it opens its
store. It needs ``inference_log`` to exist (the log writer creates it).

How the monitor reads the log incrementally, without missing a row or a late label:

- **Labels** (``was_correct`` set by ``POST /v1/feedback``, usually long after the row was
  written) are noticed by triggers on ``inference_log``: the first time a row gets an
  outcome (an UPDATE from NULL, or an INSERT that carries one), a row is appended to
  ``drift_label_events``. The monitor reads that table in order; it never rescans the log.
- **Rows** (for input and output drift): SQLite hands out ``rowid`` in commit order (one
  writer at a time; log rows are never deleted), so ``rowid`` is the cursor. PostgreSQL
  commits concurrent transactions in any order, so a sequence alone could be read past a
  gap that fills later: rows and label events carry the inserting transaction's id
  (``drift_xid``) and a sequence number, and the monitor reads only below the oldest
  transaction still running (``pg_snapshot_xmin``), ordered by (xid, seq). Every row
  below that horizon is committed or gone, so the cursor never passes a row that is still
  to come. Rows written before this migration have no ``drift_xid`` and are not read.

Everything the monitor emits is kept here too: alerts with their evidence, incidents,
the webhook outbox, and the monitor's checkpoint (cursors and detector state, versioned so
that two monitors can never both commit a tick).
"""

from __future__ import annotations

from lora_router.router.log.schema import Migration

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS drift_schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

_ALERTS = """CREATE TABLE IF NOT EXISTS drift_alerts (
    id {pk},
    created_at {ts} NOT NULL,
    route TEXT NOT NULL,
    model_id TEXT NOT NULL,
    arm TEXT,
    signal TEXT NOT NULL,
    detector TEXT NOT NULL,
    method TEXT NOT NULL,
    severity TEXT NOT NULL,
    window_start {ts},
    window_end {ts},
    n INTEGER NOT NULL,
    estimate {real},
    bound {real},
    statistic {real} NOT NULL,
    threshold {real} NOT NULL,
    baseline {real},
    evidence TEXT NOT NULL,
    route_version INTEGER,
    guard_status TEXT NOT NULL,
    guard_detail TEXT,
    incident_id BIGINT
)"""

_INCIDENTS = """CREATE TABLE IF NOT EXISTS drift_incidents (
    id {pk},
    route TEXT NOT NULL,
    model_id TEXT NOT NULL,
    arm TEXT,
    opened_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    status TEXT NOT NULL,
    alert_ids TEXT NOT NULL,
    actions TEXT NOT NULL,
    summary TEXT NOT NULL
)"""

_OUTBOX = """CREATE TABLE IF NOT EXISTS drift_outbox (
    id {pk},
    kind TEXT NOT NULL,
    ref_id BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at {ts} NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {ts} NOT NULL,
    last_error TEXT,
    delivered_at {ts}
)"""

_CHECKPOINT = """CREATE TABLE IF NOT EXISTS drift_checkpoint (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    rows_a BIGINT NOT NULL,
    rows_b BIGINT NOT NULL,
    labels_a BIGINT NOT NULL,
    labels_b BIGINT NOT NULL,
    state TEXT NOT NULL,
    holder TEXT,
    updated_at {ts} NOT NULL
)"""

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS drift_alerts_route ON drift_alerts (route, created_at)",
    "CREATE INDEX IF NOT EXISTS drift_alerts_model ON drift_alerts (model_id, created_at)",
    "CREATE INDEX IF NOT EXISTS drift_alerts_pending ON drift_alerts (guard_status)",
    "CREATE INDEX IF NOT EXISTS drift_incidents_route ON drift_incidents (route, opened_at)",
    "CREATE INDEX IF NOT EXISTS drift_outbox_due ON drift_outbox (state, next_attempt_at)",
)

_XID = "(pg_current_xact_id()::text::bigint)"

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "drift_monitor",
        (
            _ALERTS.format(pk="BIGSERIAL PRIMARY KEY", ts="TIMESTAMPTZ", real="DOUBLE PRECISION"),
            _INCIDENTS.format(pk="BIGSERIAL PRIMARY KEY", ts="TIMESTAMPTZ"),
            _OUTBOX.format(pk="BIGSERIAL PRIMARY KEY", ts="TIMESTAMPTZ"),
            _CHECKPOINT.format(ts="TIMESTAMPTZ"),
            *_INDEXES,
            # the row cursor: existing rows keep NULL (no table rewrite), new rows get both
            "ALTER TABLE inference_log ADD COLUMN IF NOT EXISTS drift_xid BIGINT",
            "ALTER TABLE inference_log ADD COLUMN IF NOT EXISTS drift_seq BIGINT",
            "CREATE SEQUENCE IF NOT EXISTS drift_log_seq",
            f"ALTER TABLE inference_log ALTER COLUMN drift_xid SET DEFAULT {_XID}",
            "ALTER TABLE inference_log ALTER COLUMN drift_seq SET DEFAULT nextval('drift_log_seq')",
            "CREATE INDEX IF NOT EXISTS inference_log_drift_pos ON inference_log"
            " (drift_xid, drift_seq) WHERE drift_xid IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS drift_label_events (
    seq BIGSERIAL PRIMARY KEY,
    xid BIGINT NOT NULL DEFAULT {_XID},
    request_id TEXT NOT NULL,
    labelled_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)""",
            "CREATE INDEX IF NOT EXISTS drift_label_events_pos ON drift_label_events (xid, seq)",
            """CREATE OR REPLACE FUNCTION drift_label_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO drift_label_events (request_id) VALUES (NEW.request_id);
  RETURN NULL;
END $$""",
            """CREATE OR REPLACE TRIGGER drift_label_update AFTER UPDATE OF was_correct
ON inference_log FOR EACH ROW
WHEN (OLD.was_correct IS NULL AND NEW.was_correct IS NOT NULL)
EXECUTE FUNCTION drift_label_event()""",
            """CREATE OR REPLACE TRIGGER drift_label_insert AFTER INSERT ON inference_log
FOR EACH ROW WHEN (NEW.was_correct IS NOT NULL)
EXECUTE FUNCTION drift_label_event()""",
            "INSERT INTO drift_checkpoint (name, version, rows_a, rows_b, labels_a, labels_b,"
            " state, updated_at) VALUES ('monitor', 0, 0, 0, 0, 0, '{}', now())"
            " ON CONFLICT (name) DO NOTHING",
        ),
    ),
)

_NOW_SQLITE = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "drift_monitor",
        (
            _ALERTS.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", ts="TEXT", real="REAL"),
            _INCIDENTS.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", ts="TEXT"),
            _OUTBOX.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", ts="TEXT"),
            _CHECKPOINT.format(ts="TEXT"),
            *_INDEXES,
            """CREATE TABLE IF NOT EXISTS drift_label_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    labelled_at TEXT NOT NULL
)""",
            f"""CREATE TRIGGER IF NOT EXISTS drift_label_update AFTER UPDATE OF was_correct
ON inference_log FOR EACH ROW
WHEN OLD.was_correct IS NULL AND NEW.was_correct IS NOT NULL
BEGIN
  INSERT INTO drift_label_events (request_id, labelled_at)
  VALUES (NEW.request_id, {_NOW_SQLITE});
END""",
            f"""CREATE TRIGGER IF NOT EXISTS drift_label_insert AFTER INSERT ON inference_log
FOR EACH ROW WHEN NEW.was_correct IS NOT NULL
BEGIN
  INSERT INTO drift_label_events (request_id, labelled_at)
  VALUES (NEW.request_id, {_NOW_SQLITE});
END""",
            # rows already in the log are not read: the row cursor starts at the end
            "INSERT OR IGNORE INTO drift_checkpoint (name, version, rows_a, rows_b, labels_a,"
            " labels_b, state, updated_at) SELECT 'monitor', 0, 0, COALESCE(MAX(rowid), 0),"
            f" 0, 0, '{{}}', {_NOW_SQLITE} FROM inference_log",
        ),
    ),
)
