"""The route-store contract, run against every backend (memory, SQLite and real Redis)."""

from __future__ import annotations

import asyncio

import pytest

from lora_router.ground.errors import VersionConflict
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.flags.store import RouteStore
from tests.flags.conftest import canary_state, make_state


async def test_unknown_route_reads_as_none(store: RouteStore) -> None:
    assert store.get("nope") is None
    assert store.all() == {}


async def test_seed_creates_missing_routes_at_version_1(store: RouteStore) -> None:
    await store.seed({"support": make_state(), "billing": make_state("billing", "billing@v1")})
    assert store.get("support") is not None
    assert store.get("support").version == 1  # type: ignore[union-attr]
    assert set(store.all()) == {"support", "billing"}
    entries = await store.audit("support")
    assert [(e.version, e.action, e.before) for e in entries] == [(1, "seed", None)]


async def test_seed_keeps_existing_state(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    changed = await store.put(make_state(live="support@v2", updated_by="ann"), 1)
    await store.seed({"support": make_state(live="support@v9")})
    assert store.get("support") == changed
    assert store.get("support").live == "support@v2"  # type: ignore[union-attr]


async def test_put_commits_next_version_and_reads_back(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    new = await store.put(canary_state(25), 1, action="canary")
    assert new.version == 2
    assert new.canary == Split(adapter="support@v2", percent=25)
    assert store.get("support") == new
    assert store.all()["support"] == new


async def test_put_with_stale_version_raises_conflict(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    await store.put(canary_state(), 1)
    with pytest.raises(VersionConflict) as info:
        await store.put(make_state(live="support@v3"), 1)
    assert info.value.status_code == 409
    assert info.value.detail["found"] == 2
    assert store.get("support").version == 2  # type: ignore[union-attr]
    assert store.get("support").live == "support@v1"  # type: ignore[union-attr]


async def test_put_expected_zero_creates_only_new_routes(store: RouteStore) -> None:
    created = await store.put(make_state("fresh", "fresh@v1"), 0)
    assert created.version == 1
    with pytest.raises(VersionConflict):
        await store.put(make_state("fresh", "fresh@v2"), 0)


async def test_audit_records_who_why_before_after_oldest_first(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    first = store.get("support")
    second = await store.put(
        canary_state().model_copy(update={"updated_by": "ann", "reason": "try v2"}), 1, "canary"
    )
    await store.put(
        make_state(updated_by="bob", reason="abort", rollback_target="support@v0"), 2, "rollback"
    )
    entries = await store.audit("support")
    assert [e.version for e in entries] == [1, 2, 3]
    assert [e.action for e in entries] == ["seed", "canary", "rollback"]
    assert (entries[1].by, entries[1].reason) == ("ann", "try v2")
    assert entries[1].before == first
    assert entries[1].after == second
    assert entries[2].before == second
    assert entries[2].after.canary is None
    assert [e.version for e in await store.audit("support", limit=2)] == [2, 3]
    assert await store.audit("other") == []


async def test_subscribers_see_each_change_in_version_order(store: RouteStore) -> None:
    seen: list[tuple[str, int]] = []
    store.subscribe(lambda s: seen.append((s.route, s.version)))
    await store.seed({"support": make_state()})
    await store.put(canary_state(), 1)
    await store.put(make_state(), 2)
    for _ in range(100):  # the Redis listener may echo our own writes: they must not repeat
        await asyncio.sleep(0.005)
    assert seen == [("support", 1), ("support", 2), ("support", 3)]


async def test_two_concurrent_writers_exactly_one_wins(store: RouteStore) -> None:
    await store.seed({"support": make_state()})
    a = make_state(live="support@v2", updated_by="ann", rollback_target="support@v1")
    b = make_state(live="support@v3", updated_by="bob", rollback_target="support@v1")
    results = await asyncio.gather(store.put(a, 1), store.put(b, 1), return_exceptions=True)
    wins = [r for r in results if isinstance(r, RouteState)]
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(wins) == 1 and len(conflicts) == 1
    assert store.get("support") == wins[0]
    changes = [e for e in await store.audit("support") if e.action != "seed"]
    assert len(changes) == 1
    assert changes[0].after == wins[0]


async def test_health_reports_connected(store: RouteStore) -> None:
    health = store.health()
    assert health.connected is True
    assert health.backend in {"memory", "sqlite", "redis"}
