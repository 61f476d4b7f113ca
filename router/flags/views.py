"""Wire shapes of route changes, shared by the admin API and the CLI (HTTP or direct)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from lora_router.router.flags.route_service import ChangeResult
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry, StoreHealth


class AppliedOut(BaseModel):
    version: int
    elapsed_ms: float | None
    replicas: list[str]
    pending: list[str]
    dropped: list[str] = []  # stopped heartbeating before applying (not waited for)


class ChangeOut(BaseModel):
    """A committed change; ``applied`` is null when replicas are not tracked."""

    action: str
    state: RouteState
    prepare_ms: float
    commit_ms: float
    applied: AppliedOut | None
    committed_at: datetime | None = None  # when the store acknowledged the write (wall clock)

    @classmethod
    def of(cls, result: ChangeResult) -> ChangeOut:
        applied = None
        if result.applied is not None:
            a = result.applied
            applied = AppliedOut(
                version=a.version, elapsed_ms=a.elapsed_ms, replicas=a.replicas,
                pending=a.pending, dropped=a.dropped,
            )
        return cls(
            action=result.action,
            state=result.state,
            prepare_ms=result.prepare_ms,
            commit_ms=result.commit_ms,
            applied=applied,
            committed_at=result.committed_at,
        )


class StoreOut(BaseModel):
    backend: str
    connected: bool
    last_sync_at: datetime | None
    age_s: float | None

    @classmethod
    def of(cls, health: StoreHealth) -> StoreOut:
        return cls(
            backend=health.backend,
            connected=health.connected,
            last_sync_at=health.last_sync_at,
            age_s=health.age_s(),
        )


class RoutesOut(BaseModel):
    routes: list[RouteState]
    store: StoreOut


class AuditOut(BaseModel):
    route: str
    entries: list[AuditEntry]
