"""A replica's long-lived loops (flag listener, heartbeat, load responder) survive Redis
errors that are not network errors and malformed messages: on a private redis-server made a
replica of a dead master (every write answers ``READONLY``, as during a failover), and with
junk published on the changes and load-request channels. Each loop counts what it survived
and stays alive; once Redis is writable again the replica applies later changes, heartbeats
and answers load requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio as aredis

from lora_router.router.flags import keys
from lora_router.router.flags.member import LoadResponder, ReplicaMember
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo, ReplicaRegistry
from tests.conftest import free_port
from tests.flags.conftest import RedisServer, make_state

JUNK = (b"not json", b"[]", b"null", b'{"id": "x"}', b"\xff\xfe", b'{"replicas": 5}')


async def wait_until(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Replica:
    store: RedisRouteStore
    member: ReplicaMember
    responder: LoadResponder
    loaded: list[list[str]] = field(default_factory=list)

    def errors(self) -> dict[str, int]:
        loops = [*self.store.loops(), self.member.status(), self.responder.status()]
        assert all(loop.alive for loop in loops), loops
        return {loop.name: loop.errors for loop in loops}


@pytest.fixture
async def client(throwaway_redis: RedisServer) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(throwaway_redis.url, socket_timeout=3, socket_connect_timeout=1)
    yield c
    await c.aclose()


@pytest.fixture
async def replica(throwaway_redis: RedisServer, client: aredis.Redis) -> AsyncIterator[Replica]:
    store = RedisRouteStore(throwaway_redis.url, resync_s=0.2, timeout_s=0.5, replica_id="r1")
    await store.start()
    await store.seed({"support": make_state(rollback_target="support@v0")})
    out = Replica(store, None, None)  # type: ignore[arg-type]

    async def load(adapters: list[str]) -> None:
        out.loaded.append(adapters)

    out.responder = LoadResponder(client, "r1", load)
    out.member = ReplicaMember(client, ReplicaInfo(id="r1"), ttl_s=1.0, interval_s=0.1)
    await out.responder.start()
    await out.member.start()
    yield out
    await out.member.stop()
    await out.responder.stop()
    await store.close()


@pytest.fixture
def admin(throwaway_redis: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(throwaway_redis.url, socket_timeout=2)


async def test_readonly_redis_stops_neither_the_listener_nor_the_heartbeat(
    replica: Replica, client: aredis.Redis, admin: redis.Redis, throwaway_redis: RedisServer
) -> None:
    cur = replica.store.get("support")
    assert cur is not None
    admin.replicaof("127.0.0.1", free_port())  # a dead master: every write is READONLY
    try:
        # a change published meanwhile is applied, though its applied report cannot be
        # written; the heartbeat's writes fail too
        published = cur.model_copy(update={"version": cur.version + 1, "reason": "failover"})
        admin.publish(keys.channel(keys.CHANGES_CHANNEL, admin), published.model_dump_json())
        await wait_until(lambda: replica.store.get("support") == published, 5, "applied")
        await wait_until(lambda: replica.errors()["heartbeat"] > 0
                         and replica.errors()["flags_listener"] > 0, 10, "READONLY seen")
    finally:
        admin.replicaof("NO", "ONE")
    # writable again: the listener writes back the state Redis lacks, then a later change
    # is applied, and the heartbeat registers the replica again
    await wait_until(lambda: int(admin.hget(keys.VERSIONS, "support") or 0) == published.version,
                     10, "the published state restored")
    writer = RedisRouteStore(throwaway_redis.url)
    await writer.start()
    try:
        later = await writer.put(make_state(live="support@v0"), published.version, "rollback")
    finally:
        await writer.close()
    await wait_until(lambda: replica.store.get("support") == later, 10, "the later change")
    registry = ReplicaRegistry(client, settle_s=1.0)
    deadline = time.monotonic() + 10
    while await registry.live() != ["r1"]:
        assert time.monotonic() < deadline, "the heartbeat did not come back"
        await asyncio.sleep(0.05)
    assert replica.member.registered
    assert (await registry.applied("support", ["r1"])) == {"r1": later.version}
    assert replica.errors()["load_responder"] == 0


async def test_malformed_messages_stop_neither_the_listener_nor_the_load_responder(
    replica: Replica, client: aredis.Redis, admin: redis.Redis, throwaway_redis: RedisServer
) -> None:
    for junk in JUNK:
        admin.publish(keys.channel(keys.LOAD_REQUEST_CHANNEL, admin), junk)
        admin.publish(keys.channel(keys.CHANGES_CHANNEL, admin), junk)
    await wait_until(lambda: replica.errors()["load_responder"] >= len(JUNK)
                     and replica.errors()["flags_listener"] >= len(JUNK), 10, "junk counted")
    registry = ReplicaRegistry(client, settle_s=1.0)
    outcome = await registry.request_load({"support@v2"}, 5)  # still answered
    assert outcome.ok and set(outcome.acks) == {"r1"} and replica.loaded == [["support@v2"]]
    writer = RedisRouteStore(throwaway_redis.url)
    await writer.start()
    try:
        later = await writer.put(make_state(live="support@v0"), 1, "rollback")
    finally:
        await writer.close()
    await wait_until(lambda: replica.store.get("support") == later, 10, "a later change")


async def test_a_load_that_raises_anything_is_answered_and_the_responder_goes_on(
    client: aredis.Redis,
) -> None:
    calls: list[list[str]] = []

    async def load(adapters: list[str]) -> None:
        calls.append(adapters)
        if len(calls) == 1:
            raise RuntimeError("engine exploded")

    responder = LoadResponder(client, "r1", load)
    member = ReplicaMember(client, ReplicaInfo(id="r1"), ttl_s=1.0, interval_s=0.1)
    await responder.start()
    await member.start()
    try:
        registry = ReplicaRegistry(client, settle_s=1.0)
        first = await registry.request_load({"a@v1"}, 5)
        assert not first.ok and first.acks["r1"].code == "internal_error"
        assert (await registry.request_load({"a@v2"}, 5)).ok
        assert responder.status().alive
    finally:
        await member.stop()
        await responder.stop()
    assert not responder.status().alive  # stopped: /readyz would say so
