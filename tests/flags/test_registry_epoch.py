"""After Redis loses its data the replica registry is empty until the next heartbeats: a
gated change must not read that as "no replica to ask". It waits until the registry's epoch
is one replica TTL old (every live replica has beaten since), or is refused with a 503
naming why. On a private redis-server, restarted empty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import redis.asyncio as aredis

from lora_router.ground.errors import ReplicaRegistrySettling
from lora_router.router.flags import keys
from lora_router.router.flags.member import LoadResponder, ReplicaMember
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo, ReplicaRegistry
from lora_router.router.flags.route_service import RouteService
from tests.flags.apps import admin_app
from tests.flags.conftest import RedisServer, make_state

TTL_S = 1.0


@dataclass
class Replica:
    member: ReplicaMember
    responder: LoadResponder
    loaded: list[list[str]] = field(default_factory=list)


@pytest.fixture
async def client(throwaway_redis: RedisServer) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=3, socket_connect_timeout=1)
    yield c
    await c.aclose()


@pytest.fixture
async def replica(client: aredis.Redis) -> AsyncIterator[Replica]:
    """A replica that beats slowly (every 0.6 s, TTL 1 s): after a restart its presence
    returns up to 0.6 s later."""
    out = Replica(None, None)  # type: ignore[arg-type]

    async def load(adapters: list[str]) -> None:
        out.loaded.append(adapters)

    out.responder = LoadResponder(client, "r1", load)
    out.member = ReplicaMember(client, ReplicaInfo(id="r1"), ttl_s=TTL_S, interval_s=0.6)
    await out.responder.start()
    await out.member.start()
    yield out
    await out.member.stop()
    await out.responder.stop()


async def test_a_gated_change_right_after_redis_restarts_waits_for_the_replicas(
    throwaway_redis: RedisServer, client: aredis.Redis, replica: Replica
) -> None:
    registry = ReplicaRegistry(client, settle_s=TTL_S)
    assert (await registry.request_load({"a@v1"}, 3)).acks.keys() == {"r1"}
    throwaway_redis.stop()
    throwaway_redis.start()  # empty: r1 is not registered until its next beat
    outcome = await registry.request_load({"a@v2"}, 3)
    assert outcome.ok and set(outcome.acks) == {"r1"}  # asked, not skipped
    assert replica.loaded[-1] == ["a@v2"]


async def test_the_first_heartbeat_after_a_data_loss_starts_the_epoch(
    throwaway_redis: RedisServer, client: aredis.Redis, replica: Replica
) -> None:
    registry = ReplicaRegistry(client, settle_s=TTL_S)
    lost_at_ms = time.time() * 1000  # Redis runs on this machine: the same clock
    throwaway_redis.stop()
    throwaway_redis.start()
    check = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=2)
    try:  # nothing but the replica's heartbeat touches Redis meanwhile
        await wait_until_async(lambda: check.exists(keys.REPLICAS_EPOCH), 5, "the epoch")
        assert int(await check.get(keys.REPLICAS_EPOCH)) >= int(lost_at_ms)  # began after
    finally:
        await check.aclose()
    # once it is a TTL old, a gated change does not wait at all
    await wait_until_async(lambda: _older(registry, TTL_S), 5, "the epoch to settle")
    assert await registry.epoch.wait_settled(timeout_s=3) == 0.0


async def _older(registry: ReplicaRegistry, age_s: float) -> bool:
    return await registry.epoch.age_s() >= age_s


async def wait_until_async(
    cond: Callable[[], Awaitable[object]], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_change_is_a_503_naming_why_when_the_registry_cannot_settle_in_time(
    throwaway_redis: RedisServer, client: aredis.Redis
) -> None:
    store = RedisRouteStore(throwaway_redis.url, resync_s=0.2, timeout_s=0.5)
    await store.start()
    registry = ReplicaRegistry(client, settle_s=30)  # a TTL longer than the load timeout
    service = RouteService(store, replicas=registry, prepare=registry.load_gate(1),
                           apply_timeout_s=1)
    transport = httpx.ASGITransport(app=admin_app(service))
    try:
        await store.seed({"support": make_state()})
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            r = await http.post("/admin/routes/support/canary",
                                json={"adapter": "support@v2", "percent": 10, "reason": "x"})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "replica_registry_settling"
        assert "Redis lost its data" in err["message"] and "retry" in err["message"]
        assert store.get("support").version == 1  # type: ignore[union-attr]
        with pytest.raises(ReplicaRegistrySettling):
            await registry.request_load({"support@v2"}, 1)
    finally:
        await store.close()
