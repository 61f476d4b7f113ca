"""The in-process copy of every route's state: what the request path reads.

Applied changes are monotonic per route (a state replaces the current one only when its
version is higher), so pub/sub messages, resyncs and this process's own writes can arrive
in any order, from any thread, and the snapshot still converges on the newest state.
"""

from __future__ import annotations

import logging
import threading

from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import Listener

log = logging.getLogger(__name__)


class Snapshot:
    """Copy-on-write map route -> state; reads take no lock, applies are serialised."""

    def __init__(self) -> None:
        self._states: dict[str, RouteState] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def get(self, route: str) -> RouteState | None:
        return self._states.get(route)

    def all(self) -> dict[str, RouteState]:
        return dict(self._states)

    def versions(self) -> dict[str, int]:
        return {name: s.version for name, s in self._states.items()}

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def apply(self, state: RouteState) -> bool:
        """Install ``state`` if it is newer than what we hold; True when it was applied.

        Listeners run under the lock so they observe versions in increasing order.
        """
        with self._lock:
            current = self._states.get(state.route)
            if current is not None and current.version >= state.version:
                return False
            states = dict(self._states)
            states[state.route] = state
            self._states = states
            for fn in self._listeners:
                try:
                    fn(state)
                except Exception:  # a listener must never stop flags from applying
                    log.exception("route listener failed for %s v%s", state.route, state.version)
            return True
