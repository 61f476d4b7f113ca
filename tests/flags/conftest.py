"""Fixtures for the route-flag tests: both stores, states, a throwaway Redis server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.flags.store import RouteStore
from tests.conftest import free_port, require


def make_state(route: str = "support", live: str = "support@v1", **kw: object) -> RouteState:
    return RouteState(route=route, live=live, **kw)  # type: ignore[arg-type]


def canary_state(percent: float = 10) -> RouteState:
    return make_state(
        rollback_target="support@v0", canary=Split(adapter="support@v2", percent=percent)
    )


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RouteStore]:
    """Each backend in turn, started; SQLite in a fresh file; Redis on the flushed test db."""
    if request.param == "memory":
        s: RouteStore = MemoryRouteStore()
    elif request.param == "sqlite":
        s = SqliteRouteStore(tmp_path / "flags" / "routes.db")
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisRouteStore(url, resync_s=0.5)
    await s.start()
    yield s
    await s.close()


@dataclass
class RedisServer:
    """A private redis-server on a free port that a test may stop and start again."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def throwaway_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        require("redis-server binary not on PATH")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()
