"""Retraining triggers, stored in the log database next to the drift monitor's tables.

One trigger per adapter version and route (``drift_retrain_triggers``, unique on
``(route, model_id)``): the first quality or slice-quality alert on it creates the
trigger, later ones are attached to it (``alert_ids``), so two monitors, the guard and a
person running ``incident export`` all end up with the same trigger. Its own small
migration set (recorded in ``drift_flywheel_migrations``), applied by
:func:`migrate_triggers` in one transaction (PostgreSQL: under an advisory lock).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from lora_router.router.drift.events import Alert
from lora_router.router.drift.store import DriftStore, Tx, json_in, ts_in
from lora_router.router.log.schema import Migration, pending


class Trigger(BaseModel):
    """A retraining trigger and where its export is."""

    id: int
    created_at: datetime
    updated_at: datetime
    route: str
    model_id: str
    alert_ids: list[int]  # the first one created it
    incident_id: int | None
    signal: str  # of the first alert
    detector: str
    reason: str
    status: str  # open | exported
    export_dir: str | None  # relative to the home
    failures: int | None
    prompts: int | None
    exported_at: datetime | None


_TABLE = """CREATE TABLE IF NOT EXISTS drift_retrain_triggers (
    id {pk},
    created_at {ts} NOT NULL,
    updated_at {ts} NOT NULL,
    route TEXT NOT NULL,
    model_id TEXT NOT NULL,
    alert_ids TEXT NOT NULL,
    incident_id BIGINT,
    signal TEXT NOT NULL,
    detector TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    export_dir TEXT,
    failures INTEGER,
    prompts INTEGER,
    exported_at {ts},
    UNIQUE (route, model_id)
)"""
_MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "postgres": (Migration(1, "retrain_triggers", (
        _TABLE.format(pk="BIGSERIAL PRIMARY KEY", ts="TIMESTAMPTZ"),)),),
    "sqlite": (Migration(1, "retrain_triggers", (
        _TABLE.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", ts="TEXT"),)),),
}
_LOCK = {"postgres": "SELECT pg_advisory_xact_lock(7812631416)"}  # one migrator at a time
_COLS = (
    "id, created_at, updated_at, route, model_id, alert_ids, incident_id, signal, detector,"
    " reason, status, export_dir, failures, prompts, exported_at"
)


async def migrate_triggers(store: DriftStore) -> None:
    """Create the triggers table (idempotent; cheap once applied)."""
    async with store.tx() as tx:
        if store.name in _LOCK:
            await tx.run(_LOCK[store.name])
        await tx.run("CREATE TABLE IF NOT EXISTS drift_flywheel_migrations (version INTEGER"
                     " PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        applied = {int(r[0]) for r in
                   await tx.run("SELECT version FROM drift_flywheel_migrations")}
        for mig in pending(_MIGRATIONS[store.name], applied):
            for stmt in mig.statements:
                await tx.run(stmt)
            await tx.run("INSERT INTO drift_flywheel_migrations (version, name, applied_at)"
                         " VALUES (?, ?, ?)", (mig.version, mig.name, store.clock().isoformat()))


def _trigger(r: Sequence[Any]) -> Trigger:
    return Trigger(
        id=int(r[0]), created_at=ts_in(r[1]), updated_at=ts_in(r[2]), route=r[3],
        model_id=r[4], alert_ids=[int(i) for i in json_in(r[5])],
        incident_id=None if r[6] is None else int(r[6]), signal=r[7], detector=r[8],
        reason=r[9], status=r[10], export_dir=r[11],
        failures=None if r[12] is None else int(r[12]),
        prompts=None if r[13] is None else int(r[13]),
        exported_at=None if r[14] is None else ts_in(r[14]),
    )


async def _one(tx: Tx, route: str, model_id: str) -> Trigger:
    (row,) = await tx.run(
        f"SELECT {_COLS} FROM drift_retrain_triggers WHERE route = ? AND model_id = ?",
        (route, model_id))
    return _trigger(row)


async def record_trigger(store: DriftStore, alert: Alert) -> tuple[Trigger, bool]:
    """The trigger of the alert's (route, adapter): created by this alert (``True``), or
    the existing one with the alert attached (``False``; attaching twice is a no-op)."""
    now = store.ts(store.clock())
    async with store.tx() as tx:
        made = await tx.run(
            "INSERT INTO drift_retrain_triggers (created_at, updated_at, route, model_id,"
            " alert_ids, incident_id, signal, detector, reason, status) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open') ON CONFLICT (route, model_id) DO NOTHING"
            " RETURNING id",
            (now, now, alert.route, alert.model_id, json.dumps([alert.id]), alert.incident_id,
             alert.signal, alert.detector, alert.summary()),
        )
        found = await _one(tx, alert.route, alert.model_id)
        if not made and alert.id not in found.alert_ids:
            await tx.run(
                "UPDATE drift_retrain_triggers SET alert_ids = ?, updated_at = ?,"
                " incident_id = COALESCE(incident_id, ?) WHERE id = ?",
                (json.dumps([*found.alert_ids, alert.id]), now, alert.incident_id, found.id))
            found = await _one(tx, alert.route, alert.model_id)
    return found, bool(made)


async def mark_exported(store: DriftStore, trigger: Trigger, *, export_dir: str,
                        failures: int, prompts: int, incident_id: int | None) -> Trigger:
    now = store.ts(store.clock())
    async with store.tx() as tx:
        await tx.run(
            "UPDATE drift_retrain_triggers SET status = 'exported', export_dir = ?,"
            " failures = ?, prompts = ?, exported_at = ?, updated_at = ?,"
            " incident_id = COALESCE(incident_id, ?) WHERE id = ?",
            (export_dir, failures, prompts, now, now, incident_id, trigger.id))
        return await _one(tx, trigger.route, trigger.model_id)


async def triggers(store: DriftStore, *, route: str | None = None,
                   model_id: str | None = None, limit: int = 100) -> list[Trigger]:
    """Triggers, newest first (optionally of one route and adapter)."""
    clauses, args = [], []
    for col, value in (("route", route), ("model_id", model_id)):
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await store.fetch(
        f"SELECT {_COLS} FROM drift_retrain_triggers{where} ORDER BY id DESC LIMIT ?",
        [*args, limit])
    return [_trigger(r) for r in rows]
