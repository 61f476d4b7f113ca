"""Two fleets on one Redis server, on different databases, never see each other's changes.

Redis pub/sub ignores the database number: before the channels were scoped by database, a
change committed on db 0 was applied by the replicas of db 1 (and their listener wrote it
back into db 1 as "ours").
"""

from __future__ import annotations

import asyncio
import time

import redis

from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.state import RouteState
from tests.flags.conftest import RedisServer

ROUTE = "support"


async def _eventually(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_change_on_one_database_is_not_applied_on_another(
    throwaway_redis: RedisServer,
) -> None:
    base = f"redis://127.0.0.1:{throwaway_redis.port}"
    a = RedisRouteStore(f"{base}/0", resync_s=60)
    b = RedisRouteStore(f"{base}/1", resync_s=60)
    await a.start()
    await b.start()
    try:
        await a.put(RouteState(route=ROUTE, live="support@v1"), 0)
        await b.put(RouteState(route=ROUTE, live="other@v1"), 0)
        await _eventually(lambda: a.get(ROUTE) is not None and b.get(ROUTE) is not None)
        moved = a.get(ROUTE).model_copy(update={"live": "support@v2", "version": 2})
        await a.put(moved, 1)
        await _eventually(lambda: a.get(ROUTE).live == "support@v2")
        # a later change on b's own database: once b has applied it, any message of a's
        # that reached b's listener has been handled before it (one connection, in order)
        mine = b.get(ROUTE).model_copy(update={"reason": "b's own", "version": 2})
        await b.put(mine, 1)
        await _eventually(lambda: b.get(ROUTE).reason == "b's own")
        assert b.get(ROUTE).live == "other@v1"
        stored = redis.Redis.from_url(f"{base}/1").hget("lr:flags:routes", ROUTE)
        assert stored is not None and b"other@v1" in stored and b"support@v2" not in stored
    finally:
        await a.close()
        await b.close()
