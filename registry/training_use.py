"""Which splits of its dataset reached an adapter's weights, read from its run manifest.

A split is named as a subject manifest names it: the data file's path without its suffix
(``train.jsonl`` -> ``train``). The run's ``config`` is the trainer's whole input, so it
says which file the gradient updates came from (``train_file`` / ``train_files``) and which
files, if any, were used to stop early or to pick the checkpoint kept (``val_file``,
``validation_file``, ``eval_file``, ``dev_file``, ``selection_file``). The project's trainer
(``training.lora``) reads ``train_file`` only: it has no early stopping and no checkpoint
selection. A run whose manifest cannot be read, or whose config names no training file,
is counted as having used every split (the conservative answer), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from lora_router.ground.errors import LoraRouterError
from lora_router.registry.cards import ModelCard, RunManifest
from lora_router.registry.store import RegistryStore

# weights: its records updated the weights; selection: used for early stopping or
# checkpoint selection only; unused: the run never read it; unknown: the records cannot
# tell (no split membership) or the run does not say (counted as in the weights)
SplitUse = Literal["weights", "selection", "unused", "unknown"]
REACHED: frozenset[SplitUse] = frozenset({"weights", "selection", "unknown"})

TRAIN_KEYS = ("train_file", "train_files")
SELECTION_KEYS = ("val_file", "validation_file", "eval_file", "dev_file", "selection_file")


def split_name(file: str) -> str:
    """The split a data file holds: its path without the suffix."""
    return PurePosixPath(file).with_suffix("").as_posix()


@dataclass(frozen=True)
class RunUse:
    """How one adapter's training run used its dataset's splits."""

    run_id: str
    weights: frozenset[str] | None  # splits whose records updated the weights; None: unsaid
    selection: frozenset[str]  # splits used for early stopping / checkpoint selection only
    validation: str  # how validation was used, in words, with where that was read

    def use_of(self, split: str | None) -> SplitUse:
        """How the run used ``split`` (None: a subject manifest without split membership)."""
        if split is None or self.weights is None:
            return "unknown"
        if split in self.weights:
            return "weights"
        return "selection" if split in self.selection else "unused"


def _files(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, list[str]]:
    """``{key: [file, ...]}`` for the keys of ``config`` that name data files."""
    out: dict[str, list[str]] = {}
    for key in keys:
        value = config.get(key)
        if isinstance(value, str) and value:
            out[key] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out[key] = list(value)
    return out


def _validation_words(run: RunManifest, train: list[str], chosen: dict[str, list[str]]) -> str:
    if chosen:
        used = ", ".join(f"{f} (config.{k})" for k, fs in chosen.items() for f in fs)
        return (f"{used} used for early stopping / checkpoint selection only, per run "
                f"{run.id}: no gradient updates from it, but it chose the weights kept")
    return (f"not used: run {run.id}'s config names only {', '.join(train)} for training and "
            "no validation file (no early stopping, no checkpoint selection)")


def run_use(run: RunManifest) -> RunUse:
    """What a run manifest's config says about the splits it used."""
    train = [f for fs in _files(run.config, TRAIN_KEYS).values() for f in fs]
    chosen = _files(run.config, SELECTION_KEYS)
    selection = frozenset(split_name(f) for fs in chosen.values() for f in fs)
    if not train:
        return RunUse(run.id, None, selection, (
            f"run {run.id}'s config names no training file ({' / '.join(TRAIN_KEYS)}): which "
            "splits reached the weights is unknown, so every split is counted as in them"))
    return RunUse(run.id, frozenset(split_name(f) for f in train), selection,
                  _validation_words(run, train, chosen))


def adapter_run_use(store: RegistryStore, card: ModelCard) -> RunUse:
    """:func:`run_use` of the adapter's run manifest; every split counted as used (and
    said) when the manifest is missing or unreadable."""
    try:
        run = store.get_run_manifest(card.run_manifest)
    except LoraRouterError as exc:
        return RunUse(card.run_manifest, None, frozenset(), (
            f"run manifest {card.run_manifest} cannot be read ({exc}): which splits reached "
            "the weights is unknown, so every split is counted as in them"))
    return run_use(run)
