"""A model card's status history: moves appended to a log beside the card, so a route change
costs the same after 2 flips as after 200; cards reconciled with the routes in force.

On a copy of the demo home, with the route service and the gateway's registry hooks (card
status kept in step after each change) on the in-process store.
"""

from __future__ import annotations

import yaml

from lora_router.ground.home import Home
from lora_router.registry.card_cache import CardCache
from lora_router.registry.cards import LifecycleStatus, StatusChange
from lora_router.registry.lifecycle import retire, set_status
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.route_status import reconcile_route_status
from lora_router.router.flags.runtime import registry_hooks
from lora_router.router.flags.state import RouteState, load_routes_file

V1, V2, ROUTE = "support-triage@v1", "support-triage@v2", "support-triage"


async def _gateway_service(home: Home) -> RouteService:
    store = MemoryRouteStore()
    await store.start()
    await store.seed(load_routes_file(home.routes_file))
    on_commit, default_rollback = registry_hooks(home, store)
    return RouteService(store, known_adapters=home_known_adapters(home), on_commit=on_commit,
                        default_rollback=default_rollback)


async def _flip(svc: RouteService, n: int) -> None:
    """``n`` route changes: set-live v2 / rollback to v1, each card move recorded (settled
    after each: changes queued behind a running record are coalesced)."""
    for _ in range(n // 2):
        await svc.set_live(ROUTE, V2, actor="bench", reason="flip")
        await svc.settle()
        await svc.rollback(ROUTE, actor="bench", reason="flip back")
        await svc.settle()


def _sizes(home: Home) -> tuple[int, int]:
    store = RegistryStore(home)
    return (home.model_card_path(V2).stat().st_size,
            len(store.model_history_path(V2).read_text().splitlines()))


async def test_card_writes_and_reads_do_not_grow_with_the_number_of_flips(
    copy_home: Home,
) -> None:
    """The regression of "route changes get slower with every change", without timing: the
    card file a move rewrites stays the same size, each move appends one history line, and
    the cards parsed per change stay the same, however many changes came before."""
    svc = await _gateway_service(copy_home)
    card_bytes_at_start = copy_home.model_card_path(V2).stat().st_size
    await _flip(svc, 4)
    bytes_after_4, lines_after_4 = _sizes(copy_home)
    await _flip(svc, 60)
    bytes_after_64, lines_after_64 = _sizes(copy_home)
    assert bytes_after_64 == bytes_after_4 <= card_bytes_at_start + 16
    assert lines_after_64 - lines_after_4 == 60  # v2: live, registered, live, ...
    history = RegistryStore(copy_home).get_model_card(V2).history
    assert len(history) == 1 + 64 and history[0].reason == "registered"
    assert [h.status for h in history[-2:]] == ["live", "registered"]
    assert history[-1].reason.endswith("(flip back)") and history[-1].by == "bench"
    # a card file is parsed again only when it changed: per change, not per earlier change
    cards = CardCache(copy_home)
    known = cards.model_ids()
    for adapter in known:
        cards.model_card(adapter)
    warm = cards.parses
    await _flip(svc, 2)
    for adapter in known:
        cards.model_card(adapter)
    assert cards.parses - warm == 1  # v2's card moved (live, then registered); v1 did not
    for adapter in known:
        cards.model_card(adapter)
    assert cards.parses - warm == 1


async def test_operator_moves_and_retire_use_the_same_log(copy_home: Home) -> None:
    svc = await _gateway_service(copy_home)
    await _flip(svc, 2)
    set_status(copy_home, V2, "shadow", "alice", "trying it on mirrored traffic")
    set_status(copy_home, V2, "registered", "alice", "done")
    retire(copy_home, V2, "superseded", by="carol", routes={})
    card = RegistryStore(copy_home).get_model_card(V2)
    assert card.status == "retired"
    assert [(h.status, h.by) for h in card.history] == [
        ("registered", "demo-build"), ("live", "bench"), ("registered", "bench"),
        ("shadow", "alice"), ("registered", "alice"), ("retired", "carol")]
    head = yaml.safe_load(copy_home.model_card_path(V2).read_text())
    assert head["status"] == "retired" and len(head["history"]) == 1


def test_a_card_with_its_history_inline_moves_it_to_the_log_once(copy_home: Home) -> None:
    """A card written before the log (its history inline, grown by earlier flips) keeps
    every entry, in order; after its first move the card file holds only the first."""
    store = RegistryStore(copy_home)
    path = copy_home.model_card_path(V2)
    data = yaml.safe_load(path.read_text())
    moves: tuple[LifecycleStatus, ...] = ("live", "registered")
    old = [StatusChange(status=s, by="old", reason=f"old {i}").model_dump(mode="json")
           for i, s in enumerate(moves * 20)]
    data["history"] = data["history"] + old
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert len(store.get_model_card(V2).history) == 41
    card = store.get_model_card(V2, with_history=False)
    store.move_model_card(card, "canary", "ann", "new")
    history = store.get_model_card(V2).history
    assert len(history) == 42
    assert [h.reason for h in history[:3]] == ["registered", "old 0", "old 1"]
    assert (history[-1].status, history[-1].reason) == ("canary", "new")
    assert len(yaml.safe_load(path.read_text())["history"]) == 1


def test_a_torn_history_line_is_skipped(copy_home: Home) -> None:
    store = RegistryStore(copy_home)
    store.move_model_card(store.get_model_card(V2, with_history=False), "canary", "a", "r")
    with store.model_history_path(V2).open("a") as f:
        f.write('{"status": "li')  # a crash mid-append
    assert [h.status for h in store.get_model_card(V2).history] == ["registered", "canary"]


def test_reconcile_brings_every_card_in_line_with_the_routes_in_force(copy_home: Home) -> None:
    # a change the cards recorded but the routes no longer hold (e.g. lost in a restart)
    set_status(copy_home, V2, "canary", "gw", "route support-triage v2: canary")
    routes = load_routes_file(copy_home.routes_file)  # live v1
    assert reconcile_route_status(copy_home, routes) == [(V2, "canary", "registered")]
    card = RegistryStore(copy_home).get_model_card(V2)
    assert card.history[-1].reason == "routes in force at start: referenced by no route"
    assert reconcile_route_status(copy_home, routes) == []  # in line: nothing written
    live_v2 = {ROUTE: RouteState(route=ROUTE, live=V2, rollback_target=V1)}
    assert reconcile_route_status(copy_home, live_v2) == [(V2, "registered", "live")]
    assert RegistryStore(copy_home).get_model_card(V1).status == "live"  # warm standby
    assert reconcile_route_status(copy_home, {}) == [
        (V1, "live", "registered"), (V2, "live", "registered")]
