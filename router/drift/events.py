"""What the drift monitor reads and emits: log rows, alerts with evidence, incidents.

These are the records the runbook commands and reports query (:class:`DriftStore`'s read
methods return them); each serialises to JSON (``model_dump(mode="json")``), the form the
webhook sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Position = tuple[int, int]  # a cursor: PostgreSQL (xid, seq); SQLite (0, rowid or seq)
Signal = Literal["input", "output", "quality", "slice_quality"]
GuardStatus = Literal[
    "none",  # informational signal (input/output drift): the guard does not act on it
    "off",  # the route has no guard, or auto-rollback is off
    "pending",  # the guard will act on it
    "acted",  # the guard changed the route (see incident_id)
    "conflict",  # the route moved on since the alert was raised: nothing done
    "stale",  # the adapter no longer serves that arm of the route: nothing to do
    "failed",  # the guard tried and the route service refused (detail says why)
]
IncidentStatus = Literal["open", "contained", "resolved"]


@dataclass(frozen=True, slots=True)
class LogRow:
    """One inference-log row as the monitor reads it (``labelled_at``: label events only)."""

    pos: Position
    request_id: str
    model_id: str
    route: str | None
    arm: str | None
    flag_version: int | None
    features: dict[str, Any]
    served_at: datetime
    was_correct: bool | None
    failure_cluster: str | None
    status: str
    labelled_at: datetime | None = None


@dataclass(slots=True)
class Checkpoint:
    """The monitor's progress, committed with the alerts of each tick (``version`` is the
    compare-and-set token: a tick based on an older version commits nothing)."""

    version: int
    rows: Position
    labels: Position
    state: dict[str, Any] = field(default_factory=dict)


class AlertIn(BaseModel):
    """An alert as a detector raises it, before it is stored."""

    model_config = ConfigDict(frozen=True)

    created_at: datetime
    route: str
    model_id: str
    arm: str | None
    signal: Signal
    detector: str  # "overall", a protected slice ("language=es"), or a feature name
    method: str  # bernoulli-cusum | psi | ks
    severity: Literal["critical", "warning"]
    window_start: datetime | None
    window_end: datetime | None
    n: int  # observations in the window
    estimate: float | None  # accuracy in the window, or the drift statistic's value
    bound: float | None  # 95 % upper bound on the accuracy (quality signals)
    statistic: float  # CUSUM log-likelihood ratio, PSI, or KS D
    threshold: float
    baseline: float | None  # the gate bar (quality signals)
    evidence: dict[str, Any] = Field(default_factory=dict)
    route_version: int | None = None  # the route's version when the alert was raised
    guard_status: GuardStatus = "none"

    def summary(self) -> str:
        """One line for people (and the route change's reason)."""
        scope = f"{self.route} {self.model_id} ({self.arm or '-'})"
        if self.signal in ("quality", "slice_quality"):
            est = "n/a" if self.estimate is None else f"{self.estimate:.3f}"
            bound = "" if self.bound is None else f" (95% upper bound {self.bound:.3f})"
            bar = "n/a" if self.baseline is None else f"{self.baseline:.3f}"
            return (
                f"{self.signal} {self.detector} on {scope}: accuracy {est}{bound} over"
                f" {self.n} labelled requests vs gate bar {bar}; CUSUM"
                f" {self.statistic:.2f} >= {self.threshold:.2f}"
            )
        return (
            f"{self.signal} drift {self.detector} on {scope}: {self.method}"
            f" {self.statistic:.3f} >= {self.threshold:.3f} over {self.n} requests"
        )


class Alert(AlertIn):
    """A stored alert."""

    id: int
    guard_detail: str | None = None
    incident_id: int | None = None


class Incident(BaseModel):
    """Opened by every guard action; later runbook steps append to ``actions``."""

    id: int
    route: str
    model_id: str
    arm: str | None
    opened_at: datetime
    updated_at: datetime
    status: IncidentStatus
    alert_ids: list[int]
    actions: list[dict[str, Any]]
    summary: str


class OutboxItem(BaseModel):
    """One event waiting for (or done with) webhook delivery."""

    id: int
    kind: Literal["alert", "incident"]
    ref_id: int
    payload: dict[str, Any]
    created_at: datetime
    state: Literal["pending", "delivered"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None
