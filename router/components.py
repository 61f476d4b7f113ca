"""Everything a running gateway holds, built from settings in one place and closed in order.

:func:`build_components` is the one wiring path: ``create_app``'s lifespan runs it, and so
does anything else that needs a gateway's parts in-process. It builds, in order:

1. the engine (loading the base re-hashes it against the pin: ``BaseModelMismatch``);
2. the API key ring (an unreadable key store is retried on use);
3. in Redis mode, the process's Redis clients (:class:`~router.flags.redis_client.RedisClients`),
   handed to the route store, its listener, the replica registry and the drift lease;
4. the residency keeper and the route flags (:class:`~router.flags.runtime.FlagsRuntime`:
   every referenced adapter loaded before the gateway reports ready; one that cannot be
   loaded fails the start, naming the adapter and the reason);
5. the inference log writer (unless a ``recorder`` is given), teed into the request metrics;
6. the shadow dispatcher (unless one is given) and the completion service;
7. the drift monitor (when enabled and the log is ours: it reads what we write), the
   dashboard's service and the access rules (:class:`~router.api.access_rules.AccessRules`).

On the way out (or when a step fails) it closes what it built: the dashboard, the drift
monitor (its guard changes routes), the flags (deregistering first, so writers stop waiting
for this replica), the shadow dispatcher (its last records go to the writer), the writer
(draining its queue), the completion service, the Redis clients, the key ring, the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lora_router.adapters.engine import Engine
from lora_router.adapters.factory import build_engine
from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.router.api.access_rules import AccessRules
from lora_router.router.auth.factory import build_key_store
from lora_router.router.auth.ring import KeyRing
from lora_router.router.completions import (
    TIMEOUT_GRACE_S,
    CompletionService,
    Recorder,
    ShadowDispatcher,
)
from lora_router.router.dashboard.state import DashboardService
from lora_router.router.drift.runtime import DriftRuntime
from lora_router.router.engine_spec import engine_spec
from lora_router.router.flags.redis_client import RedisClients
from lora_router.router.flags.residency import Residency
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.runtime import FlagsRuntime
from lora_router.router.flags.store import RouteStore
from lora_router.router.limits import Limits
from lora_router.router.log.factory import build_log_writer
from lora_router.router.log.writer import LogWriter
from lora_router.router.metrics import RequestMetrics
from lora_router.router.settings import Settings
from lora_router.router.shadow import BackgroundShadow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Components:
    """A running gateway's parts (see the module docstring); the API injects them through
    :mod:`router.api.deps`."""

    settings: Settings
    home: Home
    engine: Engine
    residency: Residency
    flags: FlagsRuntime  # route store and service, reconciler, replica membership
    service: CompletionService
    limits: Limits
    access: AccessRules  # the admin rule, the API key ring, whether /v1 needs a key
    dashboard: DashboardService
    log_writer: LogWriter | None = None  # None: requests go to a recorder given instead
    drift: DriftRuntime | None = None  # None: drift monitoring is off
    base_verified: bool = True  # the engine re-hashed the base against its pin

    @property
    def store(self) -> RouteStore:
        return self.flags.store

    @property
    def route_service(self) -> RouteService:
        return self.flags.service


@dataclass(slots=True)
class _Parts:
    """What has started so far: each step of :func:`build_components` records what it
    started here, and :meth:`close` closes all of it in the gateway's order."""

    settings: Settings
    home: Home
    engine: Engine | None = None
    key_ring: KeyRing | None = None
    redis: RedisClients | None = None
    flags: FlagsRuntime | None = None
    writer: LogWriter | None = None
    shadow: BackgroundShadow | None = None  # ours only: a dispatcher given is its owner's
    service: CompletionService | None = None
    drift: DriftRuntime | None = None
    dashboard: DashboardService | None = None

    async def close(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.close()
        if self.drift is not None:
            await self.drift.close()  # before the flags: its guard changes routes
        if self.flags is not None:
            await self.flags.close()  # deregisters first: writers stop waiting for us
        if self.shadow is not None:
            await self.shadow.close()  # its last records go to the writer
        if self.writer is not None:
            await self.writer.close()  # drains the queue (SIGTERM: uvicorn runs the lifespan exit)
        if self.service is not None:
            self.service.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.key_ring is not None:
            await self.key_ring.close()
        if self.engine is not None:
            await self.engine.close()

    async def start_engine(self) -> Engine:
        # loads the base and re-hashes it against the pin (BaseModelMismatch otherwise)
        engine = await asyncio.to_thread(build_engine, engine_spec(self.settings), self.home)
        self.engine = engine
        await engine.start()
        return engine

    async def start_key_ring(self) -> KeyRing:
        ring = self.key_ring = KeyRing(build_key_store(self.settings),
                                       refresh_s=self.settings.keys_refresh_s)
        await ring.start()  # API keys (router.auth); an unreadable store: retried on use
        return ring

    async def start_flags(self, engine: Engine) -> FlagsRuntime:
        s = self.settings
        if s.redis_url is not None:
            self.redis = RedisClients.of(s)
        residency = Residency(engine, self.home, protect_s=s.load_grace_s,
                              drain_timeout_s=s.request_timeout_s + TIMEOUT_GRACE_S)
        try:
            self.flags = await FlagsRuntime.start(s, self.home, residency, self.redis)
        except LoraRouterError as exc:
            log.error("gateway cannot start: %s", exc.message)
            raise
        return self.flags

    async def start_recorder(
        self, engine: Engine, store: RouteStore, recorder: Recorder | None
    ) -> Recorder:
        """``recorder``, else the inference log writer's; teed into the /metrics series."""
        if recorder is None:
            writer = self.writer = build_log_writer(
                self.settings, self.home, labels_for=lambda r: _labels_for(store, r),
                token_counter=engine.count_tokens,
            )
            await writer.start()
            recorder = writer.record
        return RequestMetrics.for_engine(engine, self.home).tee(recorder)

    def start_service(
        self, engine: Engine, flags: FlagsRuntime, record: Recorder,
        shadow: ShadowDispatcher | None, limits: Limits,
    ) -> CompletionService:
        s = self.settings
        if shadow is None:
            shadow = self.shadow = BackgroundShadow(
                engine, record, base_model_id=engine.base.name,
                max_inflight=s.shadow_max_inflight, timeout_s=s.request_timeout_s,
            )
        self.service = CompletionService(
            engine, flags.store, self.home,
            request_timeout_s=s.request_timeout_s,
            recorder=record,
            shadow=shadow,
            limits=limits,
            route_for=flags.serving.get,
            residency=flags.residency,  # loads pinned adapters on demand
        )
        return self.service

    async def start_monitors(self, flags: FlagsRuntime) -> DashboardService:
        """The drift monitor, when on and the log is ours (it reads what we write), and the
        dashboard's service."""
        s = self.settings
        if s.drift_enabled and self.writer is not None:
            self.drift = DriftRuntime.build(
                s, self.home, flags.service, holder=flags.replica_id,
                redis=self.redis.lease if self.redis is not None else None,
            )
            await self.drift.start()
        self.dashboard = DashboardService.build(s, self.home, flags.service)
        return self.dashboard


@contextlib.asynccontextmanager
async def build_components(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    shadow: ShadowDispatcher | None = None,
) -> AsyncIterator[Components]:
    """The gateway's parts for ``settings``, started (module docstring), closed on exit.

    ``recorder``: called with one ``InferenceRecord`` per request instead of the inference
    log writer built from the settings (then there is no writer and no drift monitor).
    ``shadow``: receives the requests sampled for a shadow copy, instead of a
    :class:`~router.shadow.BackgroundShadow` on the same recorder (its owner closes it).
    """
    parts = _Parts(settings, Home.at(settings.home))
    try:
        engine = await parts.start_engine()
        key_ring = await parts.start_key_ring()
        flags = await parts.start_flags(engine)
        record = await parts.start_recorder(engine, flags.store, recorder)
        limits = Limits.of(settings)
        service = parts.start_service(engine, flags, record, shadow, limits)
        dashboard = await parts.start_monitors(flags)
        components = Components(
            settings, parts.home, engine, flags.residency, flags, service, limits,
            AccessRules.of(settings, key_ring), dashboard,
            log_writer=parts.writer, drift=parts.drift,
        )
        _ready(components)
        yield components
    finally:
        await parts.close()


def _ready(c: Components) -> None:
    base = c.engine.base
    log.info("gateway ready: base %s (%s), %d routes, replica %s (%s)", base.name,
             base.sha256[:12], len(c.store.all()), c.flags.replica_id,
             "redis" if c.settings.redis_url else "embedded")
    # The model, torch and the libraries are ~200k long-lived objects that a full
    # collection would rescan (~100 ms on 2 cores): move them out of the collector.
    gc.freeze()


def _labels_for(store: RouteStore, route: str) -> tuple[str, ...]:
    state = store.get(route)
    if state is None or state.task.type != "classification":
        return ()
    return tuple(state.task.labels)
