"""Day-two questions over the registry: who serves what, what trained on what, base impact.

Routes come from a mapping given by the caller (the gateway passes ``RouteStore.all()``),
else from the home's ``routes.yaml``. Every function reads cards; none writes. The
deletion-request answer (``trained-on``) is :mod:`registry.trained_on`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lora_router.ground.errors import ConfigError, RecordNotFound, RegistryError
from lora_router.ground.home import Home
from lora_router.registry.base_pin import BaseLock, read_lock
from lora_router.registry.cards import BaseModelRef, ModelCard
from lora_router.registry.routes import RouteView, read_routes_file
from lora_router.registry.store import RegistryStore

RouteArm = Literal["live", "canary", "shadow", "rollback_target"]
Routes = Mapping[str, RouteView]


@dataclass(frozen=True)
class RouteRef:
    """One route's reference to an adapter, and in which arm (percent for canary/shadow)."""

    route: str
    arm: RouteArm
    percent: float | None = None

    def __str__(self) -> str:
        pct = f" {self.percent:g}%" if self.percent is not None else ""
        return f"{self.route}:{self.arm}{pct}"


def load_routes(home: Home, routes: Routes | None = None, path: Path | None = None) -> Routes:
    """``routes`` when given, else the routes file (``path`` or ``<home>/routes.yaml``)."""
    if routes is not None:
        return routes
    path = path if path is not None else home.routes_file
    return read_routes_file(path) if path.is_file() else {}


def route_refs(routes: Routes) -> dict[str, list[RouteRef]]:
    """``{adapter_id: [RouteRef, ...]}`` for every adapter any route references."""
    out: dict[str, list[RouteRef]] = {}
    for name, st in sorted(routes.items()):
        out.setdefault(st.live, []).append(RouteRef(name, "live", None))
        if st.canary is not None:
            out.setdefault(st.canary.adapter, []).append(
                RouteRef(name, "canary", st.canary.percent))
        if st.shadow is not None:
            out.setdefault(st.shadow.adapter, []).append(
                RouteRef(name, "shadow", st.shadow.percent))
        if st.rollback_target:
            out.setdefault(st.rollback_target, []).append(RouteRef(name, "rollback_target"))
    return out


def _model_cards(store: RegistryStore) -> list[ModelCard]:
    return [store.get_model_card(i) for i in store.list_model_ids()]


def base_impact(home: Home, base: str, routes: Routes | None = None) -> dict[str, Any]:
    """Every adapter tied to ``base`` (a name, ``name@version``, a hash or a hash prefix of
    at least 12 characters), with its dataset card and run: the migration plan. A base that
    is neither the pinned one nor any card's raises ``RecordNotFound`` naming the known
    ones (a typo must not read as "nothing is tied to it")."""
    store = RegistryStore(home)
    refs = route_refs(load_routes(home, routes))
    try:
        lock = read_lock(home)
    except ConfigError:
        lock = None
    pinned = lock.sha256 if lock is not None else None
    cards = _model_cards(store)
    _check_known_base(base, lock, cards)
    plan = [_impact_entry(store, m, pinned, refs)
            for m in cards if _base_matches(m.base_model, base)]
    return {
        "base": base,
        "pinned_base": pinned,
        "adapters": plan,
        "plan": "retrain each non-retired adapter on the new base from its dataset card with "
                "its run's config, register it, shadow then canary it, flip the routes, and "
                "retire the old versions once nothing references them",
    }


def _check_known_base(base: str, lock: BaseLock | None, cards: list[ModelCard]) -> None:
    known = {c.base_model.hash: c.base_model for c in cards}
    if lock is not None:
        known[lock.sha256] = BaseModelRef(name=lock.name, version=lock.version, hash=lock.sha256)
    if any(_base_matches(ref, base) for ref in known.values()):
        return
    names = "; ".join(f"{r.name}@{r.version} ({r.hash})" for r in known.values()) or "none"
    raise RecordNotFound(f"{base!r} is no known base (name, name@version, hash or a hash "
                         f"prefix of 12+ hex digits); known bases: {names}", base=base)


def _impact_entry(store: RegistryStore, m: ModelCard, pinned: str | None,
                  refs: Mapping[str, list[RouteRef]]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "adapter": m.id,
        "status": m.status,
        "base": m.base_model.model_dump(),
        "base_is_pinned": m.base_model.hash == pinned,
        "dataset": m.trained_on,
        "run_manifest": m.run_manifest,
        "serving": [str(r) for r in refs.get(m.id, [])],
    }
    try:
        ds = store.get_dataset_card(m.trained_on)
        entry["dataset_hash"] = ds.hash
        entry["sources"] = [s.name for s in ds.sources]
        entry["excluded"] = ds.excluded
    except RegistryError:
        entry["dataset_hash"] = None
    entry["action"] = (
        "none (retired)" if m.status == "retired"
        else f"retrain on {m.trained_on} with run {m.run_manifest}'s config"
    )
    return entry


def _base_matches(ref: BaseModelRef, base: str) -> bool:
    if base in (ref.name, f"{ref.name}@{ref.version}", ref.hash):
        return True
    prefix = base if base.startswith("sha256:") else f"sha256:{base}"
    return len(prefix) >= len("sha256:") + 12 and ref.hash.startswith(prefix)
