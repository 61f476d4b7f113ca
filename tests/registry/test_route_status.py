"""Model-card status follows the routes (``sync_route_status``), and the card's rollback
target (``card_rollback_target``), on a copy of the demo home.

The route changes go through the real ``RouteService`` on the in-process store; the sync is
called as the service's ``on_commit(before, after)`` hook calls it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import pytest

from lora_router.ground.home import Home
from lora_router.registry.lifecycle import registry_lock
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import ChangeResult, RouteService
from lora_router.router.flags.route_status import card_rollback_target, sync_route_status
from lora_router.router.flags.state import RouteState, Split, load_routes_file
from tests.registry.helpers import edit_yaml

V1, V2, ROUTE = "support-triage@v1", "support-triage@v2", "support-triage"

Transitions = list[tuple[str, str, str]]


async def _service(home: Home) -> RouteService:
    store = MemoryRouteStore()
    await store.start()
    await store.seed(load_routes_file(home.routes_file))
    return RouteService(store, known_adapters=home_known_adapters(home))


async def _synced(
    home: Home, svc: RouteService, op: Callable[[], Awaitable[ChangeResult]],
    *, all_routes: bool = True,
) -> Transitions:
    before = svc.show(ROUTE)
    after = (await op()).state
    return sync_route_status(home, before, after,
                             all_states=svc.store.all() if all_routes else None)


def _status(home: Home, adapter: str) -> str:
    return RegistryStore(home).get_model_card(adapter).status


async def test_status_follows_a_rollout_promote_and_rollback(copy_home: Home) -> None:
    h = copy_home
    svc = await _service(h)
    kw = {"actor": "alice", "reason": "rollout"}
    # the demo build marks the seeded route's live adapter; syncing it again changes nothing
    assert _status(h, V1) == "live"
    assert sync_route_status(h, None, svc.show(ROUTE), all_states=svc.store.all()) == []
    assert await _synced(h, svc, lambda: svc.shadow(ROUTE, V2, 50, **kw)) == [
        (V2, "registered", "shadow")]
    assert await _synced(h, svc, lambda: svc.canary(ROUTE, V2, 10, **kw)) == [
        (V2, "shadow", "canary")]
    # promote: v2 live, v1 becomes the rollback target and keeps "live" (warm standby)
    assert await _synced(h, svc, lambda: svc.promote(ROUTE, **kw)) == [(V2, "canary", "live")]
    assert (_status(h, V1), svc.show(ROUTE).rollback_target) == ("live", V1)
    # rollback: live := v1; v2 is referenced by nothing any more and returns to the pool
    assert await _synced(h, svc, lambda: svc.rollback(
        ROUTE, actor="bob", reason="f1 dropped")) == [(V2, "live", "registered")]
    assert (_status(h, V1), _status(h, V2)) == ("live", "registered")
    last = RegistryStore(h).get_model_card(V2).history[-1]
    assert (last.status, last.by) == ("registered", "bob")
    version = svc.show(ROUTE).version
    assert last.reason == f"route {ROUTE} v{version}: off live, referenced by no route " \
        "(f1 dropped)"
    assert [c.status for c in RegistryStore(h).get_model_card(V2).history] == [
        "registered", "shadow", "canary", "live", "registered"]


async def test_an_aborted_canary_returns_to_registered(copy_home: Home) -> None:
    svc = await _service(copy_home)
    kw = {"actor": "alice", "reason": "try v2"}
    assert await _synced(copy_home, svc, lambda: svc.canary(ROUTE, V2, 20, **kw)) == [
        (V2, "registered", "canary")]
    assert await _synced(copy_home, svc, lambda: svc.rollback(ROUTE, **kw)) == [
        (V2, "canary", "registered")]
    assert "off canary" in RegistryStore(copy_home).get_model_card(V2).history[-1].reason


async def test_other_routes_are_considered_and_without_them_nothing_is_lowered(
    copy_home: Home,
) -> None:
    svc = await _service(copy_home)
    other = RouteState(route="triage-es", live=V2)
    await svc.store.seed({"triage-es": other})
    assert sync_route_status(copy_home, None, other, all_states=svc.store.all()) == [
        (V2, "registered", "live")]
    kw = {"actor": "alice", "reason": "canary on the main route too"}
    # v2 stays live (it is live on triage-es) while it is only a canary here
    assert await _synced(copy_home, svc, lambda: svc.canary(ROUTE, V2, 10, **kw)) == []
    assert await _synced(copy_home, svc, lambda: svc.rollback(ROUTE, **kw)) == []
    assert _status(copy_home, V2) == "live"
    # without the other routes, a sync may raise a status but never lowers one
    assert await _synced(copy_home, svc, lambda: svc.canary(ROUTE, V2, 10, **kw),
                         all_routes=False) == []
    assert await _synced(copy_home, svc, lambda: svc.rollback(ROUTE, **kw),
                         all_routes=False) == []
    assert _status(copy_home, V2) == "live"


def test_missing_unreadable_and_retired_cards_are_skipped_not_raised(
    copy_home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    before = RouteState(route=ROUTE, live=V1)
    after = RouteState(route=ROUTE, live=V1, version=2,
                       canary=Split(adapter="ghost@v1", percent=5),
                       shadow=Split(adapter=V2, percent=100))
    copy_home.model_card_path(V1).write_text("id: [unclosed\n")
    assert sync_route_status(copy_home, before, after) == [(V2, "registered", "shadow")]
    assert "ghost@v1" in caplog.text and "no model card" in caplog.text
    assert V1 in caplog.text and "not synced" in caplog.text
    edit_yaml(copy_home.model_card_path(V2), status="retired")
    promoted = after.model_copy(update={"live": V2, "shadow": None, "version": 3})
    assert sync_route_status(copy_home, after, promoted, all_states={}) == []
    assert _status(copy_home, V2) == "retired"


def test_sync_waits_for_the_registry_lock(copy_home: Home) -> None:
    done: list[object] = []
    state = RouteState(route=ROUTE, live=V2)
    worker = threading.Thread(target=lambda: done.append(
        sync_route_status(copy_home, None, state)))
    with registry_lock(copy_home):
        worker.start()
        worker.join(0.5)
        assert done == [] and _status(copy_home, V2) == "registered"
    worker.join(10)
    assert done == [[(V2, "registered", "live")]]


def test_card_rollback_target_from_the_model_card(copy_home: Home) -> None:
    assert card_rollback_target(copy_home, V2) == V1  # the demo's v2 card names v1
    assert card_rollback_target(copy_home, V1) is None  # no target recorded
    assert card_rollback_target(copy_home, "ghost@v1") is None  # no card: never raises
    assert card_rollback_target(copy_home, "../../etc@v1") is None
    edit_yaml(copy_home.model_card_path(V1), status="retired")
    assert card_rollback_target(copy_home, V2) is None  # a retired target is no target
    copy_home.model_card_path(V1).unlink()
    assert card_rollback_target(copy_home, V2) is None
    copy_home.model_card_path(V2).write_text("id: [unclosed\n")
    assert card_rollback_target(copy_home, V2) is None

