"""The remote engine's backends: admission against the pinned base, re-sync, the health
probe, loads and unloads on every backend in service, and picking one for a request.

A backend is in service only after its base card matched the pin and it was re-synced with
the adapters the engine wants resident (``wanted()``: adapter id -> the path a backend loads
it from). Loads, unloads and re-syncs run one at a time under :attr:`BackendPool.sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_router.adapters import engine_protocol as wire
from lora_router.adapters.engine import BaseInfo
from lora_router.adapters.remote_backend import TRANSPORT, Backend, Timeouts
from lora_router.ground.errors import BaseModelMismatch, EngineError, LoraRouterError

log = logging.getLogger(__name__)

Wanted = Callable[[], dict[str, str]]


class NoBackend(EngineError):
    """No backend in service can take the request or the load (all down or out of step)."""

    status_code = 503
    code = "no_backend"


@dataclass(frozen=True)
class RemoteConfig:
    backends: tuple[str, ...] = ()
    request_timeout_s: float = 60.0
    load_timeout_s: float = 120.0
    connect_timeout_s: float = 2.0
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 2.0
    start_timeout_s: float = 120.0
    api_key: str | None = None
    adapters_root: str | None = None  # the backends' path of <home>/adapters
    max_adapters: int = 8  # resident at once (keep <= vLLM's --max-cpu-loras: no eviction)
    max_inflight: int = 32  # per backend, for saturated()


class BackendPool:
    """The backends of one remote engine (see the module docstring)."""

    def __init__(self, config: RemoteConfig, base: BaseInfo, wanted: Wanted) -> None:
        self.config = config
        self._base = base
        self._wanted = wanted
        self.backends: list[Backend] = []
        self.sync = asyncio.Lock()  # loads, unloads and re-syncs, one at a time
        self._probe_task: asyncio.Task[None] | None = None
        self._turn = 0

    async def start(self) -> None:
        """Admit every backend that answers and wait for one (``start_timeout_s``, else
        ``NoBackend``); a backend with another base refuses the start."""
        timeouts = Timeouts(self.config.connect_timeout_s, self.config.request_timeout_s,
                            self.config.load_timeout_s, self.config.probe_timeout_s)
        self.backends = [Backend.open(u, timeouts, self.config.api_key)
                         for u in self.config.backends]
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            await asyncio.gather(*(self._admit(b) for b in self.backends))
            if any(b.up for b in self.backends):
                break
            if time.monotonic() > deadline:
                raise NoBackend(f"no backend in service after {self.config.start_timeout_s:g} s: "
                                f"{self.reasons()}")
            await asyncio.sleep(self.config.probe_interval_s)
        self._probe_task = asyncio.create_task(self._probe_loop(), name="remote-engine-probe")

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        await asyncio.gather(*(b.close() for b in self.backends))

    def states(self) -> list[dict[str, Any]]:
        return [{"url": b.url, "up": b.up, "reason": None if b.up else b.reason,
                 "in_flight": b.in_flight, "adapters": sorted(b.adapters)}
                for b in self.backends]

    def reasons(self) -> str:
        return "; ".join(f"{b.url}: {b.reason}" for b in self.backends if not b.up) or "none"

    def take_out(self, b: Backend, reason: str) -> None:
        if b.take_out(reason):
            log.warning("backend %s taken out of service: %s", b.url, reason)

    # -- admission, probes ---------------------------------------------------------------
    async def _admit(self, b: Backend) -> None:
        """Bring ``b`` into service: its base checked against the pin, its adapters re-synced.
        ``BaseModelMismatch`` propagates; every other failure leaves it out, with a reason."""
        try:
            if not await b.healthy():
                b.take_out("/health did not answer 200")
                return
            cards = await b.cards()
            self._check_base(b, cards)
            async with self.sync:
                await self._resync(b, cards)
                b.up, b.reason = True, ""
        except TRANSPORT as exc:
            b.take_out(f"unreachable: {type(exc).__name__}: {exc}")
            return
        except BaseModelMismatch as exc:
            b.take_out(exc.message)
            raise
        except LoraRouterError as exc:
            b.take_out(f"re-sync failed: {exc.code}: {exc.message}")
            log.warning("backend %s stays out of service: %s", b.url, b.reason)
            return
        log.info("backend %s in service (%d adapters)", b.url, len(b.adapters))

    def _check_base(self, b: Backend, cards: list[dict[str, Any]]) -> None:
        card = wire.base_card(cards)
        name = card.get("id") if card is not None else None
        if name != self._base.name:
            raise BaseModelMismatch(
                f"backend {b.url} serves base {name!r}, not the pinned {self._base.name!r} "
                "(vLLM: --served-model-name must be the pinned base's name)", backend=b.url)
        sha = card.get("sha256") if card is not None else None
        if sha is not None and sha != self._base.sha256:
            raise BaseModelMismatch(
                f"backend {b.url} serves {name!r} with hash {str(sha)[:19]}…, not the pinned "
                f"{self._base.sha256[:19]}…", backend=b.url)

    async def _resync(self, b: Backend, cards: list[dict[str, Any]]) -> None:
        """Make ``b`` hold exactly the wanted adapters (caller holds ``sync``): strays and
        adapters from another path unloaded, missing ones loaded."""
        want = self._wanted()
        have = {c["id"]: c.get("root") for c in cards if c.get("parent") is not None}
        b.epoch += 1
        for name in sorted(have):
            if want.get(name) != have[name]:
                await b.unload(name)
        for name in sorted(want):
            if have.get(name) != want[name]:
                await b.load(name, want[name])
        b.adapters = set(want)
        b.epoch += 1

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval_s)
            try:
                await asyncio.gather(*(self._probe(b) for b in self.backends))
            except Exception:  # the loop must outlive any one failure
                log.exception("remote engine probe failed")

    async def _probe(self, b: Backend) -> None:
        if not b.up:
            reason = b.reason
            try:
                await self._admit(b)
            except BaseModelMismatch as exc:
                if exc.message != reason:
                    log.error("backend %s refused: %s", b.url, exc.message)
            return
        epoch = b.epoch
        try:
            healthy = await b.healthy()
            cards = await b.cards()
        except TRANSPORT as exc:
            self.take_out(b, f"probe failed: {type(exc).__name__}: {exc}")
            return
        except LoraRouterError as exc:
            self.take_out(b, f"probe failed: {exc.message}")
            return
        if not healthy:
            self.take_out(b, "/health did not answer 200")
        elif b.epoch == epoch and not self.sync.locked():  # the listing is not stale
            listed = wire.adapter_names(cards)
            if listed != b.adapters:
                self.take_out(b, f"out of step: lacks {sorted(b.adapters - listed)}, "
                                 f"has {sorted(listed - b.adapters)} too")

    # -- adapters everywhere ---------------------------------------------------------------
    async def load_everywhere(self, adapter_id: str, path: str) -> None:
        """Load on every backend in service, or on none (caller holds ``sync``). A backend
        that stops answering is taken out and not waited for; a refusal unloads the copies
        loaded elsewhere and raises."""
        targets = [b for b in self.backends if b.up]
        if not targets:
            raise NoBackend(f"cannot load {adapter_id}: {self.reasons()}")
        try:
            outcomes = await asyncio.gather(
                *(self._load_on(b, adapter_id, path) for b in targets), return_exceptions=True)
        except asyncio.CancelledError:  # the caller gave up: nothing may stay half-loaded
            await asyncio.shield(self._roll_back(adapter_id, targets))
            raise
        refusals = [o for o in outcomes if isinstance(o, BaseException)]
        if refusals or not any(o is True for o in outcomes):
            await self._roll_back(adapter_id, targets)
            for err in refusals:
                if isinstance(err, LoraRouterError):
                    raise err
            if refusals:
                raise EngineError(f"loading {adapter_id} failed: {refusals[0]!r}")
            raise NoBackend(f"every backend failed while loading {adapter_id}: "
                            f"{self.reasons()}")

    async def _load_on(self, b: Backend, adapter_id: str, path: str) -> bool:
        """True: loaded; False: ``b`` stopped answering and is out of service now."""
        b.epoch += 1
        try:
            await b.load(adapter_id, path)
        except TRANSPORT as exc:
            self.take_out(b, f"failed while loading {adapter_id}: {type(exc).__name__}")
            return False
        finally:
            b.epoch += 1
        b.adapters.add(adapter_id)
        return True

    async def _roll_back(self, adapter_id: str, targets: list[Backend]) -> None:
        await asyncio.gather(*(self._unload_on(b, adapter_id) for b in targets
                               if adapter_id in b.adapters))

    async def unload_everywhere(self, adapter_id: str) -> None:
        """Unload from every backend in service that has it (caller holds ``sync``); one
        that fails is taken out (its re-sync unloads it)."""
        await asyncio.gather(*(self._unload_on(b, adapter_id) for b in self.backends
                               if b.up and adapter_id in b.adapters))

    async def _unload_on(self, b: Backend, adapter_id: str) -> None:
        b.epoch += 1
        try:
            await b.unload(adapter_id)
            b.adapters.discard(adapter_id)
        except TRANSPORT as exc:
            self.take_out(b, f"failed while unloading {adapter_id}: {type(exc).__name__}")
        except LoraRouterError as exc:  # out of step now: the re-sync unloads it
            self.take_out(b, f"could not unload {adapter_id}: {exc.message}")
        finally:
            b.epoch += 1

    # -- requests ----------------------------------------------------------------------------
    def pick(self, adapter_id: str | None, tried: set[Backend]) -> Backend:
        """The backend in service with the adapter and the fewest requests in flight (ties
        go round), not one of ``tried``; ``NoBackend`` when there is none."""
        ready = [b for b in self.backends if b.up and b not in tried
                 and (adapter_id is None or adapter_id in b.adapters)]
        if not ready:
            raise NoBackend(f"no backend in service for {adapter_id or self._base.name}: "
                            f"{self.reasons()}", adapter_id=adapter_id)
        self._turn += 1
        start = self._turn % len(ready)
        return min(ready[start:] + ready[:start], key=lambda b: b.in_flight)

    def saturated(self) -> bool:
        up = [b for b in self.backends if b.up]
        return not up or all(b.in_flight >= self.config.max_inflight for b in up)
