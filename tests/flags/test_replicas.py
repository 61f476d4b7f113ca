"""Replica presence, applied versions and the load handshake, on the real Redis.

Each stand-in replica runs the real code: its own RedisRouteStore (listener thread and
connections) reporting applied versions, a ReplicaMember heartbeat and a LoadResponder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aredis

from lora_router.ground.errors import AdapterIncompatible, RouteChangeRefused
from lora_router.router.flags import keys
from lora_router.router.flags.member import LoadResponder, ReplicaMember
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo, ReplicaRegistry
from lora_router.router.flags.route_service import RouteService
from tests.flags.conftest import make_state


@dataclass
class StandIn:
    """A replica without an engine: ``resident`` plays the engine's loaded adapters."""

    id: str
    store: RedisRouteStore
    member: ReplicaMember
    responder: LoadResponder
    refuse: set[str] = field(default_factory=set)
    resident: set[str] = field(default_factory=set)

    async def load(self, adapters: list[str]) -> None:
        bad = sorted(set(adapters) & self.refuse)
        if bad:
            raise AdapterIncompatible(f"{bad[0]} was trained on another base")
        self.resident |= set(adapters)
        await self.member.set_resident(self.resident)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield c
    await c.aclose()


async def established(client: aredis.Redis) -> None:
    """Mark the registry as formed long ago (these tests start every replica first; the
    settling after a Redis data loss is tested in tests/flags/test_registry_epoch.py)."""
    await client.set(keys.REPLICAS_EPOCH, 0)


@pytest.fixture
async def replicas(redis_url: str, client: aredis.Redis) -> AsyncIterator[list[StandIn]]:
    await established(client)
    out: list[StandIn] = []
    for i in range(3):
        rid = f"replica-{i}"
        store = RedisRouteStore(redis_url, replica_id=rid)
        await store.start()
        member = ReplicaMember(client, ReplicaInfo(id=rid), ttl_s=1.0, interval_s=0.2)
        stand_in = StandIn(rid, store, member, None)  # type: ignore[arg-type]
        stand_in.responder = LoadResponder(client, rid, stand_in.load)
        await stand_in.responder.start()  # subscribed before it counts as live
        await member.start()
        out.append(stand_in)
    yield out
    for r in out:
        await r.responder.stop()
        await r.member.stop()
        await r.store.close()


@pytest.fixture
async def writer(redis_url: str) -> AsyncIterator[RedisRouteStore]:
    store = RedisRouteStore(redis_url)
    await store.start()
    await store.seed({"support": make_state(rollback_target="support@v0")})
    yield store
    await store.close()


async def test_registry_lists_live_replicas_and_drops_expired_ones(
    client: aredis.Redis, replicas: list[StandIn]
) -> None:
    registry = ReplicaRegistry(client)
    assert await registry.live() == ["replica-0", "replica-1", "replica-2"]
    assert {i.id for i in await registry.info()} == {"replica-0", "replica-1", "replica-2"}
    crashed = ReplicaMember(client, ReplicaInfo(id="crashed"), ttl_s=0.2)
    await crashed.beat()  # registers, then never beats again
    assert "crashed" in await registry.live()
    await asyncio.sleep(0.3)
    assert "crashed" not in await registry.live()
    await replicas[2].member.stop()
    assert await registry.live() == ["replica-0", "replica-1"]


async def test_rollback_reports_when_every_replica_applied_it(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    registry = ReplicaRegistry(client)
    service = RouteService(writer, replicas=registry, apply_timeout_s=5)
    result = await service.rollback("support", actor="oncall", reason="bad v1")
    report = result.applied
    assert report is not None
    assert report.version == result.state.version == 2
    assert report.replicas == ["replica-0", "replica-1", "replica-2"] and report.pending == []
    assert report.elapsed_ms is not None and 0 <= report.elapsed_ms < 1000
    assert all(r.store.get("support") == result.state for r in replicas)
    applied = await registry.applied("support", await registry.live())
    assert applied == {r.id: 2 for r in replicas}


async def test_a_replica_that_never_applies_is_reported_pending(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    ghost = ReplicaMember(client, ReplicaInfo(id="ghost"), ttl_s=5)
    await ghost.beat()  # live, but has no route store applying changes
    service = RouteService(writer, replicas=ReplicaRegistry(client), apply_timeout_s=0.3)
    result = await service.rollback("support", actor="oncall", reason="bad v1")
    assert result.applied is not None
    assert result.applied.pending == ["ghost"] and result.applied.elapsed_ms is None
    await ghost.stop()


async def test_load_gate_commits_after_every_replica_loaded(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    registry = ReplicaRegistry(client)
    service = RouteService(writer, replicas=registry, prepare=registry.load_gate(5))
    result = await service.canary("support", "support@v2", 10, actor="ann", reason="try")
    assert result.prepare_ms > 0
    assert all(r.resident == {"support@v2"} for r in replicas)
    assert await registry.resident("replica-1") == {"support@v2"}
    assert result.applied is not None and result.applied.pending == []


async def test_load_gate_refuses_with_each_replicas_reason(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    replicas[1].refuse.add("support@v3")
    registry = ReplicaRegistry(client)
    service = RouteService(writer, replicas=registry, prepare=registry.load_gate(5))
    with pytest.raises(RouteChangeRefused) as info:
        await service.set_live("support", "support@v3", actor="ann", reason="hotfix")
    assert info.value.detail["reasons"] == [
        "replica-1: adapter_incompatible: support@v3 was trained on another base"
    ]
    assert writer.get("support").version == 1  # type: ignore[union-attr]
    assert all(r.store.get("support").live == "support@v1" for r in replicas)  # type: ignore[union-attr]


async def test_load_gate_times_out_on_a_silent_replica(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    silent = ReplicaMember(client, ReplicaInfo(id="silent"), ttl_s=5)
    await silent.beat()  # live, but nothing answers its load requests
    registry = ReplicaRegistry(client)
    outcome = await registry.request_load({"support@v2"}, timeout_s=0.3)
    assert not outcome.ok
    assert outcome.missing == ["silent"]
    assert set(outcome.acks) == {"replica-0", "replica-1", "replica-2"}
    assert outcome.reasons() == ["silent: no answer in time"]
    await silent.stop()


async def test_a_replica_that_dies_during_the_wait_is_dropped_not_timed(
    client: aredis.Redis, replicas: list[StandIn], writer: RedisRouteStore
) -> None:
    ghost = ReplicaMember(client, ReplicaInfo(id="ghost"), ttl_s=1.0)
    await ghost.beat()  # live when the change starts; never applies, expires after 1 s
    service = RouteService(writer, replicas=ReplicaRegistry(client), apply_timeout_s=5)
    started = time.perf_counter()
    result = await service.rollback("support", actor="oncall", reason="bad v1")
    waited_ms = (time.perf_counter() - started) * 1e3
    report = result.applied
    assert report is not None
    assert report.dropped == ["ghost"] and report.pending == []
    assert report.replicas == ["replica-0", "replica-1", "replica-2"]
    assert waited_ms >= 500  # it did wait for the ghost's heartbeat to expire ...
    assert report.elapsed_ms is not None and report.elapsed_ms < 500  # ... but not timed it
