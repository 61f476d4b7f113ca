"""The admin router alone, given what a gateway's lifespan would inject (the typed
dependencies of ``router.api.deps``, overridden), in process or served by uvicorn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from lora_router.router.api import admin, deps
from lora_router.router.api.access_rules import AccessRules
from lora_router.router.api.errors import install_error_handlers
from lora_router.router.flags.route_service import RouteService
from lora_router.router.limits import Limits
from tests.conftest import free_port


def _given(value: Any) -> Callable[[], Awaitable[Any]]:
    async def dependency() -> Any:
        return value

    return dependency


def admin_app(service: RouteService, limits: Limits | None = None) -> FastAPI:
    """Keyless access (loopback clients), ``service`` and ``limits`` injected."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin.router)
    app.dependency_overrides[deps.access] = _given(AccessRules())
    app.dependency_overrides[deps.route_service] = _given(service)
    app.dependency_overrides[deps.limits] = _given(limits or Limits())
    return app


@contextmanager
def serve_admin(make_service: Callable[[], Awaitable[RouteService]]) -> Iterator[str]:
    """uvicorn on a free port in a thread; ``make_service()`` is awaited in its loop."""
    port = free_port()
    ready = threading.Event()
    holder: dict[str, uvicorn.Server] = {}

    async def main() -> None:
        service = await make_service()
        config = uvicorn.Config(admin_app(service), host="127.0.0.1", port=port,
                                log_level="warning")
        server = uvicorn.Server(config)
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        ready.set()
        await task
        await service.store.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "admin app did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(10)
