"""A real gateway on a free port: uvicorn in a thread of the test process, on the demo home."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
import yaml

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.log.record import InferenceRecord
from lora_router.router.settings import Settings
from tests.conftest import free_port

T = TypeVar("T")


@dataclass
class Gateway:
    """A running gateway: its URL, the records it produced, and a way into its loop."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    app: Any
    records: list[InferenceRecord] = field(default_factory=list)

    @property
    def components(self) -> Any:
        return self.app.state.components

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the server's event loop (where the engine lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def records_for(self, request_id: str) -> list[InferenceRecord]:
        return [r for r in self.records if r.request_id == request_id]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "gateway did not stop"
        self.loop.close()


@dataclass
class Served:
    """An ASGI app served by uvicorn in a thread of the test process."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "server did not stop"
        self.loop.close()


def serve_app(app: Any, host: str, port: int, timeout: float = 180) -> Served:
    """Serve ``app`` on ``host:port`` (lifespan on) and wait until it accepts connections."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False,
    )
    server = uvicorn.Server(config)
    factory = config.get_loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve()), name="gateway", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(30)
            loop.close()
            raise RuntimeError("gateway failed to start (see the log above)")
        time.sleep(0.02)
    return Served(f"http://{host}:{port}", server, thread, loop)


def start_gateway(settings: Settings, timeout: float = 180) -> Gateway:
    """The gateway for ``settings``, bound to ``settings.host`` (127.0.0.1 by default)."""
    records: list[InferenceRecord] = []
    app = create_app(settings, recorder=records.append)
    s = serve_app(app, settings.host, settings.port, timeout)
    return Gateway(s.url, s.server, s.thread, s.loop, app, records)


def write_routes(path: Path, routes: dict[str, dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"routes": routes}))
    return path


def adapter_ids(home: Home) -> tuple[str, str]:
    ids = sorted(home.list_adapter_ids())
    v1 = next(a for a in ids if a.endswith("@v1"))
    v2 = next(a for a in ids if a.endswith("@v2"))
    return v1, v2


@pytest.fixture(scope="session")
def gateway(demo_build: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One shared gateway (tests must not change its state) on its own copy of the demo
    build: route ``support-triage`` (live v1, standby v2) and ``triage-canary`` (live v1,
    canary v2 at 50 %)."""
    import shutil

    demo_home = Home.at(tmp_path_factory.mktemp("gateway-home") / "home")
    shutil.copytree(demo_build.root, demo_home.root,
                    ignore=shutil.ignore_patterns("log", "flags", "demo-runs"))
    v1, v2 = adapter_ids(demo_home)
    routes = write_routes(
        tmp_path_factory.mktemp("routes") / "routes.yaml",
        {
            "support-triage": {"live": v1, "rollback_target": v2},
            "triage-canary": {"live": v1, "canary": {"adapter": v2, "percent": 50}},
        },
    )
    settings = Settings(home=demo_home.root, port=free_port(), routes_file=routes)
    gw = start_gateway(settings)
    yield gw
    gw.stop()
