"""Integrity: the bytes on disk against the hashes the registry recorded.

``verify_adapter`` is the load-time gate the gateway and residency call before an adapter
reaches the engine: cheap (it hashes the adapter's config and weights, a few MB at most),
and strict (a changed, missing or unrecorded weight file, or a card on another base, is
refused). The ``check_*`` functions return :class:`Problem` lists for ``registry validate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lora_router.ground.errors import AdapterIntegrityError, AdapterNotFound, AdapterRetired
from lora_router.ground.hashing import file_hashes, sha256_file, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.base_pin import read_lock
from lora_router.registry.cards import ArtifactRef, DatasetCard, ModelCard, RunManifest
from lora_router.registry.store import RegistryStore

# Files that change what an adapter computes. peft also writes a README.md (and
# `registry export-hf` rewrites it): notes are not part of the adapter's identity.
ADAPTER_SUFFIXES = (".safetensors", ".bin", ".json", ".pt", ".pth", ".model")
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding of ``validate``: which record, which file, expected vs found."""

    kind: str  # e.g. adapter_file_changed, dataset_file_missing, link_unresolved, cycle
    card: str  # e.g. "model card support-triage@v1", "dataset card tickets-v1"
    message: str
    path: str | None = None
    expected: str | None = None
    found: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        parts = [f"{self.card}: {self.message}"]
        if self.path:
            parts.append(f"file {self.path}")
        if self.expected is not None or self.found is not None:
            parts.append(f"expected {self.expected}, found {self.found}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def adapter_file_hashes(adapter_dir: Path) -> dict[str, str]:
    """``{relpath: sha256}`` of the files that define an adapter (config, weights)."""
    files = [
        p for p in adapter_dir.rglob("*")
        if p.is_file() and p.suffix in ADAPTER_SUFFIXES and not p.name.startswith(".")
    ]
    return file_hashes(adapter_dir, files)


def weights_file(adapter_dir: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (adapter_dir / name).is_file():
            return adapter_dir / name
    return None


def checkpoint_hash(adapter_dir: Path) -> str:
    """The run manifest's checkpoint hash: the tree hash of the adapter files (config and
    weights), the same digest as the model card's ``adapter_hash``."""
    if weights_file(adapter_dir) is None:
        raise AdapterNotFound(f"no adapter weights under {adapter_dir}", path=str(adapter_dir))
    return tree_hash(adapter_file_hashes(adapter_dir))


def _rel(home: Home, path: Path) -> str:
    try:
        return path.relative_to(home.root).as_posix()
    except ValueError:
        return str(path)


def compare_files(
    recorded: dict[str, str], found: dict[str, str], root: Path, home: Home, card: str, what: str
) -> list[Problem]:
    """Missing, changed and unrecorded files between a card's map and the disk."""
    out: list[Problem] = []
    for rel in sorted(set(recorded) | set(found)):
        path = _rel(home, root / rel)
        exp, got = recorded.get(rel), found.get(rel)
        if got is None:
            out.append(Problem(f"{what}_file_missing", card, f"recorded {what} file is missing",
                               path, exp, "no file"))
        elif exp is None:
            out.append(Problem(f"{what}_file_unrecorded", card,
                               f"{what} file on disk is not in the card", path, "no file", got))
        elif exp != got:
            out.append(Problem(f"{what}_file_changed", card,
                               f"{what} file bytes differ from the card", path, exp, got))
    return out


def check_adapter_files(home: Home, card: ModelCard) -> list[Problem]:
    """The adapter directory's bytes against the model card (files and tree hash)."""
    label = f"model card {card.id}"
    adapter_dir = home.adapter_dir(card.id)
    if not adapter_dir.is_dir():
        return [Problem("adapter_dir_missing", label, "adapter directory is missing",
                        _rel(home, adapter_dir))]
    out = compare_files(card.adapter_files, adapter_file_hashes(adapter_dir), adapter_dir,
                        home, label, "adapter")
    if tree_hash(card.adapter_files) != card.adapter_hash:
        out.append(Problem("adapter_hash_inconsistent", label,
                           "adapter_hash is not the tree hash of adapter_files",
                           None, card.adapter_hash, tree_hash(card.adapter_files)))
    return out


def check_dataset_files(home: Home, card: DatasetCard) -> list[Problem]:
    """The files under ``data/<id>/`` against the dataset card (files and tree hash)."""
    label = f"dataset card {card.id}"
    data_dir = home.dataset_dir(card.id)
    if not data_dir.is_dir():
        return [Problem("dataset_dir_missing", label, "dataset directory is missing",
                        _rel(home, data_dir))]
    found = file_hashes(data_dir)
    out = compare_files(card.files, found, data_dir, home, label, "dataset")
    if tree_hash(card.files) != card.hash:
        out.append(Problem("dataset_hash_inconsistent", label,
                           "hash is not the tree hash of the card's files",
                           None, card.hash, tree_hash(card.files)))
    return out


def check_artifact(home: Home, card: str, what: str, ref: ArtifactRef) -> list[Problem]:
    """A file a card references by hash (e.g. its drift baseline): changed bytes are an
    error; a missing file a warning (it is derived data: recompute it)."""
    path = (home.root / ref.path).resolve()
    if not path.is_relative_to(home.root) or not path.is_file():
        return [Problem(f"{what}_missing", card, f"{what} file is missing (recompute it)",
                        ref.path, ref.sha256, "no file", severity="warning")]
    found = sha256_file(path)
    if found != ref.sha256:
        return [Problem(f"{what}_changed", card, f"{what} file bytes differ from the card",
                        ref.path, ref.sha256, found)]
    return []


def check_checkpoint(home: Home, manifest: RunManifest) -> list[Problem]:
    """The run manifest's checkpoint location exists and its weights hash matches."""
    label = f"run manifest {manifest.id}"
    loc = (home.root / manifest.checkpoint.location).resolve()
    if not loc.is_relative_to(home.root) or not loc.is_dir():
        return [Problem("checkpoint_missing", label, "checkpoint location does not resolve",
                        manifest.checkpoint.location)]
    if weights_file(loc) is None:
        return [Problem("checkpoint_missing", label, "no weights file at checkpoint location",
                        manifest.checkpoint.location)]
    found = checkpoint_hash(loc)
    if found != manifest.checkpoint.hash:
        return [Problem("checkpoint_changed", label, "checkpoint bytes differ from the manifest",
                        manifest.checkpoint.location, manifest.checkpoint.hash, found)]
    return []


def verify_adapter(home: Home, adapter_id: str) -> ModelCard:
    """Gate an adapter load: its card exists, is not retired, is on the pinned base, and
    its files hash to what the card records. Returns the card.

    Raises ``AdapterNotFound`` (no card or no directory), ``AdapterRetired``, or
    ``AdapterIntegrityError`` naming the file and the expected and actual hashes.
    """
    card = RegistryStore(home).get_model_card(adapter_id)
    if card.status == "retired":
        raise AdapterRetired(f"adapter {adapter_id} is retired", adapter=adapter_id)
    adapter_dir = home.adapter_dir(adapter_id)
    if not adapter_dir.is_dir():
        raise AdapterNotFound(f"adapter {adapter_id}: no directory {adapter_dir}",
                              adapter=adapter_id)
    pinned = read_lock(home).sha256
    if card.base_model.hash != pinned:
        raise AdapterIntegrityError(
            f"adapter {adapter_id} was trained on base {card.base_model.hash}, "
            f"but the pinned base is {pinned}",
            adapter=adapter_id, expected=pinned, found=card.base_model.hash,
        )
    problems = check_adapter_files(home, card)
    if problems:
        first = problems[0]
        raise AdapterIntegrityError(
            f"adapter {adapter_id} refused: {first.message}: {first.path} "
            f"(expected {first.expected}, found {first.found})",
            adapter=adapter_id, file=first.path, expected=first.expected, found=first.found,
            problems=[p.to_dict() for p in problems],
        )
    return card
