"""The monitor as the gateway runs it: built from settings, background loops, the lease.

From labelled traffic to the guard's action with nothing driven by hand: embedded (SQLite,
in-process flags) and with two replicas sharing Redis and PostgreSQL (one monitor acts).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis

from lora_router.ground.home import Home
from lora_router.router.drift.lease import LEASE_KEY
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.drift.runtime import DriftRuntime
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.flags.store import RouteStore
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter
from lora_router.router.settings import Settings
from tests.drift.conftest import LABELS, serve_and_label

ROUTE = "support-triage"  # the demo home's route and cards (gate bars from their eval)
V1, V2 = "support-triage@v1", "support-triage@v2"
GUARDED = RouteState(route=ROUTE, live=V1, canary=Split(adapter=V2, percent=20),
                     guard=GuardPolicy(auto_rollback=True, protect=("language=es",)))


async def eventually(pred: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


@asynccontextmanager
async def log_writer(sink: LogSink, home: Home) -> AsyncIterator[LogWriter]:
    writer = LogWriter(sink, Spool(home.log_dir / "spool"),
                       RowBuilder(labels_for=lambda r: LABELS), flush_ms=20)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def bad_canary_traffic(writer: LogWriter) -> None:
    """Canary requests, half Spanish; the canary is wrong on most Spanish ones."""
    await serve_and_label(writer, 300, rng=random.Random(9), share_es=0.5, route=ROUTE,
                          model_id=V2, arm="canary",
                          acc=lambda lang: 0.4 if lang == "es" else 0.97)


def contained(store: RouteStore) -> bool:
    state = store.get(ROUTE)
    return state is not None and state.canary is None


async def test_embedded_monitor_drops_a_bad_canary(copy_home: Home) -> None:
    settings = Settings(home=copy_home.root, drift_interval_s=0.02)
    routes = MemoryRouteStore()
    await routes.seed({ROUTE: GUARDED})
    runtime = DriftRuntime.build(settings, copy_home, RouteService(routes), holder="solo")
    async with log_writer(SqliteSink(copy_home.log_dir / "inference.db"), copy_home) as w:
        await runtime.start()
        try:
            await bad_canary_traffic(w)
            assert await eventually(lambda: contained(routes))
            state = routes.get(ROUTE)
            assert state is not None and state.live == V1 and state.updated_by == "guard"
            [incident] = await runtime.store.incidents()
            assert incident.model_id == V2 and incident.status == "contained"
            assert incident.actions[0]["kind"] == "clear_canary"
            alerts = await runtime.store.alerts(model_id=V2)
            acted = [a for a in alerts if a.guard_status == "acted"]
            assert acted and all(a.arm == "canary" for a in acted)
            assert {a.detector for a in acted} <= {"overall", "language=es"}
            assert acted[0].baseline is not None and acted[0].baseline > 0.9  # v1's bars
            status = runtime.status()
            assert status["leader"] and status["loop"]["alive"]
        finally:
            await runtime.close()


async def test_of_two_replicas_one_monitor_acts_once(
        copy_home: Home, redis_url: str, pg_url: str) -> None:
    settings = Settings(home=copy_home.root, redis_url=redis_url, database_url=pg_url,
                        drift_interval_s=0.02, drift_lease_ttl_s=2)
    stores = [RedisRouteStore(redis_url, resync_s=0.5) for _ in range(2)]
    for s in stores:
        await s.start()
    await stores[0].seed({ROUTE: GUARDED})
    runtimes = [DriftRuntime.build(settings, copy_home, RouteService(s), holder=f"r{i}")
                for i, s in enumerate(stores)]
    try:
        async with log_writer(PostgresSink(pg_url), copy_home) as writer:
            for rt in runtimes:
                await rt.start()
            assert await eventually(lambda: sum(rt.leader for rt in runtimes) == 1)
            await bad_canary_traffic(writer)
            assert await eventually(lambda: all(contained(s) for s in stores))
            audit = await stores[0].audit(ROUTE)
            assert [e.action for e in audit if e.by == "guard"] == ["rollback"]
            assert sum(rt.leader for rt in runtimes) == 1
            assert len(await runtimes[0].store.incidents()) == 1
    finally:
        for rt in runtimes:
            await rt.close()
        for s in stores:
            await s.close()
    assert redis.Redis.from_url(redis_url).get(LEASE_KEY) is None  # released


@pytest.mark.parametrize("url", ["ftp://hook", "http://hook"])
def test_a_webhook_needs_an_http_url_and_a_secret(copy_home: Home, url: str) -> None:
    from lora_router.ground.errors import ConfigError

    settings = Settings(home=copy_home.root, drift_webhook_url=url)
    with pytest.raises(ConfigError):
        DriftRuntime.build(settings, copy_home, RouteService(MemoryRouteStore()), holder="x")
