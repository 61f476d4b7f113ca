"""The route store interface. Implementations: ``sqlite`` (the embedded default: durable,
one process), ``redis`` (shared by replicas) and ``memory`` (in-process, for tests).

All pass the same contract suite (tests/flags/test_store_contract.py).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from lora_router.router.flags.state import RouteState

Listener = Callable[[RouteState], None]


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    route: str
    version: int
    at: datetime
    by: str
    reason: str
    action: str
    before: RouteState | None
    after: RouteState


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """How fresh this process's snapshot is (for ``/readyz`` detail and metrics)."""

    backend: str
    connected: bool
    last_sync_at: datetime | None  # None: never synced (or nothing to sync with)

    def age_s(self, now: datetime | None = None) -> float | None:
        if self.last_sync_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.last_sync_at).total_seconds()


class RouteStore(abc.ABC):
    """Holds every route's current state; reads are local, writes are compare-and-set.

    Contract:
    - ``get``/``all`` read the in-process snapshot: no I/O on the request path. ``get``
      returns None for an unknown route.
    - ``put(state, expected_version)`` commits ``state`` with version
      ``expected_version + 1`` iff the stored version equals ``expected_version``
      (0 = the route must not exist yet), else raises ``VersionConflict``. It records an
      audit entry and notifies every subscriber (every replica, for Redis) before it returns
      the committed state.
    - ``seed(states)`` creates routes that do not exist yet (config at start); existing
      routes keep their stored state.
    - ``subscribe(fn)`` calls ``fn(state)`` after each applied change in this process.
      ``fn`` must be quick and thread-safe: the Redis store calls it from its listener
      thread (hop to an event loop with ``loop.call_soon_threadsafe``).
    - ``audit(route)`` lists committed changes, oldest first.
    - Durability: ``sqlite`` and ``redis`` (as far as Redis persists) keep state and audit
      across a restart of this process; ``memory`` does not.
    """

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def get(self, route: str) -> RouteState | None: ...

    @abc.abstractmethod
    def all(self) -> dict[str, RouteState]: ...

    @abc.abstractmethod
    async def seed(self, states: dict[str, RouteState]) -> None: ...

    @abc.abstractmethod
    async def put(
        self, state: RouteState, expected_version: int, action: str = "set"
    ) -> RouteState: ...

    @abc.abstractmethod
    async def audit(self, route: str, limit: int = 1000) -> list[AuditEntry]: ...

    @abc.abstractmethod
    def subscribe(self, fn: Listener) -> None: ...

    def health(self) -> StoreHealth:
        """Connection and staleness of the snapshot; in-process stores are always current."""
        return StoreHealth(backend="memory", connected=True, last_sync_at=None)
