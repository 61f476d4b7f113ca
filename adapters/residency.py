"""Which adapters must be resident in the engine, and loading them.

Phase 1 (serving core): at start the gateway loads every adapter that some route references
(live, canary, shadow, rollback target) straight from the home's adapter directory, and
``/readyz`` reports ready only when all of them are resident. The flags issue extends this
class with the two-phase, gated reconciler (load on request of a route change, drain and
unload what no route references any more).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from adapters.engine import AdapterInfo, Engine
from registry.home import Home
from router.flags.state import RouteState

log = logging.getLogger(__name__)

DEFAULT_LOAD_TIMEOUT_S = 120.0


class Residency:
    """Keeps the adapters that routes reference resident in one engine.

    Contract:
    - ``referenced(states)`` is the set of adapter ids some route may send traffic to or
      flip to; pure, no I/O.
    - ``ensure(ids)`` loads every id of ``ids`` that is not resident yet, one at a time,
      from ``home.adapter_dir(id)``; it returns the info of every id in ``ids``. A load
      that fails raises the engine's error (``AdapterIncompatible``, ``AdapterNotFound``,
      ``NoFreeSlot``, ...) and leaves the adapters loaded before it resident. Each load is
      bounded by ``load_timeout_s`` (``TimeoutError``).
    - ``missing(ids)`` is the subset of ``ids`` not resident now.
    """

    def __init__(
        self, engine: Engine, home: Home, *, load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S
    ) -> None:
        self._engine = engine
        self._home = home
        self._load_timeout_s = load_timeout_s
        self._lock = asyncio.Lock()

    @staticmethod
    def referenced(states: Mapping[str, RouteState] | Iterable[RouteState]) -> set[str]:
        """Every adapter id referenced by any of ``states`` (a mapping or an iterable)."""
        values = states.values() if isinstance(states, Mapping) else states
        refs: set[str] = set()
        for state in values:
            refs |= state.referenced_adapters()
        return refs

    def missing(self, adapter_ids: Iterable[str]) -> set[str]:
        resident = self._engine.resident_adapters()
        return {a for a in adapter_ids if a not in resident}

    async def ensure(self, adapter_ids: set[str]) -> dict[str, AdapterInfo]:
        """Load whichever of ``adapter_ids`` is not resident; return their infos."""
        async with self._lock:
            for adapter_id in sorted(self.missing(adapter_ids)):
                path = self._home.adapter_dir(adapter_id)
                async with asyncio.timeout(self._load_timeout_s):
                    info = await self._engine.load_adapter(adapter_id, path)
                log.info(
                    "adapter %s resident in slot %s (%.1f ms)", adapter_id, info.slot, info.load_ms
                )
            resident = self._engine.resident_adapters()
            return {a: resident[a] for a in adapter_ids if a in resident}
