"""YAML storage of the lineage records under ``<home>/registry``.

Plain reads and writes; checks of links and hashes live in :mod:`registry.lineage`.
Writes are atomic (temp file + rename) so a crash never leaves half a card.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from registry.cards import DatasetCard, ModelCard, RunManifest
from registry.errors import AdapterNotFound, RegistryError
from registry.home import Home

T = TypeVar("T", bound=BaseModel)


def _write_yaml(path: Path, card: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = card.model_dump(mode="json", exclude_none=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_yaml(path: Path, model: type[T]) -> T:
    try:
        data = yaml.safe_load(path.read_text())
        return model.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise RegistryError(f"{path}: not a valid {model.__name__}: {exc}", path=str(path)) from exc


@contextmanager
def registry_lock(home: Home) -> Iterator[None]:
    """Serialise read-modify-write of cards across processes (an flock on the registry).

    Not re-entrant: a holder must not take it again (a second flock in the same process
    waits on the first).
    """
    home.registry_dir.mkdir(parents=True, exist_ok=True)
    with (home.registry_dir / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RegistryStore:
    """Cards of one home, by id."""

    def __init__(self, home: Home) -> None:
        self.home = home

    # dataset cards
    def put_dataset_card(self, card: DatasetCard) -> None:
        _write_yaml(self.home.dataset_card_path(card.id), card)

    def get_dataset_card(self, dataset_id: str) -> DatasetCard:
        path = self.home.dataset_card_path(dataset_id)
        if not path.is_file():
            raise RegistryError(f"no dataset card {dataset_id!r}", dataset_id=dataset_id)
        return _read_yaml(path, DatasetCard)

    def list_dataset_ids(self) -> list[str]:
        return _ids(self.home.datasets_dir)

    # model cards
    def put_model_card(self, card: ModelCard) -> None:
        _write_yaml(self.home.model_card_path(card.id), card)

    def get_model_card(self, adapter_id: str) -> ModelCard:
        path = self.home.model_card_path(adapter_id)
        if not path.is_file():
            raise AdapterNotFound(f"no model card for adapter {adapter_id!r}", adapter=adapter_id)
        return _read_yaml(path, ModelCard)

    def has_model_card(self, adapter_id: str) -> bool:
        return self.home.model_card_path(adapter_id).is_file()

    def list_model_ids(self) -> list[str]:
        return _ids(self.home.models_dir)

    # run manifests
    def put_run_manifest(self, manifest: RunManifest) -> None:
        _write_yaml(self.home.run_manifest_path(manifest.id), manifest)

    def get_run_manifest(self, run_id: str) -> RunManifest:
        path = self.home.run_manifest_path(run_id)
        if not path.is_file():
            raise RegistryError(f"no run manifest {run_id!r}", run_id=run_id)
        return _read_yaml(path, RunManifest)

    def list_run_ids(self) -> list[str]:
        return _ids(self.home.runs_dir)


def _ids(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))
