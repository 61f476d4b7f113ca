"""Read queries for the runbook (assess, reports, flywheel) over the inference-log database.

Everything goes through :meth:`DriftStore.fetch` / :meth:`DriftStore.tx` with ``?``
placeholders and :meth:`DriftStore.ts` for timestamps, so one SQL text serves SQLite and
PostgreSQL. What the drift store does not expose yet lives here:

- :func:`iter_entries`: log rows with the columns a person needs (``input_hash``,
  ``output``; the monitor's :class:`~router.drift.events.LogRow` has neither), by time
  window, route, adapters, and "labelled failures only";
- :func:`model_routes` / :func:`route_models`: who served what in a window;
- :func:`stored_prompts`: raw prompts the optional input store still holds;
- :func:`require_incident` / :func:`incident_alerts`: an incident and its alerts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lora_router.ground.errors import LoraRouterError
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.store import DriftStore, json_in, ts_in

_IN_CHUNK = 500  # ids per IN (...) list


class DriftRecordNotFound(LoraRouterError):
    """No incident, alert, retraining trigger or log rows match what was asked for."""

    status_code = 404
    code = "drift_record_not_found"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One ``inference_log`` row, as the runbook reads it (never a raw prompt)."""

    request_id: str
    model_id: str
    route: str | None
    arm: str | None
    input_hash: str
    features: dict[str, Any]
    output: str
    served_at: datetime
    was_correct: bool | None
    failure_cluster: str | None
    status: str


_ENTRY_COLS = (
    "request_id, model_id, route, arm, input_hash, input_features, output, served_at,"
    " was_correct, failure_cluster, status"
)


def _entry(r: Sequence[Any]) -> LogEntry:
    feats = json_in(r[5])
    return LogEntry(
        request_id=str(r[0]), model_id=str(r[1]), route=r[2], arm=r[3], input_hash=str(r[4]),
        features=feats if isinstance(feats, dict) else {}, output=str(r[6] or ""),
        served_at=ts_in(r[7]), was_correct=None if r[8] is None else bool(r[8]),
        failure_cluster=r[9], status=str(r[10] or "ok"),
    )


def _window(store: DriftStore, since: datetime, until: datetime) -> tuple[list[str], list[Any]]:
    return ["served_at >= ?", "served_at < ?"], [store.ts(since), store.ts(until)]


async def iter_entries(
    store: DriftStore, *, since: datetime, until: datetime, route: str | None = None,
    model_ids: Sequence[str] | None = None, failures_only: bool = False,
    ok_only: bool = True, chunk: int = 2000,
) -> AsyncIterator[list[LogEntry]]:
    """Rows served in ``[since, until)``, oldest first, in chunks (keyset pagination)."""
    clauses, args = _window(store, since, until)
    if route is not None:
        clauses.append("route = ?")
        args.append(route)
    if model_ids is not None:
        if not model_ids:
            return
        clauses.append(f"model_id IN ({', '.join('?' * len(model_ids))})")
        args.extend(model_ids)
    if failures_only:
        clauses.append("was_correct = ?")
        args.append(False)
    if ok_only:
        clauses.append("status = 'ok'")
    base = f"SELECT {_ENTRY_COLS} FROM inference_log WHERE {' AND '.join(clauses)}"
    last: tuple[Any, str] | None = None
    while True:
        keyset = "" if last is None else " AND (served_at, request_id) > (?, ?)"
        rows = await store.fetch(
            f"{base}{keyset} ORDER BY served_at, request_id LIMIT ?",
            [*args, *(last or ()), chunk],
        )
        if not rows:
            return
        last = (rows[-1][7], str(rows[-1][0]))
        yield [_entry(r) for r in rows]


async def entries(store: DriftStore, **kw: Any) -> list[LogEntry]:
    """:func:`iter_entries`, collected."""
    return [e async for batch in iter_entries(store, **kw) for e in batch]


async def model_routes(store: DriftStore, model_id: str, *, since: datetime,
                       until: datetime) -> dict[str | None, int]:
    """Rows of ``model_id`` per route in the window (``None``: requests without a route)."""
    clauses, args = _window(store, since, until)
    rows = await store.fetch(
        f"SELECT route, COUNT(*) FROM inference_log WHERE model_id = ? AND {' AND '.join(clauses)}"
        " GROUP BY route", [model_id, *args],
    )
    return {r[0]: int(r[1]) for r in rows}


async def route_models(store: DriftStore, route: str, *, since: datetime,
                       until: datetime) -> dict[str, tuple[int, int]]:
    """``{model_id: (rows, labelled rows)}`` served on ``route`` in the window."""
    clauses, args = _window(store, since, until)
    rows = await store.fetch(
        "SELECT model_id, COUNT(*), COUNT(was_correct) FROM inference_log WHERE route = ? AND "
        f"{' AND '.join(clauses)} GROUP BY model_id", [route, *args],
    )
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


async def stored_prompts(store: DriftStore, request_ids: Sequence[str]) -> dict[str, str]:
    """Raw prompts the input store holds for these requests (absent: not stored, purged or
    deleted by subject)."""
    out: dict[str, str] = {}
    ids = list(dict.fromkeys(request_ids))
    for i in range(0, len(ids), _IN_CHUNK):
        part = ids[i:i + _IN_CHUNK]
        rows = await store.fetch(
            f"SELECT request_id, prompt FROM input_store WHERE request_id IN"
            f" ({', '.join('?' * len(part))})", part,
        )
        out.update({str(r[0]): str(r[1]) for r in rows})
    return out


async def require_incident(store: DriftStore, incident_id: int) -> Incident:
    incident = await store.incident(incident_id)
    if incident is None:
        raise DriftRecordNotFound(f"no incident {incident_id}", incident_id=incident_id)
    return incident


async def incident_alerts(store: DriftStore, incident: Incident) -> list[Alert]:
    """The incident's alerts, oldest first (an id whose alert is gone is skipped)."""
    found = [await store.alert(i) for i in incident.alert_ids]
    return sorted((a for a in found if a is not None), key=lambda a: a.id)
