"""Redis-only behaviour: propagation to other processes' snapshots, resync, fail-static."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client import REGISTRY

from lora_router.ground.errors import FlagStoreUnavailable, VersionConflict
from lora_router.router.flags import keys
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.state import RouteState, Split
from tests.flags.conftest import RedisServer, canary_state, make_state


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until ``check()`` held; fails after ``timeout_s``."""
    t0 = time.perf_counter()
    while not check():
        assert time.perf_counter() - t0 < timeout_s, "condition not reached in time"
        await asyncio.sleep(0.001)
    return time.perf_counter() - t0


async def test_a_change_reaches_every_other_snapshot(redis_url: str) -> None:
    writer = RedisRouteStore(redis_url)
    readers = [RedisRouteStore(redis_url) for _ in range(3)]
    for s in (writer, *readers):
        await s.start()
    try:
        await writer.seed({"support": make_state()})
        await eventually(lambda: all(r.get("support") is not None for r in readers))
        new = await writer.put(canary_state(20), 1)
        await eventually(lambda: all(r.get("support") == new for r in readers), 2.0)
        assert all(r.all() == {"support": new} for r in readers)
    finally:
        for s in (writer, *readers):
            await s.close()


async def test_a_missed_message_heals_at_the_next_resync(redis_url: str) -> None:
    store = RedisRouteStore(redis_url, resync_s=0.2)
    await store.start()
    try:
        await store.seed({"support": make_state()})
        # a change written without a publish: only the periodic resync can bring it in
        hidden = make_state(live="support@v2", version=2)
        client = redis.Redis.from_url(redis_url)
        client.hset(keys.ROUTES, "support", hidden.model_dump_json())
        client.hset(keys.VERSIONS, "support", 2)
        client.close()
        await eventually(lambda: store.get("support") == hidden, 3.0)
    finally:
        await store.close()


async def test_start_fails_clearly_when_redis_is_down() -> None:
    from tests.conftest import free_port

    store = RedisRouteStore(f"redis://127.0.0.1:{free_port()}/0", start_timeout_s=0.5)
    with pytest.raises(FlagStoreUnavailable):
        await store.start()


async def test_reads_survive_redis_loss_and_state_is_restored_on_return(
    throwaway_redis: RedisServer,
) -> None:
    url = throwaway_redis.url
    a = RedisRouteStore(url, resync_s=0.2, timeout_s=0.3)
    b = RedisRouteStore(url, resync_s=0.2, timeout_s=0.3)
    await a.start()
    await b.start()
    try:
        await a.seed({"support": make_state()})
        v2 = await a.put(canary_state(30), 1)
        await eventually(lambda: b.get("support") == v2)
        synced_at = b.health().last_sync_at

        throwaway_redis.stop()
        await eventually(lambda: not a.health().connected and not b.health().connected)
        assert REGISTRY.get_sample_value("lora_router_flags_connected") == 0
        assert b.get("support") == v2 and a.all() == {"support": v2}  # fail-static
        assert b.health().last_sync_at == synced_at
        with pytest.raises(FlagStoreUnavailable):
            await a.put(make_state(), 2)

        throwaway_redis.start()  # comes back empty: it keeps nothing on disk
        await eventually(lambda: a.health().connected and b.health().connected, 10.0)
        assert b.health().last_sync_at > synced_at  # type: ignore[operator]
        assert REGISTRY.get_sample_value("lora_router_flags_connected") == 1
        wider = v2.model_copy(update={"canary": Split(adapter="support@v2", percent=50)})
        v3 = await a.put(wider, 2)
        await eventually(lambda: b.get("support") == v3)
        assert [e.action for e in await a.audit("support")][-2:] == ["restore", "set"]
    finally:
        await a.close()
        await b.close()


async def test_two_writers_in_different_stores_exactly_one_wins(redis_url: str) -> None:
    ann, bob = RedisRouteStore(redis_url), RedisRouteStore(redis_url)
    await ann.start()
    await bob.start()
    try:
        await ann.seed({"support": make_state()})
        await eventually(lambda: bob.get("support") is not None)
        results = await asyncio.gather(
            ann.put(make_state(live="support@v2", updated_by="ann"), 1),
            bob.put(make_state(live="support@v3", updated_by="bob"), 1),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, RouteState)]
        assert len(wins) == 1
        assert sum(isinstance(r, VersionConflict) for r in results) == 1
        await eventually(lambda: ann.get("support") == bob.get("support") == wins[0])
        changes = [e for e in await bob.audit("support") if e.action != "seed"]
        assert [(e.version, e.by) for e in changes] == [(2, wins[0].updated_by)]
    finally:
        await ann.close()
        await bob.close()
