"""The drift store: the monitor's tables in the inference-log database (SQLite or PostgreSQL).

One class per database (:mod:`router.drift.pg_store`, :mod:`router.drift.sqlite_store`)
supplies the connection, the transaction and the two incremental reads; everything else is
shared SQL, written with ``?`` placeholders. Contract:

- ``read_rows(after)`` / ``read_labels(after)``: log rows written, and rows labelled for
  the first time, after a position, in order (see :mod:`router.drift.schema`).
- ``commit_tick``: one transaction: the checkpoint moves from ``expected_version`` to the
  next (``CheckpointConflict`` if another monitor moved it first: nothing is written), the
  tick's alerts are inserted and, with a webhook, queued in the outbox (except repeats of
  an alarm the same test raised just before).
- ``record_incident``: opens an incident for (route, adapter) or appends to the one still
  open, and marks the alerts; queued in the outbox with a webhook.
- Queries for people and reports: ``alerts``, ``alert``, ``incidents``, ``incident``,
  ``outbox``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from lora_router.ground.errors import VersionConflict
from lora_router.router.drift.events import (
    Alert,
    AlertIn,
    Checkpoint,
    GuardStatus,
    Incident,
    IncidentStatus,
    LogRow,
    OutboxItem,
    Position,
)


class CheckpointConflict(VersionConflict):
    """Another monitor committed a tick since this one read the checkpoint."""

    code = "drift_checkpoint_conflict"


class Tx(Protocol):
    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


LOG_COLS = (
    "l.request_id, l.model_id, l.route, l.arm, l.flag_version, l.input_features, l.served_at,"
    " l.was_correct, l.failure_cluster, l.status"
)
_ALERT_COLS = (
    "id, created_at, route, model_id, arm, signal, detector, method, severity, window_start,"
    " window_end, n, estimate, bound, statistic, threshold, baseline, evidence, route_version,"
    " guard_status, guard_detail, incident_id"
)
_INCIDENT_COLS = (
    "id, route, model_id, arm, opened_at, updated_at, status, alert_ids, actions, summary"
)
_OUTBOX_COLS = (
    "id, kind, ref_id, payload, created_at, state, attempts, next_attempt_at, last_error,"
    " delivered_at"
)
_INSERT_ALERT = (
    "INSERT INTO drift_alerts (created_at, route, model_id, arm, signal, detector, method,"
    " severity, window_start, window_end, n, estimate, bound, statistic, threshold, baseline,"
    " evidence, route_version, guard_status) VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_OUTBOX = (
    "INSERT INTO drift_outbox (kind, ref_id, payload, created_at, state, attempts,"
    " next_attempt_at) VALUES (?, ?, ?, ?, 'pending', 0, ?)"
)
_SAVE_CHECKPOINT = (
    "UPDATE drift_checkpoint SET version = ?, rows_a = ?, rows_b = ?, labels_a = ?,"
    " labels_b = ?, state = ?, holder = ?, updated_at = ? WHERE name = 'monitor'"
    " AND version = ? RETURNING version"
)


def ts_in(value: Any) -> datetime:
    """A timestamp as either database returns it, as an aware UTC datetime."""
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _opt_ts(value: Any) -> datetime | None:
    return None if value is None else ts_in(value)


def json_in(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def log_row(values: Sequence[Any], pos: Position, labelled_at: Any = None) -> LogRow:
    """A :class:`LogRow` from the ``LOG_COLS`` values."""
    rid, model_id, route, arm, flag_version, feats, served_at, wc, cluster, status = values
    features = json_in(feats)
    return LogRow(
        pos=pos, request_id=rid, model_id=model_id, route=route, arm=arm,
        flag_version=flag_version, features=features if isinstance(features, dict) else {},
        served_at=ts_in(served_at), was_correct=None if wc is None else bool(wc),
        failure_cluster=cluster, status=status or "ok", labelled_at=_opt_ts(labelled_at),
    )


class DriftStore(ABC):
    """The monitor's tables (see the module docstring); ``open`` applies the migrations."""

    name = "abstract"

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))

    # --- what each database supplies ---------------------------------------------------

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def tx(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def ts(self, value: datetime) -> Any:
        """A timestamp as this database stores it."""

    @abstractmethod
    async def read_rows(self, after: Position, limit: int) -> list[LogRow]: ...

    @abstractmethod
    async def read_labels(self, after: Position, limit: int) -> list[LogRow]: ...

    # --- the checkpoint and the tick ----------------------------------------------------

    async def load_checkpoint(self) -> Checkpoint:
        rows = await self.fetch(
            "SELECT version, rows_a, rows_b, labels_a, labels_b, state FROM drift_checkpoint"
            " WHERE name = 'monitor'"
        )
        version, ra, rb, la, lb, state = rows[0]
        return Checkpoint(int(version), (int(ra), int(rb)), (int(la), int(lb)),
                          json_in(state) or {})

    async def commit_tick(
        self, cp: Checkpoint, expected_version: int, alerts: Sequence[AlertIn], *,
        holder: str, outbox: bool,
    ) -> list[Alert]:
        """Save ``cp`` (as version ``expected_version + 1``) and insert ``alerts``."""
        now = self.clock()
        stored: list[Alert] = []
        async with self.tx() as tx:
            ok = await tx.run(_SAVE_CHECKPOINT, (
                expected_version + 1, *cp.rows, *cp.labels, json.dumps(cp.state), holder,
                self.ts(now), expected_version,
            ))
            if not ok:
                raise CheckpointConflict(
                    f"drift checkpoint moved past version {expected_version}",
                    expected=expected_version,
                )
            for a in alerts:
                (alert_id,), = await tx.run(_INSERT_ALERT, self._alert_args(a))
                alert = Alert(id=int(alert_id), **a.model_dump())
                stored.append(alert)
                if outbox and not a.evidence.get("repeat"):
                    await self._enqueue(tx, "alert", alert.id, alert.model_dump(mode="json"))
        cp.version = expected_version + 1
        return stored

    def _alert_args(self, a: AlertIn) -> tuple[Any, ...]:
        return (
            self.ts(a.created_at), a.route, a.model_id, a.arm, a.signal, a.detector, a.method,
            a.severity, _opt(self.ts, a.window_start), _opt(self.ts, a.window_end), a.n,
            a.estimate, a.bound, a.statistic, a.threshold, a.baseline,
            json.dumps(a.evidence, default=str), a.route_version, a.guard_status,
        )

    async def _enqueue(self, tx: Tx, kind: str, ref_id: int, payload: dict[str, Any]) -> None:
        now = self.ts(self.clock())
        body = json.dumps({"kind": kind, "id": ref_id, "data": payload}, default=str)
        await tx.run(_INSERT_OUTBOX, (kind, ref_id, body, now, now))

    # --- the guard ------------------------------------------------------------------------

    async def pending_alerts(self, limit: int = 100) -> list[Alert]:
        """Alerts the guard has not handled yet, oldest first."""
        rows = await self.fetch(
            f"SELECT {_ALERT_COLS} FROM drift_alerts WHERE guard_status = 'pending'"
            " ORDER BY id LIMIT ?", (limit,),
        )
        return [_alert(r) for r in rows]

    async def set_guard_status(
        self, alert_ids: Sequence[int], status: GuardStatus, detail: str | None = None
    ) -> None:
        """Settle pending alerts without an action (an alert the guard acted on, perhaps in
        another monitor, keeps its status)."""
        async with self.tx() as tx:
            for alert_id in alert_ids:
                await tx.run(
                    "UPDATE drift_alerts SET guard_status = ?, guard_detail = ? WHERE id = ?"
                    " AND guard_status = 'pending'",
                    (status, detail, alert_id),
                )

    async def record_incident(
        self, *, route: str, model_id: str, arm: str | None, alert_ids: Sequence[int],
        action: dict[str, Any], status: IncidentStatus, guard_status: GuardStatus,
        summary: str, outbox: bool,
    ) -> Incident:
        """Open an incident for (route, adapter), or append to the one not yet resolved;
        the alerts get ``guard_status`` and the incident's id."""
        now = self.clock()
        async with self.tx() as tx:
            found = await tx.run(
                f"SELECT {_INCIDENT_COLS} FROM drift_incidents WHERE route = ? AND model_id = ?"
                " AND status <> 'resolved' ORDER BY id DESC LIMIT 1", (route, model_id),
            )
            if found:
                inc = _incident(found[0])
                ids = [*inc.alert_ids, *(i for i in alert_ids if i not in inc.alert_ids)]
                await tx.run(
                    "UPDATE drift_incidents SET alert_ids = ?, actions = ?, status = ?,"
                    " updated_at = ? WHERE id = ?",
                    (json.dumps(ids), json.dumps([*inc.actions, action], default=str), status,
                     self.ts(now), inc.id),
                )
                incident_id = inc.id
            else:
                (new_id,), = await tx.run(
                    "INSERT INTO drift_incidents (route, model_id, arm, opened_at, updated_at,"
                    " status, alert_ids, actions, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " RETURNING id",
                    (route, model_id, arm, self.ts(now), self.ts(now), status,
                     json.dumps(list(alert_ids)), json.dumps([action], default=str), summary),
                )
                incident_id = int(new_id)
            for alert_id in alert_ids:
                await tx.run(
                    "UPDATE drift_alerts SET guard_status = ?, guard_detail = ?,"
                    " incident_id = ? WHERE id = ?",
                    (guard_status, action.get("detail"), incident_id, alert_id),
                )
            (row,) = await tx.run(
                f"SELECT {_INCIDENT_COLS} FROM drift_incidents WHERE id = ?", (incident_id,)
            )
            incident = _incident(row)
            if outbox:
                await self._enqueue(tx, "incident", incident.id, incident.model_dump(mode="json"))
        return incident

    # --- the webhook outbox ---------------------------------------------------------------

    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        rows = await self.fetch(
            f"SELECT {_OUTBOX_COLS} FROM drift_outbox WHERE state = 'pending'"
            " AND next_attempt_at <= ? ORDER BY id LIMIT ?", (self.ts(self.clock()), limit),
        )
        return [_outbox(r) for r in rows]

    async def outbox_delivered(self, item_id: int) -> None:
        async with self.tx() as tx:
            await tx.run(
                "UPDATE drift_outbox SET state = 'delivered', attempts = attempts + 1,"
                " delivered_at = ?, last_error = NULL WHERE id = ?",
                (self.ts(self.clock()), item_id),
            )

    async def outbox_retry(self, item_id: int, error: str, next_at: datetime) -> None:
        async with self.tx() as tx:
            await tx.run(
                "UPDATE drift_outbox SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?", (error[:500], self.ts(next_at), item_id),
            )

    async def outbox_pending(self) -> int:
        (n,), = await self.fetch("SELECT COUNT(*) FROM drift_outbox WHERE state = 'pending'")
        return int(n)

    async def outbox(self, state: str | None = None, limit: int = 1000) -> list[OutboxItem]:
        where, args = (" WHERE state = ?", [state]) if state else ("", [])
        rows = await self.fetch(
            f"SELECT {_OUTBOX_COLS} FROM drift_outbox{where} ORDER BY id LIMIT ?", [*args, limit]
        )
        return [_outbox(r) for r in rows]

    # --- queries (runbook, reports) ---------------------------------------------------------

    async def alerts(
        self, *, route: str | None = None, model_id: str | None = None,
        since: datetime | None = None, limit: int = 100,
    ) -> list[Alert]:
        """Alerts, newest first, filtered by route, adapter and time."""
        clauses, args = _filters(route=route, model_id=model_id)
        if since is not None:
            clauses.append("created_at >= ?")
            args.append(self.ts(since))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.fetch(
            f"SELECT {_ALERT_COLS} FROM drift_alerts{where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        return [_alert(r) for r in rows]

    async def alert(self, alert_id: int) -> Alert | None:
        rows = await self.fetch(f"SELECT {_ALERT_COLS} FROM drift_alerts WHERE id = ?",
                                (alert_id,))
        return _alert(rows[0]) if rows else None

    async def incidents(
        self, *, route: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Incidents, newest first."""
        clauses, args = _filters(route=route, status=status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.fetch(
            f"SELECT {_INCIDENT_COLS} FROM drift_incidents{where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        return [_incident(r) for r in rows]

    async def incident(self, incident_id: int) -> Incident | None:
        rows = await self.fetch(
            f"SELECT {_INCIDENT_COLS} FROM drift_incidents WHERE id = ?", (incident_id,)
        )
        return _incident(rows[0]) if rows else None


def _opt(fn: Callable[[datetime], Any], value: datetime | None) -> Any:
    return None if value is None else fn(value)


def _filters(**kw: str | None) -> tuple[list[str], list[Any]]:
    clauses, args = [], []
    for col, value in kw.items():
        if value is not None:
            clauses.append(f"{col} = ?")
            args.append(value)
    return clauses, args


def _alert(r: Sequence[Any]) -> Alert:
    return Alert(
        id=int(r[0]), created_at=ts_in(r[1]), route=r[2], model_id=r[3], arm=r[4], signal=r[5],
        detector=r[6], method=r[7], severity=r[8], window_start=_opt_ts(r[9]),
        window_end=_opt_ts(r[10]), n=int(r[11]), estimate=r[12], bound=r[13], statistic=r[14],
        threshold=r[15], baseline=r[16], evidence=json_in(r[17]) or {}, route_version=r[18],
        guard_status=r[19], guard_detail=r[20],
        incident_id=None if r[21] is None else int(r[21]),
    )


def _incident(r: Sequence[Any]) -> Incident:
    return Incident(
        id=int(r[0]), route=r[1], model_id=r[2], arm=r[3], opened_at=ts_in(r[4]),
        updated_at=ts_in(r[5]), status=r[6], alert_ids=json_in(r[7]), actions=json_in(r[8]),
        summary=r[9],
    )


def _outbox(r: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        id=int(r[0]), kind=r[1], ref_id=int(r[2]), payload=json_in(r[3]),
        created_at=ts_in(r[4]), state=r[5], attempts=int(r[6]), next_attempt_at=ts_in(r[7]),
        last_error=r[8], delivered_at=_opt_ts(r[9]),
    )
