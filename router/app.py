"""The gateway application: wiring only.

The lifespan builds the gateway's parts with :func:`router.components.build_components`
(engine, residency, route flags, log writer, shadow, completion service, drift monitor,
dashboard, access rules: see there for what each step checks and the order they close in)
and keeps the typed :class:`~router.components.Components` on the app, where
:mod:`router.api.deps` injects them into the endpoints.

Hooks, passed to :func:`create_app` and on to :func:`~router.components.build_components`:
- ``recorder``: called with one ``InferenceRecord`` per request (default: the inference
  log writer built from the settings).
- ``shadow``: a ``ShadowDispatcher`` receiving requests sampled for a shadow copy (default:
  :class:`router.shadow.BackgroundShadow` on the same recorder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig

from lora_router.router.api import admin, feedback, health, keys, openai
from lora_router.router.api.access import require_app
from lora_router.router.api.errors import install_error_handlers
from lora_router.router.api.middleware import RequestLimits
from lora_router.router.api.openapi import error_responses
from lora_router.router.completions import Recorder, ShadowDispatcher
from lora_router.router.components import build_components
from lora_router.router.dashboard import api as dashboard
from lora_router.router.limits import Limits
from lora_router.router.settings import Settings

# FastAPI's built-in OpenTelemetry hooks cost tens of microseconds of CPU per request even
# with no provider configured: off on the hot path.
_NO_OTEL: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    shadow: ShadowDispatcher | None = None,
) -> FastAPI:
    """Build the gateway for ``settings``; nothing starts until the lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_components(settings, recorder=recorder, shadow=shadow) as components:
            app.state.components = components  # read by router.api.deps alone
            yield

    app = FastAPI(title="lora-router", version="0.1.0", lifespan=lifespan, telemetry=_NO_OTEL)
    app.add_middleware(RequestLimits, limits=Limits.of(settings))
    install_error_handlers(app)
    app_key, app_key_errors = [Depends(require_app)], error_responses(401, 503)  # /v1
    app.include_router(openai.router, dependencies=app_key, responses=app_key_errors)
    app.include_router(health.router, responses=error_responses(431))
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(dashboard.router)  # /dashboard, /admin/dashboard/state
    app.include_router(feedback.router, dependencies=app_key, responses=app_key_errors)
    return app
