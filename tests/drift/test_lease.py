"""The monitor's lease in real Redis: one holder, renewal, compare-and-delete, expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aredis

from lora_router.router.drift.lease import LocalLease, RedisLease
from tests.conftest import free_port


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(redis_url, socket_timeout=2)
    yield c
    await c.aclose()


async def eventually(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.02)
    return await pred()


async def test_only_one_replica_holds_the_lease(client: aredis.Redis) -> None:
    a, b = RedisLease(client, "replica-a"), RedisLease(client, "replica-b")
    assert await a.acquire()
    assert not await b.acquire()
    assert await a.acquire()  # renewed
    await b.release()  # not its lease: nothing happens
    assert await a.holder_token() == a.token
    await a.release()
    assert await a.holder_token() is None
    assert await b.acquire()
    assert not await a.acquire()


async def test_an_expired_lease_is_taken_over_and_the_old_holder_stops(
        client: aredis.Redis) -> None:
    a = RedisLease(client, "replica-a", ttl_s=0.2)
    b = RedisLease(client, "replica-b", ttl_s=5)
    assert await a.acquire()
    assert await eventually(b.acquire)  # a stalled past its TTL
    assert not await a.acquire()  # its renewal finds another token: it stops acting
    await a.release()
    assert await b.holder_token() == b.token


async def test_no_redis_means_not_acting() -> None:
    dead = aredis.Redis(port=free_port(), socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        lease = RedisLease(dead, "replica-a")
        assert not await lease.acquire()
        await lease.release()
    finally:
        await dead.aclose()


async def test_the_embedded_lease_always_holds() -> None:
    lease = LocalLease("only")
    assert await lease.acquire() and await lease.acquire()
    await lease.release()
