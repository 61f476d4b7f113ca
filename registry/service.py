"""Day-two questions over the registry: who serves what, what trained on what, base impact.

Routes come from a mapping given by the caller (the gateway passes ``RouteStore.all()``),
else from the home's ``routes.yaml``. Every function reads cards; none writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.base_pin import read_lock
from registry.cards import DatasetCard, ModelCard
from registry.errors import ConfigError, RegistryError
from registry.home import Home
from registry.store import RegistryStore
from registry.subjects import match_subject
from router.flags.state import RouteState, load_routes_file

RouteArm = Literal["live", "canary", "shadow", "rollback_target"]
Routes = Mapping[str, RouteState]


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
    return load_routes_file(path) if path.is_file() else {}


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


@dataclass
class AdapterHit:
    adapter_id: str
    status: str
    dataset_id: str
    serving: list[RouteRef] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter_id,
            "status": self.status,
            "dataset": self.dataset_id,
            "serving": [{"route": r.route, "arm": r.arm, "percent": r.percent}
                        for r in self.serving],
        }


@dataclass
class TrainedOnAnswer:
    """The deletion-request answer: which datasets and adapters, where they serve, and
    what a retrain has to leave out."""

    query: dict[str, str]
    datasets: list[str]
    adapters: list[AdapterHit]
    retrain_exclude: list[str]
    # datasets that cannot answer a subject query: {dataset id: why} (no subject manifest,
    # no subject key, another key)
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.datasets)

    @property
    def answer(self) -> Literal["yes", "no", "unknown"]:
        if self.datasets:
            return "yes"
        return "unknown" if self.unknown else "no"

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answer": self.answer,
            "datasets": self.datasets,
            "unknown_datasets": sorted(self.unknown),
            "unknown_reasons": self.unknown,
            "adapters": [a.to_dict() for a in self.adapters],
            "retrain_exclude": self.retrain_exclude,
        }


def _subject_in(home: Home, card: DatasetCard, value: str,
                unknown: dict[str, str]) -> str | None:
    """The subject's digest if ``card`` lists it; records in ``unknown`` why it cannot say."""
    if card.subjects is None:
        unknown[card.id] = "no subject manifest"
        return None
    match = match_subject(home, card.subjects, value)
    if match.unknown is not None:
        unknown[card.id] = match.unknown
    return match.digest


def trained_on(
    home: Home,
    *,
    source: str | None = None,
    dataset: str | None = None,
    subject: str | None = None,
    routes: Routes | None = None,
) -> TrainedOnAnswer:
    """Every adapter whose training data includes the source, dataset or subject (exactly
    one of the three), where each serves now, and what a retrain must exclude."""
    given = {k: v for k, v in (("source", source), ("dataset", dataset), ("subject", subject))
             if v is not None}
    if len(given) != 1:
        raise RegistryError("ask about exactly one of source, dataset or subject")
    store = RegistryStore(home)
    datasets: list[str] = []
    exclude: list[str] = []
    unknown: dict[str, str] = {}
    for ds_id in store.list_dataset_ids():
        card = store.get_dataset_card(ds_id)
        if dataset is not None and card.id == dataset:
            datasets.append(card.id)
            exclude.append(f"dataset {card.id} ({card.hash})")
        elif source is not None and any(s.name == source for s in card.sources):
            datasets.append(card.id)
            exclude.append(f"source {source} (in dataset {card.id})")
        elif subject is not None and (digest := _subject_in(home, card, subject, unknown)):
            datasets.append(card.id)
            kind = card.subjects.kind if card.subjects else "subject"
            exclude.append(f"{kind} {digest} (records in dataset {card.id})")
    refs = route_refs(load_routes(home, routes))
    hits = [
        AdapterHit(m.id, m.status, m.trained_on, refs.get(m.id, []))
        for m in _model_cards(store)
        if m.trained_on in datasets
    ]
    # the reply never echoes a subject's value, only its keyed hash
    query = {"subject": "<given>"} if subject is not None else {k: str(v) for k, v in given.items()}
    return TrainedOnAnswer(query, datasets, hits, exclude, unknown)


def _model_cards(store: RegistryStore) -> list[ModelCard]:
    return [store.get_model_card(i) for i in store.list_model_ids()]


def base_impact(home: Home, base: str, routes: Routes | None = None) -> dict[str, Any]:
    """Every adapter tied to ``base`` (a name, ``name@version``, a hash or a hash prefix of
    at least 12 characters), with its dataset card and run: the migration plan."""
    store = RegistryStore(home)
    refs = route_refs(load_routes(home, routes))
    try:
        pinned = read_lock(home).sha256
    except ConfigError:
        pinned = None
    plan = []
    for m in _model_cards(store):
        if not _base_matches(m, base):
            continue
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
        plan.append(entry)
    return {
        "base": base,
        "pinned_base": pinned,
        "adapters": plan,
        "plan": "retrain each non-retired adapter on the new base from its dataset card with "
                "its run's config, register it, shadow then canary it, flip the routes, and "
                "retire the old versions once nothing references them",
    }


def _base_matches(card: ModelCard, base: str) -> bool:
    ref = card.base_model
    if base in (ref.name, f"{ref.name}@{ref.version}", ref.hash):
        return True
    prefix = base if base.startswith("sha256:") else f"sha256:{base}"
    return len(prefix) >= len("sha256:") + 12 and ref.hash.startswith(prefix)
