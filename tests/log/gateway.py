"""A real gateway for log and shadow tests: uvicorn on a free port in the test's event loop.

``live_gateway(settings)`` runs ``create_app(settings, recorder=...)`` (``recorder`` None: the
default log writer the lifespan builds) and, when ``shadow`` is given, installs the
dispatcher it returns (built from the running engine and the recorder) on the completion
service. On exit the dispatcher is closed first, then the server (whose lifespan drains the
default writer).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from adapters.engine import Engine
from router.app import create_app
from router.service import Recorder
from router.settings import Settings
from router.shadow import BackgroundShadow
from tests.api.conftest import adapter_ids, write_routes

__all__ = ["LiveGateway", "adapter_ids", "live_gateway", "shadow_factory", "write_routes"]

ShadowFactory = Callable[[Engine, Recorder], BackgroundShadow]


@dataclass
class LiveGateway:
    url: str
    app: Any
    shadow: BackgroundShadow | None

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.components.engine
        return engine


@asynccontextmanager
async def live_gateway(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    shadow: ShadowFactory | None = None,
) -> AsyncIterator[LiveGateway]:
    app = create_app(settings, recorder=recorder)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=settings.port, log_level="warning", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    dispatcher: BackgroundShadow | None = None
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway exited during start")
            await asyncio.sleep(0.05)
        if shadow is not None:
            components = app.state.components
            rec = recorder if recorder is not None else app.state.log_writer.record
            dispatcher = shadow(components.engine, rec)
            components.service.shadow = dispatcher
        yield LiveGateway(f"http://127.0.0.1:{settings.port}", app, dispatcher)
    finally:
        if dispatcher is not None:
            await dispatcher.close()
        server.should_exit = True
        await task


def shadow_factory(max_inflight: int = 8, timeout_s: float = 60.0) -> ShadowFactory:
    def build(engine: Engine, recorder: Recorder) -> BackgroundShadow:
        return BackgroundShadow(
            engine,
            recorder,
            base_model_id=engine.base.name,
            max_inflight=max_inflight,
            timeout_s=timeout_s,
        )

    return build


def prompt_for(i: int) -> str:
    return f"Ticket {i}: my order ORD-{1000 + i} is late\nCategory:"


def key_for(i: int) -> str:
    return hashlib.sha256(f"user-{i}".encode()).hexdigest()[:12]
