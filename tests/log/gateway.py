"""A real gateway for log and shadow tests: uvicorn on a free port in the test's event loop.

``live_gateway(settings)`` runs ``create_app(settings, recorder=...)`` (``recorder`` None: the
default log writer the lifespan builds) and, when ``shadow`` is given, installs the
dispatcher it returns (built from the running engine and the recorder) on the completion
service. On exit the dispatcher is closed first, then the server (whose lifespan drains the
default writer). ``serve_process(...)`` starts ``lora-router serve`` as a subprocess (a real
process to SIGTERM or SIGKILL); ``wait_ready`` waits for its ``/readyz``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from lora_router.adapters.engine import Engine
from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.completions import Recorder
from lora_router.router.settings import Settings
from lora_router.router.shadow import BackgroundShadow
from tests.api.conftest import adapter_ids, write_routes

__all__ = [
    "LiveGateway",
    "adapter_ids",
    "live_gateway",
    "serve_process",
    "shadow_factory",
    "wait_ready",
    "write_routes",
]

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
            rec = recorder if recorder is not None else components.log_writer.record
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


def serve_process(
    home: Home,
    routes: Path,
    port: int,
    database_url: str | None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``lora-router serve`` on ``home`` in a subprocess (``env``: extra variables)."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    full["LORA_ROUTER_TORCH_THREADS"] = "1"
    if database_url:
        full["DATABASE_URL"] = database_url
    full.update(env or {})
    cmd = [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(home.root),
           "--port", str(port), "--routes", str(routes), "--log-level", "warning"]
    return subprocess.Popen(cmd, env=full, stdout=subprocess.DEVNULL)


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=5) as client:
        while True:
            assert proc.poll() is None, "gateway exited during start"
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway not ready"
            time.sleep(0.2)
