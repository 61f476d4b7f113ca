"""The gateway application: wiring only.

The lifespan builds the engine (which verifies the base's hash against its pin), the route
store seeded from the routes file, the residency keeper (every referenced adapter loaded
before the app reports ready) and the completion service, and keeps them on
``app.state.components``.

Hooks for later issues, passed to :func:`create_app`:
- ``recorder``: called with one ``InferenceRecord`` per request (the inference log's
  enqueue); default None records nothing.
- ``shadow``: a ``ShadowDispatcher`` receiving requests sampled for a shadow copy.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from adapters.factory import build_engine
from adapters.residency import Residency
from registry.home import Home
from router.api import admin, feedback, health, openai
from router.api.deps import Components
from router.api.errors import install_error_handlers
from router.flags.factory import build_route_store, default_replica_id, home_known_adapters
from router.flags.service import RouteService
from router.flags.state import load_routes_file
from router.flags.store import RouteStore
from router.log.factory import build_log_writer
from router.service import CompletionService, Recorder, ShadowDispatcher
from router.settings import Settings

log = logging.getLogger(__name__)

_NO_OTEL: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


async def _route_store(settings: Settings) -> RouteStore:
    """Redis when ``REDIS_URL`` is set, else in-process; seeded from the routes file."""
    store = build_route_store(settings, replica_id=default_replica_id(settings))
    await store.start()
    await store.seed(load_routes_file(settings.routes_path))
    return store


def create_app(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    shadow: ShadowDispatcher | None = None,
) -> FastAPI:
    """Build the gateway for ``settings``; nothing starts until the lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home = Home.at(settings.home)
        # loads the base and re-hashes it against the pin (BaseModelMismatch otherwise)
        engine = await asyncio.to_thread(build_engine, settings, home)
        await engine.start()
        store: RouteStore | None = None
        writer = None
        try:
            store = await _route_store(settings)
            residency = Residency(engine, home)
            await residency.ensure(residency.referenced(store.all()))
            active_store = store
            if recorder is None:
                writer = build_log_writer(
                    settings,
                    home,
                    labels_for=lambda r: _labels_for(active_store, r),
                    token_counter=engine.count_tokens,
                )
                await writer.start()
                app.state.log_writer = writer
            app.state.route_service = RouteService(
                store, known_adapters=home_known_adapters(home), prepare=residency.ensure
            )
            service = CompletionService(
                engine,
                store,
                home,
                request_timeout_s=settings.request_timeout_s,
                recorder=recorder if recorder is not None else writer.record,  # type: ignore[union-attr]
                shadow=shadow,
            )
            app.state.components = Components(
                settings, home, engine, store, residency, service, base_verified=True
            )
            log.info(
                "gateway ready: base %s (%s), %d routes",
                engine.base.name,
                engine.base.sha256[:12],
                len(store.all()),
            )
            # The model, torch and the libraries are ~200k long-lived objects that a full
            # collection would rescan (~100 ms on 2 cores): move them out of the collector.
            gc.freeze()
            yield
        finally:
            if writer is not None:
                await writer.close()  # drains the queue (SIGTERM: uvicorn runs the lifespan exit)
            if store is not None:
                await store.close()
            await engine.close()

    # FastAPI's built-in OpenTelemetry hooks cost tens of microseconds of CPU per request
    # even with no provider configured: off on the hot path.
    app = FastAPI(title="lora-router", version="0.1.0", lifespan=lifespan, telemetry=_NO_OTEL)
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(feedback.router)
    return app


def _labels_for(store: RouteStore, route: str) -> tuple[str, ...]:
    state = store.get(route)
    if state is None or state.task.type != "classification":
        return ()
    return tuple(state.task.labels)
