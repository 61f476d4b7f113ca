"""Which adapters must be resident in the engine: verified loads, and drained unloads.

The engine keeps resident exactly the adapters some route references (live, canary, shadow,
rollback target), plus, for a grace period, adapters loaded for a route change that is not
committed yet (the two-phase gate loads before the commit; a reconcile triggered by another
change in between must not unload them). Every load is gated by the registry: the adapter's
files must hash to its model card and the card's base must be the pinned base
(``registry.integrity.verify_adapter``); an adapter with no model card is refused too.

A request that names (pins) a registered adapter no route references loads it on demand
(:meth:`Residency.load_on_demand`): the same verified load, into a free slot, or into the
slot of the least recently used adapter loaded this way, which is evicted (its in-flight
requests drained first). Adapters that routes reference, and adapters loaded for a pending
change, are never evicted for it; route loads evict on-demand adapters when every slot is
taken. So the on-demand adapters are an LRU bounded by the slots the routes leave free.

The reconciler that calls :meth:`Residency.reconcile` on every applied route change lives in
:mod:`router.flags.reconciler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lora_router.adapters.engine import AdapterInfo, Engine
from lora_router.ground.errors import LoraRouterError, NoFreeSlot
from lora_router.ground.home import Home
from lora_router.registry.integrity import verify_adapter
from lora_router.registry.store import RegistryStore
from lora_router.router.flags import metrics
from lora_router.router.flags.state import RouteState

log = logging.getLogger(__name__)

DEFAULT_LOAD_TIMEOUT_S = 120.0
DEFAULT_PROTECT_S = 25.0
DEFAULT_DRAIN_TIMEOUT_S = 60.0

ResidentHook = Callable[[set[str]], Awaitable[None]]


class NoSlotForPinned(NoFreeSlot):
    """A request pinned an adapter that is not resident, and every slot holds an adapter
    that a route references or a pending change loaded: retrying cannot help until the
    routes change (422, which clients do not retry)."""

    status_code = 422


@dataclass(slots=True)
class ReconcileOutcome:
    """What one reconcile did; ``recheck_in_s``: when a protected adapter's grace ends."""

    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # adapter -> "code: message"
    recheck_in_s: float | None = None


