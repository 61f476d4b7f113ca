"""In-process route store: the contract in memory, nothing kept across a restart (tests,
throwaway runs). The embedded default is the durable :mod:`router.flags.sqlite_store`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from lora_router.ground.errors import VersionConflict
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry, Listener, RouteStore


class MemoryRouteStore(RouteStore):
    def __init__(self) -> None:
        self._states: dict[str, RouteState] = {}
        self._audit: dict[str, list[AuditEntry]] = {}
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def get(self, route: str) -> RouteState | None:
        return self._states.get(route)

    def all(self) -> dict[str, RouteState]:
        return dict(self._states)

    async def seed(self, states: dict[str, RouteState]) -> None:
        async with self._lock:
            for name, state in states.items():
                if name not in self._states:
                    self._commit(state.model_copy(update={"version": 1}), None, "seed")

    async def put(
        self, state: RouteState, expected_version: int, action: str = "set"
    ) -> RouteState:
        async with self._lock:
            current = self._states.get(state.route)
            found = current.version if current else 0
            if found != expected_version:
                raise VersionConflict(
                    f"route {state.route!r} is at version {found}, not {expected_version}",
                    route=state.route,
                    expected=expected_version,
                    found=found,
                )
            new = state.model_copy(
                update={"version": expected_version + 1, "updated_at": datetime.now(UTC)}
            )
            self._commit(new, current, action)
            return new

    def _commit(self, new: RouteState, before: RouteState | None, action: str) -> None:
        self._states[new.route] = new
        self._audit.setdefault(new.route, []).append(
            AuditEntry(
                route=new.route,
                version=new.version,
                at=new.updated_at,
                by=new.updated_by,
                reason=new.reason,
                action=action,
                before=before,
                after=new,
            )
        )
        for fn in self._listeners:
            fn(new)

    async def audit(self, route: str, limit: int = 1000) -> list[AuditEntry]:
        return self._audit.get(route, [])[-limit:]

    def subscribe(self, fn: Listener) -> None:
        self._listeners.append(fn)
