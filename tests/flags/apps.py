"""A small admin-only app around the real admin router and error handlers (no engine)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from lora_router.router.api import admin
from lora_router.router.api.access_rules import AccessRules
from lora_router.router.api.errors import install_error_handlers
from lora_router.router.flags.route_service import RouteService
from lora_router.router.limits import Limits
from tests.api.partial import provide
from tests.conftest import free_port


def admin_app(service: RouteService) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin.router)
    return provide(app, route_service=service, access=AccessRules(), limits=Limits())


@contextmanager
def serve_in_thread(make_service: object) -> Iterator[str]:
    """Run uvicorn on a free port in a thread; ``make_service()`` is awaited in its loop."""
    port = free_port()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin.router)
    ready = threading.Event()

    async def main() -> None:
        service = await make_service()  # type: ignore[operator]
        provide(app, route_service=service, access=AccessRules(), limits=Limits())
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        ready.set()
        await task
        await service.store.close()

    holder: dict[str, uvicorn.Server] = {}
    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "admin app did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(10)
