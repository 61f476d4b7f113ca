"""Apps built around some of the gateway's routers alone (no engine, no ``create_app``).

Such an app has no :class:`~router.components.Components`: :func:`provide` gives it the
parts its routers take through :mod:`router.api.deps`, as FastAPI's dependency overrides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI

from lora_router.router.api import deps

_DEPS: dict[str, Callable[..., Awaitable[Any]]] = {
    "access": deps.access,  # AccessRules: admin rule, key ring, /v1 key rule
    "route_service": deps.route_service,
    "limits": deps.limits,
    "log_writer": deps.log_writer,
}


def _constant(value: Any) -> Callable[[], Awaitable[Any]]:
    async def part() -> Any:
        return value

    return part


def provide(app: FastAPI, **parts: Any) -> FastAPI:
    """Make ``app``'s dependencies named in ``parts`` (keys of ``_DEPS``) return the values
    given; callable before or while the app runs (e.g. from its own lifespan)."""
    for name, value in parts.items():
        app.dependency_overrides[_DEPS[name]] = _constant(value)
    return app
