"""What the runbook commands gather before they assess or report: lineage, route, log rows.

- :class:`Lineage`: what the registry says about an adapter (baseline and gate bars,
  rollback target, the dataset card it trained on), best effort: an unknown adapter or an
  unreadable card gives ``None``, never an error in the middle of an incident.
- :class:`RouteView`: the route's current state and audit trail from the route store
  (``None``/empty with a note when the store cannot be read).
- :func:`assess_model`: the log rows of one adapter version and its comparison over one
  window, through :func:`router.drift.assess.assess`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard
from lora_router.registry.store import RegistryStore
from lora_router.router.drift.assess import Assessment, assess, pick_comparison
from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.baseline_source import BaselineSource
from lora_router.router.drift.baselines import load_baseline
from lora_router.router.drift.queries import (
    DriftRecordNotFound,
    entries,
    model_routes,
    route_models,
)
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry, RouteStore


@dataclass(frozen=True)
class Lineage:
    """Registry look-ups by adapter id (each returns ``None`` when it does not know)."""

    baselines: Callable[[str], Baseline | None]
    rollback_of: Callable[[str], str | None]
    dataset_of: Callable[[str], DatasetCard | None]

    @classmethod
    def of_home(cls, home: Home) -> Lineage:
        registry = RegistryStore(home)

        def rollback_of(adapter_id: str) -> str | None:
            try:
                return registry.get_model_card(adapter_id, with_history=False).rollback_target
            except (LoraRouterError, OSError, ValueError):
                return None

        def dataset_of(adapter_id: str) -> DatasetCard | None:
            try:
                card = registry.get_model_card(adapter_id, with_history=False)
                return registry.get_dataset_card(card.trained_on)
            except (LoraRouterError, OSError, ValueError):
                return None

        return cls(BaselineSource(home, stored=load_baseline), rollback_of, dataset_of)

    @classmethod
    def empty(cls) -> Lineage:
        return cls(lambda _: None, lambda _: None, lambda _: None)


@dataclass(frozen=True)
class RouteView:
    """A route as the route store has it now (``state`` None: unknown or unreadable)."""

    route: str | None
    state: RouteState | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    note: str | None = None  # why the state or audit is missing

    @property
    def protect(self) -> tuple[str, ...]:
        guard = self.state.guard if self.state is not None else None
        return guard.protect if guard is not None else ()


async def route_view(routes: RouteStore | None, route: str | None,
                     limit: int = 1000) -> RouteView:
    """The route's state and audit from a started store (``None``: no store to read)."""
    if route is None:
        return RouteView(None, note="no route")
    if routes is None:
        return RouteView(route, note="no route store to read (set REDIS_URL, or run where"
                                     " the embedded route store's file is)")
    state = routes.get(route)
    try:
        audit = await routes.audit(route, limit)
    except LoraRouterError as exc:
        return RouteView(route, state, note=f"route audit unavailable: {exc}")
    note = None if state is not None else f"route {route!r} is not in the route store"
    return RouteView(route, state, audit, note)


async def main_route(store: DriftStore, model_id: str, *, since: datetime,
                     until: datetime) -> str | None:
    """The route that served ``model_id`` most in the window (``DriftRecordNotFound``: it
    served nothing)."""
    per_route = await model_routes(store, model_id, since=since, until=until)
    if not per_route:
        raise DriftRecordNotFound(
            f"no inference-log rows of {model_id!r} between {since:%Y-%m-%d %H:%M:%S} and"
            f" {until:%Y-%m-%d %H:%M:%S} UTC (try a longer --since)", model_id=model_id)
    return max(per_route.items(), key=lambda kv: (kv[1], kv[0] or ""))[0]


async def assess_model(
    store: DriftStore, model_id: str, *, since: datetime, until: datetime,
    view: RouteView, lineage: Lineage, against: str | None = None,
) -> Assessment:
    """Assess ``model_id`` on ``view.route`` (see :mod:`router.drift.assess`)."""
    route = view.route
    window = {"since": since, "until": until}
    labelled: dict[str, int] = {}
    if route is not None:
        labelled = {m: lab for m, (_, lab) in
                    (await route_models(store, route, **window)).items()}
    state = view.state
    comparison, why = pick_comparison(model_id, labelled=labelled, candidates=[
        (against, "given with --against"),
        (state.rollback_target if state else None, "the route's rollback target"),
        (lineage.rollback_of(model_id), "the rollback target in its model card"),
        (state.live if state else None, "the route's live adapter"),
    ])
    if against is not None and comparison != against:
        comparison, why = against, "given with --against (no labelled traffic in this window)"
    mine = await entries(store, model_ids=[model_id], route=route, **window)
    if not mine:
        raise DriftRecordNotFound(f"no inference-log rows of {model_id!r} on route {route!r}"
                                  " in this window", model_id=model_id)
    ref = [] if comparison is None else await entries(store, model_ids=[comparison],
                                                      route=route, **window)
    gates_of, gates = held_to(model_id, view, lineage)
    return assess(mine, ref, model_id=model_id, route=route, comparison=comparison,
                  comparison_why=why, since=since, until=until, gates=gates,
                  protect=view.protect, gates_of=gates_of)


def held_to(model_id: str, view: RouteView, lineage: Lineage) -> tuple[str | None,
                                                                     dict[str, float]]:
    """The gate bars ``model_id`` is held to, and whose: the route's live adapter's when it
    is not live (as the monitor holds a canary or shadow), else its own."""
    for adapter in (view.state.live if view.state is not None else None, model_id):
        base = lineage.baselines(adapter) if adapter is not None else None
        if base is not None and base.gates:
            return adapter, dict(base.gates)
    return None, {}
