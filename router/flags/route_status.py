"""Model-card lifecycle status kept in step with the routes; the card's rollback target.

The route service calls :func:`sync_route_status` after each committed change (its
``on_commit(before, after)`` hook) and :func:`card_rollback_target` for the default rollback
target. Neither raises for a missing or unreadable card: the route change is already
committed when they run, and the registry must never break flags.

The status rule, for each adapter the change touches (named by ``before`` or ``after``):

- it serves traffic (live, canary or shadow) on some route: its status becomes the highest
  such arm (``live`` > ``canary`` > ``shadow``), so ``registered -> shadow -> canary -> live``
  as it is rolled out, and back down when it leaves a higher arm but still holds a lower one;
- it serves nowhere but is a rollback target somewhere: its status is kept (a warm standby:
  the previous live stays ``live``, the last known-good one);
- nothing references it any more: ``registered`` (back in the pool: rolled back off live, a
  canary or shadow aborted); the history's reason names the route and the arm it left;
- a retired card is never changed (logged: a route cannot name a retired adapter).

"Some route" means ``all_states`` (every route now, e.g. ``RouteStore.all()``; ``after``
replaces its route's entry there). Without ``all_states`` only this route is known, so the
sync never *lowers* a status: an adapter taken off this route may still serve on another.
Pass ``all_states`` to have demotions recorded.

:func:`reconcile_route_status` applies the same rule to every card against the routes in
force (a gateway's start), so cards never disagree with the routes after a crash or a
change made while no gateway kept the cards.

Cost: a move reads and rewrites the card file alone and appends one line to the card's
history log (:meth:`RegistryStore.move_model_card`): it does not grow with the number of
earlier moves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.registry.card_cache import CardCache
from lora_router.registry.cards import LifecycleStatus, ModelCard
from lora_router.registry.store import RegistryStore, registry_lock
from lora_router.router.flags.state import RouteState

log = logging.getLogger(__name__)

Transition = tuple[str, str, str]  # (adapter id, from status, to status)

_RANK: dict[str, int] = {"registered": 0, "shadow": 1, "canary": 2, "live": 3}
_SERVING: tuple[LifecycleStatus, ...] = ("shadow", "canary", "live")  # lowest first


def _serving_arm(state: RouteState, adapter: str) -> LifecycleStatus | None:
    """The highest arm of ``state`` that sends ``adapter`` traffic, if any."""
    holders = {
        "shadow": state.shadow.adapter if state.shadow else None,
        "canary": state.canary.adapter if state.canary else None,
        "live": state.live,
    }
    best: LifecycleStatus | None = None
    for arm in _SERVING:
        if holders[arm] == adapter:
            best = arm
    return best


def _target(
    adapter: str, routes: Mapping[str, RouteState]
) -> tuple[LifecycleStatus | None, str | None]:
    """``(status, route)`` the rule gives ``adapter``; status None means: keep it."""
    best: LifecycleStatus | None = None
    where: str | None = None
    standby = False
    for name, state in sorted(routes.items()):
        arm = _serving_arm(state, adapter)
        if arm is not None and (best is None or _RANK[arm] > _RANK[best]):
            best, where = arm, name
        standby = standby or state.rollback_target == adapter
    if best is not None:
        return best, where
    return (None, None) if standby else ("registered", None)


def _left_arm(before: RouteState | None, adapter: str) -> str:
    if before is None:
        return "the route"
    arm = _serving_arm(before, adapter)
    if arm is not None:
        return arm
    return "rollback target" if before.rollback_target == adapter else "the route"


def _card(store: RegistryStore, adapter: str, route: str) -> ModelCard | None:
    """The card file of ``adapter`` (no history), unless it has none or is retired."""
    if not store.has_model_card(adapter):
        log.warning("route %s names %s, which has no model card: status not tracked",
                    route, adapter)
        return None
    card = store.get_model_card(adapter, with_history=False)
    if card.status == "retired":
        log.warning("route %s names retired adapter %s: its card stays retired", route, adapter)
        return None
    return card


def _sync_one(
    store: RegistryStore,
    adapter: str,
    routes: Mapping[str, RouteState],
    before: RouteState | None,
    after: RouteState,
    demote: bool,
) -> Transition | None:
    card = _card(store, adapter, after.route)
    if card is None:
        return None
    status, where = _target(adapter, routes)
    if status is None or status == card.status:
        return None
    if not demote and _RANK[status] < _RANK[card.status]:
        return None
    change = f"route {after.route} v{after.version}"
    if status == "registered":
        what = f"off {_left_arm(before, adapter)}, referenced by no route"
    else:
        what = f"{status} on route {where}"
    store.move_model_card(card, status, after.updated_by, f"{change}: {what} ({after.reason})")
    return adapter, card.status, status


def sync_route_status(
    home: Home,
    before: RouteState | None,
    after: RouteState,
    *,
    all_states: Mapping[str, RouteState] | None = None,
) -> list[Transition]:
    """Bring the model-card status of every adapter this change touches in line with the
    routes (the rule is in the module docstring); return the moves made, as
    ``(adapter, from, to)``, in adapter order. Each move is recorded in the card's history
    (by ``after.updated_by``, with the route, its version and ``after.reason``). Runs under
    the registry lock; never raises for a missing, unreadable or unwritable card (logged,
    skipped). ``before`` is None for a route that did not exist."""
    routes = dict(all_states) if all_states is not None else {}
    routes[after.route] = after
    touched = after.referenced_adapters() | (before.referenced_adapters() if before else set())
    done: list[Transition] = []
    store = RegistryStore(home)
    try:
        with registry_lock(home):
            for adapter in sorted(touched):
                try:
                    moved = _sync_one(store, adapter, routes, before, after,
                                      demote=all_states is not None)
                except (LoraRouterError, OSError) as exc:
                    log.warning("route %s: status of %s not synced: %s", after.route, adapter,
                                exc)
                    continue
                if moved is not None:
                    done.append(moved)
    except (OSError, LoraRouterError) as exc:  # cannot be locked: read-only home, timeout
        log.warning("route %s: model-card status not synced: %s", after.route, exc)
    for adapter, old, new in done:
        log.info("adapter %s: %s -> %s (route %s v%s)", adapter, old, new, after.route,
                 after.version)
    return done


def _reconcile_one(
    store: RegistryStore, adapter: str, routes: Mapping[str, RouteState], by: str
) -> Transition | None:
    card = store.get_model_card(adapter, with_history=False)
    if card.status == "retired":
        return None
    status, where = _target(adapter, routes)
    if status is None or status == card.status:
        return None
    what = f"{status} on route {where}" if where else "referenced by no route"
    store.move_model_card(card, status, by, f"routes in force at start: {what}")
    return adapter, card.status, status


def reconcile_route_status(
    home: Home, routes: Mapping[str, RouteState], *, by: str = "lora-router"
) -> list[Transition]:
    """Bring every model card's status in line with ``routes`` (all the routes in force),
    by the rule of the module docstring, demotions included; return the moves made. A card
    already in line is not written. Never raises for a card (logged, skipped)."""
    store = RegistryStore(home)
    done: list[Transition] = []
    try:
        with registry_lock(home):
            for adapter in store.list_model_ids():
                try:
                    moved = _reconcile_one(store, adapter, routes, by)
                except (LoraRouterError, OSError) as exc:
                    log.warning("status of %s not reconciled with the routes: %s", adapter, exc)
                    continue
                if moved is not None:
                    done.append(moved)
    except (OSError, LoraRouterError) as exc:  # cannot be locked: read-only home, timeout
        log.warning("model-card status not reconciled with the routes: %s", exc)
    for adapter, old, new in done:
        log.info("adapter %s: %s -> %s (routes in force at start)", adapter, old, new)
    return done


def card_rollback_target(
    home: Home, adapter_id: str, cards: CardCache | None = None
) -> str | None:
    """The rollback target recorded in ``adapter_id``'s model card, if a route may name it.

    None when the adapter has no card (or it cannot be read), the card names no target, or
    the target has no card or is retired (logged). Never raises for a card. Reads the card
    files alone (not their history), through ``cards`` when given.
    """
    cache = cards if cards is not None else CardCache(home)
    store = RegistryStore(home)
    try:
        if not store.has_model_card(adapter_id):
            return None
        target = cache.model_card(adapter_id).rollback_target
        if target is None:
            return None
        if not store.has_model_card(target):
            log.warning("model card %s: rollback target %s has no card; ignored",
                        adapter_id, target)
            return None
        if cache.model_card(target).status == "retired":
            log.warning("model card %s: rollback target %s is retired; ignored",
                        adapter_id, target)
            return None
    except (LoraRouterError, OSError) as exc:
        log.warning("model card %s: rollback target not read: %s", adapter_id, exc)
        return None
    return target
