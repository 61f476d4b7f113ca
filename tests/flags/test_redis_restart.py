"""After a Redis restart (it keeps nothing on disk) a long-lived writer's next change works
at once, and a replica's load responder and heartbeat come back by themselves. While Redis
is down, a change is a 503 and a replica whose heartbeat expired says it is unregistered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import redis.asyncio as aredis
from prometheus_client import REGISTRY

from lora_router.router.flags.member import LoadResponder, ReplicaMember
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo, ReplicaRegistry
from lora_router.router.flags.route_service import RouteService
from tests.flags.apps import admin_app
from tests.flags.conftest import RedisServer, make_state


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_the_first_write_after_a_redis_restart_succeeds(
    throwaway_redis: RedisServer,
) -> None:
    store = RedisRouteStore(throwaway_redis.url, resync_s=0.2, timeout_s=0.5)
    await store.start()
    try:
        await store.seed({"support": make_state(rollback_target="support@v0")})
        first = await store.put(
            make_state(live="support@v2", rollback_target="support@v1"), 1, "set-live"
        )
        throwaway_redis.stop()
        await wait_until(lambda: not store.health().connected, 5, "the listener to notice")
        throwaway_redis.start()
        # the listener resyncs and writes our last-known state back (Redis lost it)
        await wait_until(lambda: store.health().connected, 10, "the listener to resync")
        new = await store.put(make_state(live="support@v1"), first.version, "rollback")
        assert new.version == 3
        assert [e.version for e in await store.audit("support")][-1] == 3
    finally:
        await store.close()


async def test_a_replica_answers_load_requests_again_after_a_redis_restart(
    throwaway_redis: RedisServer,
) -> None:
    client = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=2,
                                   socket_connect_timeout=0.5)
    loaded: list[list[str]] = []

    async def load(adapters: list[str]) -> None:
        loaded.append(adapters)

    responder = LoadResponder(client, "r1", load)
    member = ReplicaMember(client, ReplicaInfo(id="r1"), ttl_s=1.0, interval_s=0.1)
    await responder.start()
    await member.start()
    registry = ReplicaRegistry(client, settle_s=1.0)  # the member's TTL
    try:
        assert (await registry.request_load({"a@v1"}, 2)).ok
        throwaway_redis.stop()
        await asyncio.sleep(0.3)
        throwaway_redis.start()
        deadline = time.monotonic() + 10
        while True:  # presence returns with the next heartbeat; the responder resubscribes
            try:
                if await registry.live() == ["r1"]:
                    outcome = await registry.request_load({"a@v2"}, 1)
                    if outcome.ok:
                        break
            except Exception:  # Redis still coming back
                pass
            assert time.monotonic() < deadline, "the replica did not come back"
            await asyncio.sleep(0.1)
        assert loaded[0] == ["a@v1"] and loaded[-1] == ["a@v2"]
    finally:
        started = time.monotonic()
        await member.stop()
        await responder.stop()
        assert time.monotonic() - started < 5  # shutdown never hangs
        await client.aclose()


async def test_a_change_while_redis_is_down_is_a_503_not_a_500(
    throwaway_redis: RedisServer,
) -> None:
    store = RedisRouteStore(throwaway_redis.url, resync_s=0.2, timeout_s=0.5)
    await store.start()
    client = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=0.5,
                                   socket_connect_timeout=0.5)
    service = RouteService(store, replicas=ReplicaRegistry(client), apply_timeout_s=1)
    transport = httpx.ASGITransport(app=admin_app(service))
    try:
        await store.seed({"support": make_state(rollback_target="support@v0")})
        throwaway_redis.stop()
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            r = await http.post("/admin/routes/support/rollback", json={"reason": "v1 bad"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "flag_store_unavailable"
            shown = await http.get("/admin/routes/support")  # reads: the last-known state
            assert (shown.status_code, shown.json()["live"]) == (200, "support@v1")
    finally:
        await client.aclose()
        await store.close()


def registered_gauge() -> float | None:
    return REGISTRY.get_sample_value("lora_router_replica_registered")


async def test_a_replica_whose_heartbeat_expired_says_it_is_not_registered(
    throwaway_redis: RedisServer,
) -> None:
    client = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=0.3,
                                   socket_connect_timeout=0.3)
    member = ReplicaMember(client, ReplicaInfo(id="r1"), ttl_s=0.6, interval_s=0.1)
    await member.start()
    try:
        assert member.registered and registered_gauge() == 1
        throwaway_redis.stop()
        await asyncio.sleep(0.3)  # failing, but the key would still be alive
        assert member.registered
        await wait_until(lambda: not member.registered, 5, "registered to drop")
        assert registered_gauge() == 0
        throwaway_redis.start()
        await wait_until(lambda: member.registered, 5, "registered again")
        assert registered_gauge() == 1
    finally:
        await member.stop()
        await client.aclose()