class Residency:
    """Keeps the adapters that routes reference resident in one engine.

    Contract:
    - ``referenced(states)`` is the set of adapter ids some route may send traffic to or
      flip to; pure, no I/O.
    - ``ensure(ids)`` verifies (in a thread: it hashes files) and loads every id of ``ids``
      that is not resident yet, one at a time, from ``home.adapter_dir(id)``, and protects
      every id of ``ids`` from unloading for ``protect_s``; it returns the info of every id
      in ``ids``. A refused or failed load raises (``AdapterIntegrityError``,
      ``AdapterNotFound`` for no model card, ``AdapterRetired``, ``AdapterIncompatible``,
      ``NoFreeSlot``, ``TimeoutError`` after ``load_timeout_s``) and leaves the adapters
      loaded before it resident. An id being unloaded is reloaded after its drain.
    - ``reconcile(referenced)`` loads what is referenced and missing (failures are logged
      and returned, never raised), and unloads resident adapters that are neither referenced
      nor protected; an unload drains the adapter's in-flight requests first (the engine's
      contract) and runs in the background. A referenced id loses its protection.
    - ``missing(ids)`` is the subset of ``ids`` not resident now.
    - ``on_resident`` (settable) is awaited with the resident set after it changed
      (a replica publishes it); its failures are logged.
    - ``load_on_demand(id, keep)`` makes a pinned request's adapter resident (see the module
      docstring): concurrent calls for one id share one load; a full engine evicts the least
      recently used on-demand adapter not in ``keep`` (the adapters routes reference now),
      not protected and not referenced at the last reconcile, or raises ``NoSlotForPinned``.
      ``touch(id)`` marks an on-demand adapter used. ``reconcile`` keeps on-demand adapters
      resident, except one whose card is gone or retired since (unloaded, like any other).
    """

    def __init__(
        self,
        engine: Engine,
        home: Home,
        *,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        protect_s: float = DEFAULT_PROTECT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    ) -> None:
        self._engine = engine
        self._home = home
        self._load_timeout_s = load_timeout_s
        self.protect_s = protect_s
        self._drain_timeout_s = drain_timeout_s
        self._lock = asyncio.Lock()
        self._protected: dict[str, float] = {}  # adapter -> monotonic deadline
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._on_demand: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._demand_loads: dict[str, asyncio.Task[None]] = {}
        self._kept: set[str] = set()  # what routes referenced at the last reconcile
        self.on_resident: ResidentHook | None = None

    @staticmethod
    def referenced(states: Mapping[str, RouteState] | Iterable[RouteState]) -> set[str]:
        """Every adapter id referenced by any of ``states`` (a mapping or an iterable)."""
        values = states.values() if isinstance(states, Mapping) else states
        refs: set[str] = set()
        for state in values:
            refs |= state.referenced_adapters()
        return refs

    def resident(self) -> set[str]:
        return set(self._engine.resident_adapters())

    def missing(self, adapter_ids: Iterable[str]) -> set[str]:
        resident = self._engine.resident_adapters()
        return {a for a in adapter_ids if a not in resident}

    def protected(self) -> set[str]:
        now = time.monotonic()
        return {a for a, until in self._protected.items() if until > now}

    def on_demand(self) -> list[str]:
        """Adapters loaded for pinned requests, least recently used first."""
        return list(self._on_demand)

    def touch(self, adapter_id: str) -> None:
        if adapter_id in self._on_demand:
            self._on_demand.move_to_end(adapter_id)

    async def load_on_demand(self, adapter_id: str, keep: set[str]) -> None:
        """Make ``adapter_id`` resident for a request that pinned it (see the class)."""
        if adapter_id in self._engine.resident_adapters():
            self.touch(adapter_id)
            return
        task = self._demand_loads.get(adapter_id)
        if task is None:  # the first caller starts the load; the others wait on it
            task = asyncio.create_task(self._load_on_demand(adapter_id, keep),
                                       name=f"load-on-demand-{adapter_id}")
            self._demand_loads[adapter_id] = task
            task.add_done_callback(self._demand_done)
        await asyncio.shield(task)  # a caller that goes away leaves the load running

    def _demand_done(self, task: asyncio.Task[None]) -> None:
        for adapter_id, t in list(self._demand_loads.items()):
            if t is task:
                del self._demand_loads[adapter_id]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it

    async def _load_on_demand(self, adapter_id: str, keep: set[str]) -> None:
        async with self._lock:
            if adapter_id in self._engine.resident_adapters():
                return
            try:
                await self._load(adapter_id, keep)
            except NoFreeSlot as exc:
                raise NoSlotForPinned(
                    f"adapter {adapter_id} is not resident and every adapter slot holds an "
                    "adapter that a route references: reference it from a route (shadow or "
                    "canary) to keep it resident, or raise LORA_ROUTER_MAX_ADAPTERS",
                    param="model", adapter_id=adapter_id,
                ) from exc
            if adapter_id not in keep:
                self._on_demand[adapter_id] = None
            log.info("adapter %s loaded on demand for a pinned request", adapter_id)
        await self._publish()

    async def ensure(self, adapter_ids: set[str]) -> dict[str, AdapterInfo]:
        """Verify and load whichever of ``adapter_ids`` is not resident; return their infos."""
        until = time.monotonic() + self.protect_s
        for adapter_id in adapter_ids:
            self._protected[adapter_id] = max(self._protected.get(adapter_id, 0.0), until)
        loaded = False
        try:
            async with self._lock:
                for adapter_id in sorted(self.missing(adapter_ids)):
                    await self._load(adapter_id, adapter_ids)
                    loaded = True
                resident = self._engine.resident_adapters()
                return {a: resident[a] for a in adapter_ids if a in resident}
        finally:
            if loaded:
                await self._publish()

    async def _load(self, adapter_id: str, keep: set[str]) -> None:
        pending = self._unloading.get(adapter_id)
        if pending is not None:  # re-referenced while draining: reload after the drain
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        started = time.perf_counter()
        try:
            await asyncio.to_thread(verify_adapter, self._home, adapter_id)
        except LoraRouterError as exc:
            metrics.ADAPTER_LOADS.labels("refused").inc()
            log.error("load of %s refused by the registry: %s", adapter_id, exc.message)
            raise
        path = self._home.adapter_dir(adapter_id)
        try:
            async with asyncio.timeout(self._load_timeout_s):
                while True:
                    try:
                        info = await self._engine.load_adapter(adapter_id, path)
                        break
                    except NoFreeSlot:
                        if not await self._make_room(keep | {adapter_id}):
                            raise
        except BaseException:
            metrics.ADAPTER_LOADS.labels("error").inc()
            raise
        metrics.ADAPTER_LOADS.labels("ok").inc()
        metrics.ADAPTER_LOAD_SECONDS.observe(time.perf_counter() - started)
        log.info("adapter %s resident in slot %s (%.1f ms)", adapter_id, info.slot, info.load_ms)

    async def _make_room(self, keep: set[str]) -> bool:
        """Free a slot (caller holds the lock): wait for the unloads in progress, else evict
        the least recently used on-demand adapter that no one needs. False: neither."""
        # shielded: a caller's timeout or cancellation must not cut an unload's drain short
        if self._unloading:
            await asyncio.shield(
                asyncio.gather(*self._unloading.values(), return_exceptions=True))
            return True
        needed = keep | self._kept | self.protected()
        victim = next((a for a in self._on_demand if a not in needed), None)
        if victim is None:
            return False
        why = "evicted for a free slot (least recently used on-demand adapter)"
        await asyncio.shield(self._start_unload(victim, why))
        return True

    async def reconcile(self, referenced: set[str]) -> ReconcileOutcome:
        """Load what ``referenced`` lacks, unload what nobody references (see the class)."""
        out = ReconcileOutcome()
        for adapter_id in referenced:
            self._protected.pop(adapter_id, None)  # referenced now: the route keeps it
        self._kept = set(referenced)
        async with self._lock:
            for adapter_id in sorted(self.missing(referenced)):
                try:
                    await self._load(adapter_id, referenced)
                    out.loaded.append(adapter_id)
                except Exception as exc:  # logged and reported; the next change retries
                    out.failed[adapter_id] = _describe(exc)
                    log.error("adapter %s referenced but not loadable: %s",
                              adapter_id, out.failed[adapter_id])
            kept = set(self._on_demand) - await self._unservable(set(self._on_demand) - referenced)
            now = time.monotonic()
            for adapter_id in sorted(self.resident() - referenced - kept):
                until = self._protected.get(adapter_id, 0.0)
                if until > now:
                    wait = until - now
                    if out.recheck_in_s is None or wait < out.recheck_in_s:
                        out.recheck_in_s = wait
                    continue
                self._protected.pop(adapter_id, None)
                self._start_unload(adapter_id, "no route references it")
                out.unloaded.append(adapter_id)
        if out.loaded:
            await self._publish()
        return out

    async def _unservable(self, adapter_ids: set[str]) -> set[str]:
        """Those of ``adapter_ids`` whose card is gone or retired (read in a thread)."""
        if not adapter_ids:
            return set()
        return await asyncio.to_thread(_retired_or_gone, self._home, adapter_ids)

    def _start_unload(self, adapter_id: str, why: str) -> asyncio.Task[None]:
        self._on_demand.pop(adapter_id, None)
        task = self._unloading.get(adapter_id)
        if task is None:
            task = asyncio.create_task(self._unload(adapter_id, why), name=f"unload-{adapter_id}")
            self._unloading[adapter_id] = task
        return task

    async def _unload(self, adapter_id: str, why: str) -> None:
        try:
            await self._engine.unload_adapter(adapter_id, self._drain_timeout_s)
            metrics.ADAPTER_UNLOADS.labels("ok").inc()
            log.info("adapter %s unloaded: %s", adapter_id, why)
        except Exception as exc:
            metrics.ADAPTER_UNLOADS.labels("error").inc()
            log.error("unloading adapter %s failed: %s", adapter_id, _describe(exc))
        finally:
            self._unloading.pop(adapter_id, None)
        await self._publish()

    async def wait_unloads(self) -> None:
        """Wait for the unloads in progress (tests, shutdown)."""
        while self._unloading:
            await asyncio.gather(*self._unloading.values(), return_exceptions=True)

    async def _publish(self) -> None:
        resident = self.resident()
        metrics.ADAPTERS_RESIDENT.set(len(resident))
        metrics.ADAPTER_RESIDENT.clear()  # an unloaded adapter leaves no series behind
        for adapter_id in resident:
            metrics.ADAPTER_RESIDENT.labels(adapter_id).set(1)
        if self.on_resident is None:
            return
        try:
            await self.on_resident(resident)
        except Exception as exc:  # publishing is informational; serving goes on
            log.warning("could not publish the resident adapters: %s", _describe(exc))


def _retired_or_gone(home: Home, adapter_ids: set[str]) -> set[str]:
    store = RegistryStore(home)
    out = set()
    for adapter_id in adapter_ids:
        try:
            if store.get_model_card(adapter_id).status == "retired":
                out.add(adapter_id)
        except LoraRouterError:  # no card any more: not servable
            out.add(adapter_id)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LoraRouterError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timeout: the load did not finish in time"
    return f"{type(exc).__name__}: {exc}"
