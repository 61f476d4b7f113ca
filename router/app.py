"""The gateway application: wiring only.

The lifespan builds the engine (which verifies the base's hash against its pin), the
residency keeper (every load verified against the adapter's model card), the route flags
(:class:`~router.flags.runtime.FlagsRuntime`: store seeded from the routes file, every
referenced adapter loaded before the app reports ready, the reconciler, and in Redis mode
the replica's load responder and heartbeat), the inference log writer, the shadow
dispatcher and the completion service, and keeps them on ``app.state.components``.

A referenced adapter that cannot be loaded at start (tampered files, no model card, another
base) fails the start with the adapter and the reason logged: a gateway that can never
serve its routes as configured should not linger half-ready.

Hooks, passed to :func:`create_app`:
- ``recorder``: called with one ``InferenceRecord`` per request (default: the inference
  log writer built from the settings).
- ``shadow``: a ``ShadowDispatcher`` receiving requests sampled for a shadow copy (default:
  :class:`router.shadow.BackgroundShadow` on the same recorder).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig

from adapters.engine import Engine
from adapters.factory import build_engine
from adapters.residency import Residency
from registry.errors import LoraRouterError
from registry.home import Home
from router.api import admin, feedback, health, keys, openai
from router.api.access import AdminAccess, require_app
from router.api.deps import Components
from router.api.errors import install_error_handlers
from router.api.middleware import RequestLimits
from router.api.openapi import error_responses
from router.auth.factory import build_key_store
from router.auth.policy import require_app_key
from router.auth.ring import KeyRing
from router.dashboard import api as dashboard
from router.drift.runtime import DriftRuntime
from router.flags.runtime import FlagsRuntime
from router.flags.store import RouteStore
from router.limits import Limits
from router.log.factory import build_log_writer
from router.metrics import RequestMetrics
from router.service import TIMEOUT_GRACE_S, CompletionService, Recorder, ShadowDispatcher
from router.settings import Settings
from router.shadow import BackgroundShadow

log = logging.getLogger(__name__)

_NO_OTEL: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def _residency(settings: Settings, engine: Engine, home: Home) -> Residency:
    return Residency(
        engine,
        home,
        protect_s=settings.load_grace_s,
        drain_timeout_s=settings.request_timeout_s + TIMEOUT_GRACE_S,
    )


def create_app(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    shadow: ShadowDispatcher | None = None,
) -> FastAPI:
    """Build the gateway for ``settings``; nothing starts until the lifespan runs."""
    limits = Limits.of(settings)
    key_ring = KeyRing(build_key_store(settings), refresh_s=settings.keys_refresh_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home = Home.at(settings.home)
        # loads the base and re-hashes it against the pin (BaseModelMismatch otherwise)
        engine = await asyncio.to_thread(build_engine, settings, home)
        await engine.start()
        flags: FlagsRuntime | None = None
        writer = None
        own_shadow: BackgroundShadow | None = None
        service: CompletionService | None = None
        drift: DriftRuntime | None = None
        try:
            await key_ring.start()  # API keys (router.auth); an unreadable store: retried
            residency = _residency(settings, engine, home)
            try:
                flags = await FlagsRuntime.start(settings, home, residency)
            except LoraRouterError as exc:
                log.error("gateway cannot start: %s", exc.message)
                raise
            store = flags.store
            record = recorder
            if record is None:
                writer = build_log_writer(
                    settings,
                    home,
                    labels_for=lambda r: _labels_for(store, r),
                    token_counter=engine.count_tokens,
                )
                await writer.start()
                app.state.log_writer = writer
                record = writer.record
            record = RequestMetrics.for_engine(engine, home).tee(record)  # /metrics series
            dispatcher = shadow
            if dispatcher is None:
                dispatcher = own_shadow = BackgroundShadow(
                    engine,
                    record,
                    base_model_id=engine.base.name,
                    max_inflight=settings.shadow_max_inflight,
                    timeout_s=settings.request_timeout_s,
                )
            app.state.route_service = flags.service
            service = CompletionService(
                engine,
                store,
                home,
                request_timeout_s=settings.request_timeout_s,
                recorder=record,
                shadow=dispatcher,
                limits=limits,
                route_for=flags.serving.get,
                residency=residency,  # loads pinned adapters on demand
            )
            app.state.components = Components(
                settings, home, engine, store, residency, service, base_verified=True,
                flags=flags,
            )
            if settings.drift_enabled and writer is not None:  # it reads the log we write
                drift = DriftRuntime.build(settings, home, flags.service, holder=flags.replica_id)
                await drift.start()
                app.state.drift = drift
            log.info(
                "gateway ready: base %s (%s), %d routes, replica %s (%s)",
                engine.base.name,
                engine.base.sha256[:12],
                len(store.all()),
                flags.replica_id,
                "redis" if settings.redis_url else "embedded",
            )
            # The model, torch and the libraries are ~200k long-lived objects that a full
            # collection would rescan (~100 ms on 2 cores): move them out of the collector.
            gc.freeze()
            yield
        finally:
            if drift is not None:
                await drift.close()  # before the flags: its guard changes routes
            if flags is not None:
                await flags.close()  # deregisters first: writers stop waiting for us
            if own_shadow is not None:
                await own_shadow.close()  # its last records go to the writer
            if writer is not None:
                await writer.close()  # drains the queue (SIGTERM: uvicorn runs the lifespan exit)
            if service is not None:
                service.close()
            await key_ring.close()
            await engine.close()

    # FastAPI's built-in OpenTelemetry hooks cost tens of microseconds of CPU per request
    # even with no provider configured: off on the hot path.
    app = FastAPI(title="lora-router", version="0.1.0", lifespan=lifespan, telemetry=_NO_OTEL)
    app.state.admin_access = AdminAccess.of(settings)
    app.state.key_ring = key_ring
    app.state.require_app_key = require_app_key(settings)  # None: once any key exists
    app.state.limits = limits
    app.add_middleware(RequestLimits, limits=limits)
    install_error_handlers(app)
    app_key, app_key_errors = [Depends(require_app)], error_responses(401, 503)  # /v1
    app.include_router(openai.router, dependencies=app_key, responses=app_key_errors)
    app.include_router(health.router, responses=error_responses(431))
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(dashboard.router)  # /dashboard, /admin/dashboard/state
    app.include_router(feedback.router, dependencies=app_key, responses=app_key_errors)
    return app


def _labels_for(store: RouteStore, route: str) -> tuple[str, ...]:
    state = store.get(route)
    if state is None or state.task.type != "classification":
        return ()
    return tuple(state.task.labels)
