"""YAML storage of the lineage records under ``<home>/registry``.

Plain reads and writes; checks of links and hashes live in :mod:`registry.lineage`.
Writes are atomic (temp file + rename) so a crash never leaves half a card.

A model card's status history is split so that a status move costs the same however many
came before: the card file holds the history it had when it was last written whole
(registration), and every later move is one line appended to
``registry/models/<id>.history.jsonl`` (:meth:`RegistryStore.move_model_card`). Reads join
the two (``get_model_card``); ``with_history=False`` reads the card file alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lora_router.ground.errors import AdapterNotFound, RegistryError, RegistryLocked
from lora_router.ground.home import Home
from lora_router.registry.cards import (
    DatasetCard,
    LifecycleStatus,
    ModelCard,
    RunManifest,
    StatusChange,
)

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger(__name__)


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


LOCK_TIMEOUT_S = 10.0  # how long registry_lock waits for another holder by default


@contextmanager
def registry_lock(home: Home, timeout: float | None = None) -> Iterator[None]:
    """Serialise read-modify-write of cards across processes (an flock on the registry).

    Waits at most ``timeout`` seconds (default :data:`LOCK_TIMEOUT_S`) for another holder,
    then raises ``RegistryLocked`` naming the lock file and the last holder's pid. Not
    re-entrant: a holder that takes it again waits on itself until the timeout.
    """
    home.registry_dir.mkdir(parents=True, exist_ok=True)
    path = home.registry_dir / ".lock"
    with path.open("a") as f:
        _flock_within(f.fileno(), path, LOCK_TIMEOUT_S if timeout is None else timeout)
        try:
            f.truncate(0)  # who holds it: named in another waiter's timeout error
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flock_within(fd: int, path: Path, timeout: float) -> None:
    """Take an exclusive flock on ``fd``, polling (1 ms growing to 50 ms) until ``timeout``."""
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RegistryLocked(
                    f"the registry is locked by another process (last holder: "
                    f"{_holder(path)}); gave up after {timeout:g} s waiting for {path}",
                    path=str(path), timeout_s=timeout) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "unknown"


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
        """Write ``card``; history entries beyond the stored ones go to the history log
        (a card whose history does not extend the stored one is written whole)."""
        path, log_path = self.home.model_card_path(card.id), self.model_history_path(card.id)
        if path.is_file():
            head = _read_yaml(path, ModelCard).history
            stored = [*head, *_read_history_log(log_path)]
            if card.history[: len(stored)] == stored:
                _append_history_log(log_path, card.history[len(stored):])
                _write_yaml(path, card.model_copy(update={"history": head}))
                return
        _write_yaml(path, card)
        log_path.unlink(missing_ok=True)

    def move_model_card(
        self, card: ModelCard, status: LifecycleStatus, by: str, reason: str
    ) -> ModelCard:
        """Move ``card`` (as read with ``with_history=False``) to ``status``: the move is
        appended to its history log and the card file rewritten with the new status, so the
        cost does not grow with the number of earlier moves. Returns the card file's card."""
        log_path = self.model_history_path(card.id)
        change = StatusChange(status=status, by=by, reason=reason)
        head = card.history
        if len(head) > 1:  # a card from before the log: move its moves there, once
            _write_history_log(log_path, [*head[1:], *_read_history_log(log_path), change])
            head = head[:1]
        else:
            _append_history_log(log_path, [change])
        moved = card.model_copy(update={"status": status, "history": head})
        _write_yaml(self.home.model_card_path(card.id), moved)
        return moved

    def get_model_card(self, adapter_id: str, *, with_history: bool = True) -> ModelCard:
        """The card with its whole history; ``with_history=False``: the card file alone
        (its history only what it held when last written whole), read in constant time."""
        path = self.home.model_card_path(adapter_id)
        if not path.is_file():
            raise AdapterNotFound(f"no model card for adapter {adapter_id!r}", adapter=adapter_id)
        card = _read_yaml(path, ModelCard)
        if not with_history:
            return card
        logged = _read_history_log(self.model_history_path(adapter_id))
        return card.model_copy(update={"history": [*card.history, *logged]}) if logged else card

    def model_history_path(self, adapter_id: str) -> Path:
        """The append-only log of the card's status moves (JSON lines)."""
        return self.home.model_card_path(adapter_id).with_suffix(".history.jsonl")

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


def _read_history_log(path: Path) -> list[StatusChange]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(StatusChange.model_validate_json(line))
        except ValidationError:  # a line torn by a crash mid-append: skip, say so
            log.warning("%s:%d: not a status change; skipped", path, n)
    return out


def _append_history_log(path: Path, changes: list[StatusChange]) -> None:
    if not changes:
        return
    data = "".join(c.model_dump_json() + "\n" for c in changes).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_history_log(path: Path, changes: list[StatusChange]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(c.model_dump_json() + "\n" for c in changes)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ids(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))
