"""Registering datasets and adapters: hashes computed here, links checked before writing."""

from __future__ import annotations

from typing import Any

from adapters.base_pin import read_lock
from registry.cards import (
    BaseModelRef,
    DatasetCard,
    DataSource,
    Method,
    ModelCard,
    RunManifest,
    Splits,
    StatusChange,
    SubjectManifest,
)
from registry.errors import RegistryError
from registry.hashing import file_hashes, tree_hash
from registry.home import Home
from registry.store import RegistryStore


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
) -> DatasetCard:
    """Hash the files under ``data/<id>/`` and write the dataset card."""
    data_dir = home.dataset_dir(dataset_id)
    if not data_dir.is_dir():
        raise RegistryError(f"dataset {dataset_id!r}: no files under {data_dir}")
    files = file_hashes(data_dir)
    if not files:
        raise RegistryError(f"dataset {dataset_id!r}: {data_dir} is empty")
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
    RegistryStore(home).put_dataset_card(card)
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
    one, if its directory is missing, or if the dataset card or rollback target do not
    resolve. Writes the run manifest, then the model card (status ``registered``).
    """
    store = RegistryStore(home)
    lock = read_lock(home)
    if base_hash != lock.sha256:
        raise RegistryError(
            f"{adapter_id}: trained on base {base_hash[:19]}…, but the pinned base is "
            f"{lock.sha256[:19]}…",
            adapter=adapter_id,
        )
    adapter_dir = home.adapter_dir(adapter_id)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise RegistryError(f"{adapter_id}: no PEFT adapter under {adapter_dir}")
    store.get_dataset_card(dataset_id)  # must resolve
    if rollback_target is not None:
        target = store.get_model_card(rollback_target)
        if target.base_model.hash != lock.sha256:
            raise RegistryError(f"rollback target {rollback_target} is on another base")
        if target.status == "retired":
            raise RegistryError(f"rollback target {rollback_target} is retired")
    files = file_hashes(adapter_dir)
    store.put_run_manifest(run_manifest)
    card = ModelCard(
        id=adapter_id,
        base_model=BaseModelRef(name=lock.name, version=lock.version, hash=lock.sha256),
        method=method,
        trained_on=dataset_id,
        run_manifest=run_manifest.id,
        eval=eval or {},
        intended_use=intended_use,
        out_of_scope=out_of_scope or [],
        known_limitations=known_limitations or [],
        rollback_target=rollback_target,
        adapter_hash=tree_hash(files),
        adapter_files=files,
        status="registered",
        history=[StatusChange(status="registered", by=by, reason="registered")],
    )
    store.put_model_card(card)
    return card
