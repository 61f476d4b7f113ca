"""The remote engine for the contract suite: a :class:`RemoteEngine` in this process over a
real engine server (``lora-router serve --engine-api`` on the tiny home, a subprocess).

Starting a server costs seconds, so one server per set of knobs is kept for the session
(stopped at exit); each test gets a fresh :class:`RemoteEngine`, whose start re-syncs the
server (unloads whatever an earlier test left loaded).
"""

from __future__ import annotations

import atexit
import tempfile
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lora_router.adapters.engine import Engine
from lora_router.adapters.remote import RemoteConfig, RemoteEngine
from tests.engine.tiny import TinyHome
from tests.harness.engine_servers import EngineServer

# (not imported from .engines, which lists this factory: the knobs are its frozen ``Knobs``)
_SERVERS: dict[tuple[Path, Hashable], EngineServer] = {}


def _stop_all() -> None:
    for server in _SERVERS.values():
        server.stop()


atexit.register(_stop_all)


def _server(tiny: TinyHome, knobs: Any) -> EngineServer:
    key = (tiny.home.root, knobs)
    server = _SERVERS.get(key)
    if server is None or server.proc is None or server.proc.poll() is not None:
        env = {
            "LORA_ROUTER_MAX_ADAPTERS": str(knobs.max_adapters),
            "LORA_ROUTER_MAX_QUEUE": str(knobs.max_queue),
            "LORA_ROUTER_REQUEST_TIMEOUT_S": str(knobs.request_timeout_s),
            "LORA_ROUTER_MAX_LORA_RANK": str(knobs.max_lora_rank),
            "LORA_ROUTER_MAX_BATCH_SIZE": str(knobs.max_batch_size),
            "LORA_ROUTER_BATCH_WAIT_MS": "5",
            "LORA_ROUTER_DEVICE": "cpu",
            "LORA_ROUTER_DTYPE": "float32",
        }
        log_path = Path(tempfile.mkdtemp(prefix="engine-server-")) / "server.log"
        server = EngineServer(tiny.home.root, log_path, env).start()
        server.wait_ready()
        _SERVERS[key] = server
    return server


@asynccontextmanager
async def remote(tiny: TinyHome, knobs: Any) -> AsyncIterator[tuple[Engine, dict[str, Path]]]:
    """:class:`RemoteEngine` over one engine server with these knobs."""
    server = _server(tiny, knobs)
    config = RemoteConfig(backends=(server.url,), request_timeout_s=knobs.request_timeout_s,
                          max_adapters=knobs.max_adapters, max_inflight=knobs.max_batch_size,
                          probe_interval_s=0.5, start_timeout_s=30.0)
    engine = RemoteEngine.from_home(tiny.home, config)
    await engine.start()
    try:
        yield engine, {a: tiny.home.adapter_dir(a) for a in tiny.adapter_ids}
    finally:
        await engine.close()
