"""Retire against the routes in force, on a copy of the demo home: refused while a route
references the adapter (in the in-process store, or in Redis for the CLI with REDIS_URL),
allowed once the route moves away, and the retired adapter then cannot be routed to through
the real ``RouteService`` with ``home_known_adapters``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from lora_router.ground.errors import AdapterNotFound, AdapterReferenced
from lora_router.ground.home import Home
from lora_router.registry.lifecycle import retire
from lora_router.registry.store import RegistryStore
from lora_router.router.cli.main import app
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import load_routes_file
from lora_router.router.flags.store import RouteStore

V1, V2, ROUTE = "support-triage@v1", "support-triage@v2", "support-triage"
KW = {"actor": "test", "reason": "test"}


async def _refused_to_route(svc: RouteService, adapter: str) -> None:
    version = svc.show(ROUTE).version
    for op in (lambda: svc.set_live(ROUTE, adapter, **KW),
               lambda: svc.canary(ROUTE, adapter, 10, **KW),
               lambda: svc.shadow(ROUTE, adapter, 100, **KW)):
        with pytest.raises(AdapterNotFound, match="unknown or retired"):
            await op()
    assert svc.show(ROUTE).version == version  # nothing committed


async def test_retire_follows_the_memory_store_then_routing_to_it_is_refused(
    copy_home: Home,
) -> None:
    store = MemoryRouteStore()
    await store.seed(load_routes_file(copy_home.routes_file))
    svc = RouteService(store, known_adapters=home_known_adapters(copy_home))
    await svc.canary(ROUTE, V2, 10, **KW)
    with pytest.raises(AdapterReferenced) as exc:
        retire(copy_home, V2, "superseded", routes=store.all())
    assert exc.value.detail["references"] == [f"route {ROUTE}:canary 10%"]
    await svc.promote(ROUTE, **KW)  # v2 live, v1 its rollback target
    with pytest.raises(AdapterReferenced, match=f"route {ROUTE}:rollback_target"):
        retire(copy_home, V1, "old", routes=store.all())
    await svc.rollback(ROUTE, **KW)  # live := v1; v2 is referenced by nothing
    assert retire(copy_home, V2, "superseded", routes=store.all()).status == "retired"
    assert V2 not in home_known_adapters(copy_home)()
    await _refused_to_route(svc, V2)


def _cli_retire(home: Home, adapter: str, redis_url: str) -> Any:
    args = ["registry", "retire", adapter, "--reason", "superseded", "--home", str(home.root)]
    return CliRunner().invoke(app, args, env={"REDIS_URL": redis_url})


def _with_redis(redis_url: str, home: Home,
                step: Callable[[RouteService], Awaitable[None]]) -> None:
    """Run ``step`` on a fresh Redis-backed service (as one CLI or gateway process would)."""

    async def main() -> None:
        store: RouteStore = RedisRouteStore(redis_url)
        await store.start()
        try:
            await store.seed(load_routes_file(home.routes_file))
            await step(RouteService(store, known_adapters=home_known_adapters(home)))
        finally:
            await store.close()

    asyncio.run(main())


def test_cli_retire_reads_redis_refuses_with_routes_and_arms_then_succeeds(
    copy_home: Home, redis_url: str
) -> None:
    async def canary(svc: RouteService) -> None:
        await svc.canary(ROUTE, V2, 10, **KW)

    _with_redis(redis_url, copy_home, canary)
    result = _cli_retire(copy_home, V2, redis_url)
    assert result.exit_code == 2, result.output
    assert f"route {ROUTE}:canary 10%" in result.output and "Redis at" in result.output
    assert "Traceback" not in result.output
    assert RegistryStore(copy_home).get_model_card(V2).status == "registered"

    async def promote(svc: RouteService) -> None:
        await svc.promote(ROUTE, **KW)

    _with_redis(redis_url, copy_home, promote)
    result = _cli_retire(copy_home, V2, redis_url)  # now live in Redis
    assert result.exit_code == 2 and f"route {ROUTE}:live" in result.output

    async def roll_back(svc: RouteService) -> None:
        await svc.rollback(ROUTE, **KW)

    _with_redis(redis_url, copy_home, roll_back)
    result = _cli_retire(copy_home, V2, redis_url)
    assert result.exit_code == 0, result.output
    assert RegistryStore(copy_home).get_model_card(V2).status == "retired"

    async def refused(svc: RouteService) -> None:
        await _refused_to_route(svc, V2)

    _with_redis(redis_url, copy_home, refused)
