"""What the dashboard reads from the inference-log database: request counts grouped by
adapter, slice, time bucket and latency bin (never an input or an output), and the drift
monitor's open alerts and incidents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lora_router.router.dashboard.histogram import bin_sql
from lora_router.router.dashboard.reader import LogReader
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.store import json_in, ts_in

_ALERT_COLS = (
    "id", "created_at", "route", "model_id", "arm", "signal", "detector", "method", "severity",
    "window_start", "window_end", "n", "estimate", "bound", "statistic", "threshold",
    "baseline", "evidence", "route_version", "guard_status", "guard_detail", "incident_id",
)
_INCIDENT_COLS = (
    "id", "route", "model_id", "arm", "opened_at", "updated_at", "status", "alert_ids",
    "actions", "summary",
)


@dataclass(frozen=True, slots=True)
class Counts:
    """Requests of one adapter, route, arm and slice values, in one time bucket and one
    latency bin (:mod:`router.dashboard.histogram`)."""

    model_id: str
    route: str | None
    arm: str | None
    slices: tuple[str, ...]  # "language=es", one per slice feature the rows have
    bucket: int
    latency_bin: int
    requests: int
    errors: int
    labelled: int
    correct: int


async def traffic_counts(
    reader: LogReader, *, since: datetime, bucket_s: int, features: Sequence[str]
) -> list[Counts]:
    """Counts of the rows served at or after ``since``, grouped in the database: a few
    rows per adapter, slice and bucket, however many requests were served."""
    if not await reader.has_table("inference_log"):
        return []
    exprs = [reader.feature(f) for f in features]
    bucket_sql, bucket_args = reader.bucket(since, bucket_s)
    cols = ["model_id", "route", "arm", *(sql for sql, _ in exprs), bucket_sql,
            bin_sql("latency_ms")]
    rows = await reader.fetch(
        f"SELECT {', '.join(cols)}, COUNT(*),"
        " SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), COUNT(was_correct),"
        " SUM(CASE WHEN was_correct THEN 1 ELSE 0 END)"
        " FROM inference_log WHERE served_at >= ?"
        f" GROUP BY {', '.join(str(i) for i in range(1, len(cols) + 1))}",
        [*(arg for _, arg in exprs), *bucket_args, reader.ts(since)],
    )
    return [_counts(r, features) for r in rows]


def _counts(r: Sequence[Any], features: Sequence[str]) -> Counts:
    k = len(features)
    values = r[3:3 + k]
    bucket, latency_bin, n, errors, labelled, correct = r[3 + k:]
    return Counts(
        model_id=str(r[0]), route=r[1], arm=r[2],
        slices=tuple(f"{f}={v}" for f, v in zip(features, values, strict=True)
                     if v is not None),
        bucket=int(bucket), latency_bin=int(latency_bin), requests=int(n),
        errors=int(errors or 0), labelled=int(labelled or 0), correct=int(correct or 0),
    )


async def open_alerts(reader: LogReader, *, since: datetime, limit: int) -> list[Alert]:
    """Alerts raised since ``since``, newest first, except those of a resolved incident."""
    if not await reader.has_table("drift_alerts"):
        return []
    join = ""
    unresolved = ""
    if await reader.has_table("drift_incidents"):
        join = " LEFT JOIN drift_incidents i ON i.id = a.incident_id"
        unresolved = " AND (i.status IS NULL OR i.status <> 'resolved')"
    cols = ", ".join(f"a.{c}" for c in _ALERT_COLS)
    rows = await reader.fetch(
        f"SELECT {cols} FROM drift_alerts a{join} WHERE a.created_at >= ?{unresolved}"
        " ORDER BY a.id DESC LIMIT ?",
        (reader.ts(since), limit),
    )
    return [_alert(r) for r in rows]


async def open_incidents(reader: LogReader, *, limit: int) -> list[Incident]:
    """Incidents not yet resolved (open or contained), newest first."""
    if not await reader.has_table("drift_incidents"):
        return []
    rows = await reader.fetch(
        f"SELECT {', '.join(_INCIDENT_COLS)} FROM drift_incidents WHERE status <> 'resolved'"
        " ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [_incident(r) for r in rows]


def _alert(r: Sequence[Any]) -> Alert:
    v = dict(zip(_ALERT_COLS, r, strict=True))
    v["created_at"] = ts_in(v["created_at"])
    for name in ("window_start", "window_end"):
        v[name] = None if v[name] is None else ts_in(v[name])
    v["evidence"] = json_in(v["evidence"]) or {}
    return Alert.model_validate(v)


def _incident(r: Sequence[Any]) -> Incident:
    v = dict(zip(_INCIDENT_COLS, r, strict=True))
    v["opened_at"], v["updated_at"] = ts_in(v["opened_at"]), ts_in(v["updated_at"])
    v["alert_ids"], v["actions"] = json_in(v["alert_ids"]) or [], json_in(v["actions"]) or []
    return Incident.model_validate(v)
