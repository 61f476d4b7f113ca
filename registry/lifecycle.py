"""Registering datasets and adapters, and their lifecycle.

Hashes are computed here, links are checked before anything is written, and a version is
immutable: re-registering an id with other bytes, or a retired id, is refused. Status moves
``registered -> shadow -> canary -> live -> retired`` (stages may be skipped, and a demoted
adapter may move back among the non-retired ones); ``retired`` is terminal and is entered
only when nothing references the adapter. Keeping the status in step with the routes, and
the model card's rollback target for the route service, live in :mod:`router.flags.route_status`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from lora_router.ground.errors import (
    AdapterNotFound,
    AdapterReferenced,
    AdapterRetired,
    RegistryError,
)
from lora_router.ground.hashing import file_hashes, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.registry.cards import (
    BaseModelRef,
    Checkpoint,
    DatasetCard,
    DataSource,
    LifecycleStatus,
    Method,
    ModelCard,
    RunManifest,
    Splits,
    StatusChange,
    SubjectManifest,
)
from lora_router.registry.ingest import (
    import_dataset_dir,
    method_from_adapter_config,
    subject_manifest,
    subjects_in_files,
)
from lora_router.registry.integrity import adapter_file_hashes, checkpoint_hash
from lora_router.registry.questions import Routes, load_routes, route_refs
from lora_router.registry.store import RegistryStore, registry_lock

__all__ = [
    "assert_routable",
    "import_dataset_dir",
    "method_from_adapter_config",
    "references",
    "register_adapter",
    "register_adapter_from",
    "register_dataset",
    "registry_lock",
    "retire",
    "set_rollback_target",
    "set_status",
    "subject_manifest",
    "subjects_in_files",
]

log = logging.getLogger(__name__)


def register_dataset(
    home: Home,
    dataset_id: str,
    *,
    sources: list[DataSource],
    consent_basis: str,
    labeler_instructions_version: str,
    splits: Splits,
    measured: dict[str, Any] | None = None,
    excluded: list[str] | None = None,
    subjects: SubjectManifest | None = None,
    expected_hash: str | None = None,
) -> DatasetCard:
    """Hash the files under ``data/<id>/`` and write the dataset card.

    ``expected_hash`` (a hash written down elsewhere, e.g. in a card file) must equal the
    computed one. An id already registered with other bytes is refused: datasets are
    immutable, a changed dataset is a new id.
    """
    data_dir = home.dataset_dir(dataset_id)
    if not data_dir.is_dir():
        raise RegistryError(f"dataset {dataset_id!r}: no files under {data_dir}")
    files = file_hashes(data_dir)
    if not files:
        raise RegistryError(f"dataset {dataset_id!r}: {data_dir} is empty")
    if expected_hash and expected_hash != tree_hash(files):
        raise RegistryError(
            f"dataset {dataset_id!r}: the files hash to {tree_hash(files)}, not the expected "
            f"{expected_hash}", dataset_id=dataset_id, expected=expected_hash,
            found=tree_hash(files))
    store = RegistryStore(home)
    if home.dataset_card_path(dataset_id).is_file():
        existing = store.get_dataset_card(dataset_id)
        if existing.hash != tree_hash(files):
            raise RegistryError(
                f"dataset {dataset_id!r} is already registered with other bytes "
                f"({existing.hash}); datasets are immutable, register a new id",
                dataset_id=dataset_id, expected=existing.hash, found=tree_hash(files))
    card = DatasetCard(
        id=dataset_id,
        hash=tree_hash(files),
        files=files,
        sources=sources,
        consent_basis=consent_basis,
        labeler_instructions_version=labeler_instructions_version,
        measured=measured or {},
        splits=splits,
        excluded=excluded or [],
        subjects=subjects,
    )
    store.put_dataset_card(card)
    return card


def register_adapter(
    home: Home,
    adapter_id: str,
    *,
    dataset_id: str,
    run_manifest: RunManifest,
    method: Method,
    base_hash: str,
    intended_use: str,
    eval: dict[str, float] | None = None,
    out_of_scope: list[str] | None = None,
    known_limitations: list[str] | None = None,
    rollback_target: str | None = None,
    by: str = "registry",
) -> ModelCard:
    """Record an adapter directory with its dataset card and run manifest.

    Refuses (``RegistryError``) if the adapter was trained on another base than the pinned
    one, if its directory is missing, if the dataset card or rollback target do not
    resolve (or the target is retired, on another base, or makes a cycle), or if the id is
    already registered with other bytes (``AdapterRetired`` if that id is retired).
    Records the run manifest with its checkpoint location and hash computed from the disk
    (the tree hash of the adapter files, as the model card's ``adapter_hash``), then the
    model card (status ``registered``; a same-bytes re-registration keeps status/history).
    """
    store = RegistryStore(home)
    lock = read_lock(home)
    if base_hash != lock.sha256:
        raise RegistryError(
            f"{adapter_id}: trained on base {base_hash}, but the pinned base is {lock.sha256}",
            adapter=adapter_id, expected=lock.sha256, found=base_hash,
        )
    adapter_dir = home.adapter_dir(adapter_id)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RegistryError(f"{adapter_id}: no PEFT adapter under {adapter_dir}")
    store.get_dataset_card(dataset_id)  # must resolve
    if rollback_target is not None:
        _check_rollback_target(store, adapter_id, rollback_target, lock.sha256)
    files = adapter_file_hashes(adapter_dir)
    with registry_lock(home):
        previous = _previous_card(store, adapter_id, tree_hash(files))
        manifest = _with_checkpoint(home, adapter_id, run_manifest)
        store.put_run_manifest(manifest)
        card = ModelCard(
            id=adapter_id,
            base_model=BaseModelRef(name=lock.name, version=lock.version, hash=lock.sha256),
            method=method,
            trained_on=dataset_id,
            run_manifest=manifest.id,
            eval=eval or {},
            intended_use=intended_use,
            out_of_scope=out_of_scope or [],
            known_limitations=known_limitations or [],
            rollback_target=rollback_target,
            adapter_hash=tree_hash(files),
            adapter_files=files,
            status=previous.status if previous else "registered",
            history=previous.history if previous else [
                StatusChange(status="registered", by=by, reason="registered")],
        )
        store.put_model_card(card)
    return card


def _previous_card(store: RegistryStore, adapter_id: str, adapter_hash: str) -> ModelCard | None:
    """An existing card for the id: kept if the bytes are the same, else refused."""
    if not store.has_model_card(adapter_id):
        return None
    card = store.get_model_card(adapter_id)
    if card.status == "retired":
        raise AdapterRetired(f"{adapter_id} is retired; register a new version",
                             adapter=adapter_id)
    if card.adapter_hash != adapter_hash:
        raise RegistryError(
            f"{adapter_id} is already registered with other bytes ({card.adapter_hash}); "
            "versions are immutable, register a new version",
            adapter=adapter_id, expected=card.adapter_hash, found=adapter_hash,
        )
    return card


def _with_checkpoint(home: Home, adapter_id: str, manifest: RunManifest) -> RunManifest:
    """The manifest with its checkpoint location and hash computed from the disk."""
    adapter_dir = home.adapter_dir(adapter_id)
    digest = checkpoint_hash(adapter_dir)
    given = manifest.checkpoint.hash
    if given and given not in (digest, "sha256:"):
        log.warning("run manifest %s recorded checkpoint hash %s; the bytes on disk hash to "
                    "%s (recording the latter)", manifest.id, given, digest)
    location = adapter_dir.relative_to(home.root).as_posix()
    return manifest.model_copy(
        update={"checkpoint": Checkpoint(location=location, hash=digest)})


def _check_rollback_target(
    store: RegistryStore, adapter_id: str, target_id: str, pinned: str
) -> None:
    if target_id == adapter_id:
        raise RegistryError(f"{adapter_id}: an adapter cannot be its own rollback target")
    try:
        target = store.get_model_card(target_id)
    except AdapterNotFound as exc:
        raise RegistryError(f"rollback target {target_id} is not registered") from exc
    if target.base_model.hash != pinned:
        raise RegistryError(
            f"rollback target {target_id} is on base {target.base_model.hash}, "
            f"not the pinned {pinned}")
    if target.status == "retired":
        raise AdapterRetired(f"rollback target {target_id} is retired", adapter=target_id)
    seen = {adapter_id}
    cur: str | None = target_id
    while cur is not None and store.has_model_card(cur):
        if cur in seen:
            raise RegistryError(f"rollback target {target_id} would make a cycle through {cur}")
        seen.add(cur)
        cur = store.get_model_card(cur).rollback_target


def set_rollback_target(home: Home, adapter_id: str, target_id: str | None) -> ModelCard:
    """Point a model card's rollback target at another registered adapter (or none)."""
    store = RegistryStore(home)
    with registry_lock(home):
        card = store.get_model_card(adapter_id)
        if target_id is not None:
            _check_rollback_target(store, adapter_id, target_id, read_lock(home).sha256)
        card = card.model_copy(update={"rollback_target": target_id})
        store.put_model_card(card)
    return card


def assert_routable(home: Home, adapter_id: str) -> ModelCard:
    """Raise unless the adapter may be a route target: registered (``AdapterNotFound``)
    and not retired (``AdapterRetired``). Called by the route service and residency."""
    card = RegistryStore(home).get_model_card(adapter_id)
    if card.status == "retired":
        raise AdapterRetired(f"adapter {adapter_id} is retired and can never be routed to",
                             adapter=adapter_id)
    return card


def references(home: Home, adapter_id: str, routes: Routes | None = None) -> list[str]:
    """What keeps an adapter from retiring: route arms, and the rollback targets of
    model cards that are not retired."""
    refs = [f"route {r}" for r in route_refs(load_routes(home, routes)).get(adapter_id, [])]
    store = RegistryStore(home)
    for other_id in store.list_model_ids():
        other = store.get_model_card(other_id)
        if other.rollback_target == adapter_id and other.status != "retired":
            refs.append(f"model card {other_id}:rollback_target")
    return refs


_SERVING_STATUS = ("shadow", "canary", "live")


def _check_retirable(home: Home, card: ModelCard, routes: Routes | None) -> None:
    """``AdapterReferenced`` while anything keeps ``card`` from retiring: a route or model
    card naming it (:func:`references`), or a serving card status. The status is kept in
    step with every committed route change by the gateway (:func:`sync_route_status`), so
    it also covers a route store the caller cannot see (an embedded gateway's, in
    process); a rollback target keeps its status, so it is refused too."""
    refs = references(home, card.id, routes)
    if refs:
        raise AdapterReferenced(
            f"adapter {card.id} is still referenced by {', '.join(refs)}; "
            "move those away first", adapter=card.id, references=refs)
    if card.status in _SERVING_STATUS:
        last = card.history[-1].reason if card.history else ""
        raise AdapterReferenced(
            f"{card.id} is {card.status} on a route (card status"
            f"{'; last change: ' + last if last else ''}); move routes away first, e.g. "
            f"lora-router rollback ROUTE --reason ... or lora-router set-live ROUTE OTHER@VER "
            f"(a running gateway then records it); if no route serves it any more, say so "
            f"with lora-router registry set-status {card.id} registered --reason ...",
            adapter=card.id, references=[f"card status {card.status}"])


def set_status(
    home: Home,
    adapter_id: str,
    status: LifecycleStatus,
    by: str,
    reason: str,
    *,
    routes: Routes | None = None,
) -> ModelCard:
    """Move an adapter's lifecycle status and record it in the card's history.

    ``retired`` is terminal (``AdapterRetired`` for any move out of it) and is refused with
    ``AdapterReferenced`` while :func:`references` lists anything (``routes`` default: the
    home's routes file) or the card's status is shadow, canary or live (a route serves it,
    maybe in a store the caller cannot read). Setting the current status again is a no-op.
    """
    with registry_lock(home):
        store = RegistryStore(home)
        card = store.get_model_card(adapter_id)
        if card.status == status:
            return card
        if card.status == "retired":
            raise AdapterRetired(f"adapter {adapter_id} is retired; it cannot become {status}",
                                 adapter=adapter_id)
        if status == "retired":
            _check_retirable(home, card, routes)
        previous = card.status
        card = card.moved_to(status, by, reason)
        store.put_model_card(card)
    log.info("adapter %s: %s -> %s by %s (%s)", adapter_id, previous, status, by, reason)
    return card


def retire(
    home: Home, adapter_id: str, reason: str, by: str = "registry", *,
    routes: Routes | None = None,
) -> ModelCard:
    """Retire an adapter for good (see :func:`set_status`)."""
    return set_status(home, adapter_id, "retired", by, reason, routes=routes)


def register_adapter_from(home: Home, src: Path, adapter_id: str, **kwargs: Any) -> ModelCard:
    """:func:`register_adapter` for a directory anywhere: copied into
    ``adapters/<name>/<version>`` first (never over a different one), and the copy removed
    again if registration is refused."""
    dst = home.adapter_dir(adapter_id)
    src = src.resolve()
    if src == dst:
        return register_adapter(home, adapter_id, **kwargs)
    if not (src / "adapter_config.json").is_file():
        raise RegistryError(f"{src}: no adapter_config.json (not a PEFT adapter directory)")
    if dst.exists():
        if adapter_file_hashes(dst) != adapter_file_hashes(src):
            raise RegistryError(f"{dst} already holds a different adapter {adapter_id}")
        return register_adapter(home, adapter_id, **kwargs)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    try:
        return register_adapter(home, adapter_id, **kwargs)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
