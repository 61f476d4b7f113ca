"""The guard's decisions, through the route service on real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from lora_router.ground.errors import VersionConflict
from lora_router.router.drift.events import Alert, AlertIn
from lora_router.router.drift.guard import Guard
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState, Split
from tests.drift.conftest import V1, V2, LogDb
from tests.log.conftest import wait_until

V0 = "support@v0"
AUTO = GuardPolicy(auto_rollback=True, protect=("language=es",))


@pytest.fixture
def route() -> str:
    """A route name of this test's own: a replica of an earlier test still winding down
    (its listener restores what it knew into an emptied Redis) cannot touch it."""
    return f"support-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_routes(redis_url: str) -> AsyncIterator[RedisRouteStore]:
    store = RedisRouteStore(redis_url, resync_s=0.5)
    await store.start()
    yield store
    await store.close()


async def seed(store: RedisRouteStore, route: str, **kw: Any) -> RouteState:
    state = RouteState(route=route, **{"live": V1, "guard": AUTO, **kw})
    await store.seed({route: state})
    found = store.get(route)
    assert found is not None
    return found


async def raise_alert(store: DriftStore, state: RouteState, *, model_id: str = V2,
                      arm: str = "canary") -> Alert:
    """Store one slice-quality alert as the monitor would."""
    cp = await store.load_checkpoint()
    alert = AlertIn(
        created_at=datetime(2026, 11, 1, tzinfo=UTC), route=state.route, model_id=model_id, arm=arm,
        signal="slice_quality", detector="language=es", method="bernoulli-cusum",
        severity="critical", window_start=None, window_end=None, n=24, estimate=0.58,
        bound=0.75, statistic=6.1, threshold=5.9, baseline=0.87, evidence={"n": 24},
        route_version=state.version, guard_status="pending",
    )
    (stored,) = await store.commit_tick(cp, cp.version, [alert], holder="test", outbox=False)
    return stored


async def test_set_guard_is_a_versioned_audited_route_change(
        route: str, redis_routes: RedisRouteStore, redis_url: str) -> None:
    service = RouteService(redis_routes)
    before = await seed(redis_routes, route, guard=None)
    result = await service.set_guard(route, AUTO, actor="alice", reason="protect Spanish")
    assert result.state.version == before.version + 1 and result.state.guard == AUTO
    entry = (await service.audit(route))[-1]
    assert (entry.action, entry.by, entry.reason) == ("set-guard", "alice", "protect Spanish")
    assert entry.before is not None and entry.before.guard is None and entry.after.guard == AUTO
    other = RedisRouteStore(redis_url, resync_s=0.5)  # another replica sees the policy
    await other.start()
    try:
        assert wait_until(lambda: (s := other.get(route)) is not None and s.guard == AUTO)
    finally:
        await other.close()
    off = await service.set_guard(route, None, actor="alice", reason="off")
    assert off.state.guard is None


async def test_a_canary_breach_clears_the_canary_and_leaves_live_alone(
        route: str, redis_routes: RedisRouteStore, sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route, rollback_target=V0,
                       canary=Split(adapter=V2, percent=20))
    alert = await raise_alert(sqlite_logdb.store, state)
    [outcome] = await Guard(RouteService(redis_routes), sqlite_logdb.store).run()
    assert outcome.status == "acted" and outcome.incident_id is not None
    after = redis_routes.get(route)
    assert after is not None and after.canary is None
    assert (after.live, after.rollback_target) == (V1, V0)
    assert after.updated_by == "guard" and f"#{alert.id}" in after.reason
    assert after.version == state.version + 1
    incident = await sqlite_logdb.store.incident(outcome.incident_id)
    assert incident is not None and incident.status == "contained"
    assert incident.alert_ids == [alert.id] and incident.model_id == V2
    [action] = incident.actions
    assert action["kind"] == "clear_canary" and action["actor"] == "guard"
    assert (action["route_version_before"], action["route_version_after"]) == (
        state.version, state.version + 1)
    stored = await sqlite_logdb.store.alert(alert.id)
    assert stored is not None and stored.guard_status == "acted"
    assert stored.incident_id == incident.id
    assert await sqlite_logdb.store.pending_alerts() == []


async def test_a_live_breach_rolls_back_to_the_rollback_target(
        route: str, redis_routes: RedisRouteStore, sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route, live=V2, rollback_target=V1,
                       shadow=Split(adapter=V0, percent=50))
    await raise_alert(sqlite_logdb.store, state, arm="live")
    [outcome] = await Guard(RouteService(redis_routes), sqlite_logdb.store).run()
    assert outcome.status == "acted"
    after = redis_routes.get(route)
    assert after is not None and (after.live, after.rollback_target) == (V1, None)
    assert after.shadow == state.shadow  # a split not naming the bad adapter stays
    [entry] = [e for e in await redis_routes.audit(route) if e.by == "guard"]
    assert entry.action == "rollback" and entry.before is not None and entry.before.live == V2


async def test_auto_rollback_off_changes_nothing(route: str, redis_routes: RedisRouteStore,
                                                 sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route, canary=Split(adapter=V2, percent=20),
                       guard=GuardPolicy(auto_rollback=False))
    alert = await raise_alert(sqlite_logdb.store, state)
    [outcome] = await Guard(RouteService(redis_routes), sqlite_logdb.store).run()
    assert outcome.status == "off"
    assert redis_routes.get(route) == state
    stored = await sqlite_logdb.store.alert(alert.id)
    assert stored is not None and stored.guard_status == "off"
    assert await sqlite_logdb.store.incidents() == []


async def test_an_adapter_no_longer_in_its_arm_is_left_alone(
        route: str, redis_routes: RedisRouteStore, sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route)  # the canary was already taken down by a person
    await raise_alert(sqlite_logdb.store, state)
    [outcome] = await Guard(RouteService(redis_routes), sqlite_logdb.store).run()
    assert outcome.status == "stale"
    assert redis_routes.get(route) == state


async def test_no_rollback_target_opens_an_incident_for_a_person(
        route: str, redis_routes: RedisRouteStore, sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route, live=V2)
    await raise_alert(sqlite_logdb.store, state, arm="live")
    [outcome] = await Guard(RouteService(redis_routes), sqlite_logdb.store).run()
    assert outcome.status == "failed"
    assert redis_routes.get(route) == state
    [incident] = await sqlite_logdb.store.incidents()
    assert incident.status == "open" and incident.actions[0]["ok"] is False


async def test_acting_twice_on_one_alert_changes_the_route_once(
        route: str, redis_routes: RedisRouteStore, sqlite_logdb: LogDb) -> None:
    state = await seed(redis_routes, route, live=V2, rollback_target=V1)
    alert = await raise_alert(sqlite_logdb.store, state, arm="live")
    guard = Guard(RouteService(redis_routes), sqlite_logdb.store)
    first = await guard.handle([alert])
    second = await guard.handle([alert])  # e.g. a retry after a crash
    assert (first.status, second.status) == ("acted", "stale")
    with pytest.raises(VersionConflict):  # and the route service itself refuses it
        await RouteService(redis_routes).contain(
            route, V1, actor="guard", reason="again", expected_version=state.version)
    after = redis_routes.get(route)
    assert after is not None and after.version == state.version + 1 and after.live == V1


async def test_two_monitors_racing_on_one_alert_roll_back_once(
        route: str, redis_url: str, logdb: LogDb) -> None:
    """Two replicas' monitors (own Redis connections, own database connections) act on the
    same alert at once: one rolls back, the other sees a version conflict and does nothing."""
    stores = [RedisRouteStore(redis_url, resync_s=0.5) for _ in range(2)]
    drift_stores = [logdb.store, logdb.new_store()]
    for s in stores:
        await s.start()
    await drift_stores[1].open()
    try:
        state = await seed(stores[0], route, live=V2, rollback_target=V1)
        assert wait_until(lambda: stores[1].get(route) == state)
        alert = await raise_alert(logdb.store, state, arm="live")
        guards = [Guard(RouteService(s), d) for s, d in zip(stores, drift_stores, strict=True)]
        outcomes = await asyncio.gather(*(g.handle([alert]) for g in guards))
        assert sorted(o.status for o in outcomes) == ["acted", "conflict"]
        guard_changes = [e for e in await stores[0].audit(route) if e.by == "guard"]
        assert len(guard_changes) == 1
        after = stores[0].get(route)
        assert after is not None and after.version == state.version + 1 and after.live == V1
        [incident] = await logdb.store.incidents()
        assert incident.alert_ids == [alert.id]
        stored = await logdb.store.alert(alert.id)
        assert stored is not None and stored.guard_status == "acted"
    finally:
        await drift_stores[1].close()
        for s in stores:
            await s.close()
