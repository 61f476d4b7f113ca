"""The dashboard state's JSON shape (``GET /admin/dashboard/state``), and the one-line
"before -> after" of an audit entry."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.flags.store import AuditEntry
from lora_router.router.flags.views import StoreOut
from lora_router.router.log.cost import CostReport

Window = Literal["15m", "1h"]
DriftLevel = Literal["ok", "warning", "critical", "off", "unknown"]


class AuditItem(BaseModel):
    """One committed change: who, when, why, and what it changed."""

    version: int
    at: datetime
    by: str
    action: str
    reason: str
    changes: list[str] = Field(description="'field: before -> after', one per field changed.")

    @classmethod
    def of(cls, e: AuditEntry) -> AuditItem:
        return cls(version=e.version, at=e.at, by=e.by, action=e.action, reason=e.reason,
                   changes=describe_change(e.before, e.after))


class RouteOut(BaseModel):
    """A route's flag now, and its latest changes (newest first)."""

    route: str
    version: int
    live: str
    canary: Split | None
    shadow: Split | None
    rollback_target: str | None
    guard: GuardPolicy | None
    updated_by: str
    updated_at: datetime
    reason: str
    audit: list[AuditItem]
    audit_note: str | None = Field(description="Why the audit is missing, if it is.")

    @classmethod
    def of(cls, s: RouteState, audit: list[AuditItem], note: str | None) -> RouteOut:
        return cls(route=s.route, version=s.version, live=s.live, canary=s.canary,
                   shadow=s.shadow, rollback_target=s.rollback_target, guard=s.guard,
                   updated_by=s.updated_by, updated_at=s.updated_at, reason=s.reason,
                   audit=audit, audit_note=note)


class DriftBadge(BaseModel):
    status: DriftLevel = Field(description="The worst open alert's severity; ok when none; "
                               "off without a drift monitor; unknown when unreadable.")
    alerts: int


class Point(BaseModel):
    """One time bucket (starting at ``t``)."""

    t: datetime
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    labelled: int
    accuracy: float | None


class SliceStats(BaseModel):
    """Requests of one adapter, all of them (``slice`` "all") or one slice ("language=es")."""

    slice: str
    protected: bool = Field(description="A route's drift guard watches this slice.")
    requests: int
    errors: int
    rate_per_min: float
    latency_p50_ms: float | None = Field(description="Estimated from 20 %-wide latency bins.")
    latency_p95_ms: float | None
    labelled: int
    accuracy: float | None = Field(description="Correct / labelled (None: no labels).")
    drift: DriftBadge
    series: list[Point]


class ModelStats(BaseModel):
    model_id: str
    routes: list[str]
    arms: list[str]
    overall: SliceStats
    slices: list[SliceStats]


class TrafficOut(BaseModel):
    """The inference log over the window, per adapter (``model_id``) and slice."""

    window: Window
    since: datetime
    until: datetime
    bucket_s: int
    requests: int = Field(description="Requests logged in the window (every adapter).")
    available: bool
    note: str | None
    models: list[ModelStats]


class DriftOut(BaseModel):
    """The drift monitor's open alerts (last 24 h, not of a resolved incident) and
    incidents (open or contained)."""

    monitor: Literal["on", "off"]
    available: bool
    note: str | None
    alerts: list[Alert]
    incidents: list[Incident]


class CostOut(BaseModel):
    """Cost per model_id and route over the last ``window`` (:mod:`router.log.cost`)."""

    window: str
    available: bool
    note: str | None
    report: CostReport | None


class Viewer(BaseModel):
    principal: str = Field(description="Who the audit will name for a change made now.")
    role: str


class DashboardState(BaseModel):
    """``GET /admin/dashboard/state``."""

    generated_at: datetime
    refresh_s: float
    viewer: Viewer
    store: StoreOut
    routes: list[RouteOut]
    traffic: TrafficOut
    drift: DriftOut
    cost: CostOut | None = Field(default=None, description="Requests, tokens, engine "
                                 "seconds and estimated cost per model_id and route.")


_FIELDS = ("live", "canary", "shadow", "rollback_target", "guard", "task")


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, Split):
        return f"{value.adapter} {value.percent:g}%"
    if isinstance(value, GuardPolicy):
        auto = "auto-rollback" if value.auto_rollback else "alerts only"
        return f"{auto}, protect [{', '.join(value.protect)}]"
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return str(value)


def describe_change(before: RouteState | None, after: RouteState) -> list[str]:
    """``field: before -> after`` for every routing field that changed (a new route: every
    field it has)."""
    out = []
    for name in _FIELDS:
        new = getattr(after, name)
        old = None if before is None else getattr(before, name)
        if before is None and name == "task":
            continue
        if old != new:
            out.append(f"{name}: {_show(old)} -> {_show(new)}")
    return out
