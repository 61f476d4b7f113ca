"""Lineage: model card -> run manifest -> dataset card -> sources, checked, not trusted.

``validate`` walks every record of a home and returns the precise list of what is wrong
(which file or card, expected vs found); ``lineage`` builds the tree for one adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lora_router.ground.errors import LoraRouterError, RegistryError
from lora_router.ground.home import Home
from lora_router.registry.base_pin import compute_base_hash, read_lock
from lora_router.registry.cards import DatasetCard, ModelCard, RunManifest
from lora_router.registry.integrity import (
    Problem,
    check_adapter_files,
    check_artifact,
    check_checkpoint,
    check_dataset_files,
    compare_files,
)
from lora_router.registry.questions import Routes, load_routes
from lora_router.registry.store import RegistryStore

T = TypeVar("T")


class _Records:
    """Every card of a home, parsed once; unreadable ones become problems."""

    def __init__(self, home: Home) -> None:
        self.store = RegistryStore(home)
        self.problems: list[Problem] = []
        self.datasets = self._load("dataset card", self.store.list_dataset_ids(),
                                   self.store.get_dataset_card)
        self.runs = self._load("run manifest", self.store.list_run_ids(),
                               self.store.get_run_manifest)
        self.models = self._load("model card", self.store.list_model_ids(),
                                 self.store.get_model_card)

    def _load(self, kind: str, ids: list[str], get: Callable[[str], T]) -> dict[str, T]:
        out: dict[str, T] = {}
        for card_id in ids:
            try:
                card = get(card_id)
            except LoraRouterError as exc:
                self.problems.append(Problem("card_unreadable", f"{kind} {card_id}", str(exc)))
                continue
            if getattr(card, "id", card_id) != card_id:
                self.problems.append(Problem("card_id_mismatch", f"{kind} {card_id}",
                                             "file name and id differ", None, card_id,
                                             str(getattr(card, "id", None))))
            out[card_id] = card
        return out


def validate(
    home: Home, *, check_base: bool = True, routes: Routes | None = None
) -> list[Problem]:
    """Every problem in the home's registry; empty means the home validates clean.

    Checks: the base's bytes against its lock (``check_base``); every dataset card's files
    and tree hash; every run manifest's checkpoint; every model card's adapter files, base
    hash (= pinned), links (dataset card, run manifest, rollback target) and rollback chain
    (exists, not retired, same base, no cycle) and drift baseline file (hash; missing: a
    warning); adapter directories without a card (warning); sources whose pii is unknown,
    reversible (salted) subject manifests and manifests without split membership
    (warnings); routes pointing at unregistered or retired adapters.
    """
    rec = _Records(home)
    problems = list(rec.problems)
    pinned = _check_base(home, problems, check_base)
    for ds in rec.datasets.values():
        problems += check_dataset_files(home, ds)
        problems += _dataset_warnings(ds)
    for run in rec.runs.values():
        problems += check_checkpoint(home, run)
    for card in rec.models.values():
        problems += _check_model(home, rec, card, pinned)
    problems += _check_rollback_cycles(rec.models)
    for adapter_id in home.list_adapter_ids():
        if adapter_id not in rec.models:
            problems.append(Problem(
                "adapter_unregistered", f"adapter {adapter_id}", "directory has no model card",
                home.adapter_dir(adapter_id).relative_to(home.root).as_posix(),
                severity="warning"))
    problems += _check_routes(home, rec, routes)
    return problems


def _dataset_warnings(ds: DatasetCard) -> list[Problem]:
    """What a dataset card leaves unsaid or weakly protected (warnings, not errors)."""
    label = f"dataset card {ds.id}"
    out = [Problem("pii_unknown", label, f"source {s.name}: pii is unknown (say none, "
                   "redacted or present)", severity="warning")
           for s in ds.sources if s.pii == "unknown"]
    if ds.subjects is not None and ds.subjects.scheme == "salted-sha256":
        out.append(Problem("subjects_reversible", label, "subject manifest uses salted-sha256 "
                           "with the salt in the card (low-entropy ids can be enumerated); "
                           "re-register the dataset for an hmac-sha256 manifest",
                           severity="warning"))
    if ds.subjects is not None and ds.subjects.splits is None:
        out.append(Problem("subjects_unsplit", label, "subject manifest records no split "
                           "membership, so trained-on --subject counts every split as in the "
                           "weights; re-register the dataset for a per-split manifest",
                           severity="warning"))
    return out


def _check_base(home: Home, problems: list[Problem], check_bytes: bool) -> str | None:
    try:
        lock = read_lock(home)
    except LoraRouterError as exc:
        problems.append(Problem("base_unpinned", "base lock", str(exc),
                                home.base_lock.name))
        return None
    if check_bytes and home.base_dir.is_dir():
        try:
            _, files = compute_base_hash(home.base_dir)
        except LoraRouterError:
            files = {}
        problems += compare_files(lock.files, files, home.base_dir, home, "base lock", "base")
    return lock.sha256


def _check_model(home: Home, rec: _Records, card: ModelCard, pinned: str | None) -> list[Problem]:
    label = f"model card {card.id}"
    out = check_adapter_files(home, card)
    if pinned is not None and card.base_model.hash != pinned:
        out.append(Problem("base_mismatch", label, "base_model.hash is not the pinned base",
                           None, pinned, card.base_model.hash))
    if card.trained_on not in rec.datasets:
        out.append(Problem("link_unresolved", label,
                           f"trained_on: dataset card {card.trained_on!r} does not exist",
                           _card_path(home.datasets_dir, card.trained_on)))
    run = rec.runs.get(card.run_manifest)
    if run is None:
        out.append(Problem("link_unresolved", label,
                           f"run_manifest: run manifest {card.run_manifest!r} does not exist",
                           _card_path(home.runs_dir, card.run_manifest)))
    else:
        expected = home.adapter_dir(card.id).relative_to(home.root).as_posix()
        if run.checkpoint.location != expected:
            out.append(Problem("checkpoint_elsewhere", label,
                               f"run manifest {run.id} checkpoint is not this adapter",
                               None, expected, run.checkpoint.location))
    out += _check_rollback_target(rec, card)
    if card.baseline is not None:
        out += check_artifact(home, label, "baseline", card.baseline)
    return out


def _card_path(directory: Path, card_id: str) -> str:
    return f"{directory.parent.name}/{directory.name}/{card_id}.yaml"


def _check_rollback_target(rec: _Records, card: ModelCard) -> list[Problem]:
    target_id = card.rollback_target
    if target_id is None or card.status == "retired":
        return []
    label = f"model card {card.id}"
    target = rec.models.get(target_id)
    if target is None:
        return [Problem("rollback_unresolved", label,
                        f"rollback_target {target_id} is not a registered adapter")]
    out = []
    if target.status == "retired":
        out.append(Problem("rollback_retired", label, f"rollback_target {target_id} is retired"))
    if target.base_model.hash != card.base_model.hash:
        out.append(Problem("rollback_other_base", label,
                           f"rollback_target {target_id} is on another base",
                           None, card.base_model.hash, target.base_model.hash))
    return out


def _check_rollback_cycles(models: dict[str, ModelCard]) -> list[Problem]:
    out: list[Problem] = []
    reported: set[frozenset[str]] = set()
    for start in sorted(models):
        path: list[str] = []
        cur: str | None = start
        while cur is not None and cur in models and cur not in path:
            path.append(cur)
            cur = models[cur].rollback_target
        if cur is not None and cur in path:
            cycle = path[path.index(cur):]
            if frozenset(cycle) not in reported:
                reported.add(frozenset(cycle))
                out.append(Problem("rollback_cycle", f"model card {cycle[0]}",
                                   "rollback targets form a cycle: "
                                   + " -> ".join([*cycle, cycle[0]])))
    return out


def _check_routes(home: Home, rec: _Records, routes: Routes | None) -> list[Problem]:
    try:
        states = load_routes(home, routes)
    except LoraRouterError as exc:
        return [Problem("routes_unreadable", "routes", str(exc), home.routes_file.name)]
    out = []
    for name, st in sorted(states.items()):
        for adapter_id in sorted(st.referenced_adapters()):
            card = rec.models.get(adapter_id)
            if card is None:
                out.append(Problem("route_unregistered", f"route {name}",
                                   f"references unregistered adapter {adapter_id}"))
            elif card.status == "retired":
                out.append(Problem("route_retired", f"route {name}",
                                   f"references retired adapter {adapter_id}"))
    return out


def lineage(home: Home, adapter_id: str) -> dict[str, Any]:
    """The lineage of one adapter as nested data: model card, its run manifest, its dataset
    card with sources, and its rollback chain. Missing links are ``None`` with an error."""
    store = RegistryStore(home)
    card = store.get_model_card(adapter_id)
    out: dict[str, Any] = {"model_card": card.model_dump(mode="json", exclude={"history"})}
    out["model_card"]["history"] = [h.model_dump(mode="json") for h in card.history]
    out["run_manifest"] = _try(lambda: store.get_run_manifest(card.run_manifest))
    out["dataset_card"] = _try(lambda: store.get_dataset_card(card.trained_on))
    chain: list[str] = []
    cur = card.rollback_target
    while cur is not None and cur not in chain and store.has_model_card(cur):
        chain.append(cur)
        cur = store.get_model_card(cur).rollback_target
    out["rollback_chain"] = chain
    return out


def _try(get: Callable[[], DatasetCard | RunManifest]) -> dict[str, Any] | None:
    try:
        return get().model_dump(mode="json")
    except RegistryError:
        return None
