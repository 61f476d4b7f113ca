"""The route store interface. Implementations: ``memory`` (embedded) and ``redis``.

Both pass the same contract suite (tests/flags/test_store_contract.py).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from router.flags.state import RouteState

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
    - ``audit(route)`` lists committed changes, oldest first.
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
