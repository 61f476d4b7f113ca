"""The route-store contract for the policy text: every backend (memory, SQLite, real Redis)
keeps it with the route's state, versioned, compare-and-set, audited and announced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lora_router.ground.errors import VersionConflict
from lora_router.router.flags.policy_text import new_policy
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore
from tests.flags.conftest import make_state

TEXT = "Refunds: only within 30 days.\nNever promise a refund outside that window.\n"


def with_policy(text: str, version: int, updated_by: str = "config") -> RouteState:
    return make_state(policy=new_policy(text, version, 10_000), last_policy_version=version,
                      updated_by=updated_by)


async def test_a_policy_is_stored_read_back_and_audited(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    new = await store.put(with_policy(TEXT, 1, updated_by="ann"), 1, action="set-policy")
    assert store.get("support") == new
    assert new.policy is not None and new.policy.text == TEXT  # byte for byte
    assert new.policy_version == "support/policy@1"
    entries = await store.audit("support")
    assert [(e.version, e.action) for e in entries] == [(1, "seed"), (2, "set-policy")]
    assert entries[1].before is not None and entries[1].before.policy is None
    assert entries[1].after.policy == new.policy


async def test_a_stale_policy_write_is_a_conflict(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    await store.put(with_policy(TEXT, 1), 1, action="set-policy")
    with pytest.raises(VersionConflict):
        await store.put(with_policy("another text", 1), 1, action="set-policy")
    current = store.get("support")
    assert current is not None and current.policy is not None and current.policy.text == TEXT


async def test_subscribers_get_the_policy_with_the_state(store: RouteStore) -> None:
    seen: list[str | None] = []
    store.subscribe(lambda s: seen.append(s.policy_version))
    await store.seed({"support": make_state()})
    await store.put(with_policy(TEXT, 1), 1, action="set-policy")
    await store.put(make_state(last_policy_version=1), 2, action="clear-policy")
    for _ in range(100):  # the Redis listener may echo our own writes: they must not repeat
        await asyncio.sleep(0.005)
    assert seen == [None, "support/policy@1", None]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_durable_store_keeps_the_policy_across_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    def open_store() -> RouteStore:
        if backend == "sqlite":
            return SqliteRouteStore(tmp_path / "flags" / "routes.db")
        return RedisRouteStore(request.getfixturevalue("redis_url"), resync_s=0.5)

    first = open_store()
    await first.start()
    try:
        await first.seed({"support": make_state()})
        written = await first.put(with_policy(TEXT, 1), 1, action="set-policy")
    finally:
        await first.close()
    second = open_store()
    await second.start()
    try:
        assert second.get("support") == written
        await second.seed({"support": make_state()})  # a restart seeds: the policy stays
        assert second.get("support") == written
    finally:
        await second.close()
