"""Reproduce: re-run the training a run manifest records and compare the bytes.

The manifest's ``config`` is the trainer's whole input (with the base and dataset bytes,
which the trainer checks against the hashes in the config). The adapter is rebuilt in a
temporary directory and its hash compared with the manifest's checkpoint hash, bit for bit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_router.ground.errors import RegistryError
from lora_router.ground.hashing import tree_hash
from lora_router.ground.home import Home
from lora_router.registry.integrity import adapter_file_hashes
from lora_router.registry.store import RegistryStore

# (config, home, output_dir) -> None; writes the adapter files into output_dir
Trainer = Callable[[dict[str, Any], Home, Path], object]


@dataclass
class ReproduceResult:
    adapter_id: str
    run_manifest: str
    seed: int
    recorded_seed: int
    recorded_hash: str
    new_hash: str
    files: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.recorded_hash == self.new_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter_id,
            "run_manifest": self.run_manifest,
            "seed": self.seed,
            "recorded_seed": self.recorded_seed,
            "identical": self.identical,
            "recorded_hash": self.recorded_hash,
            "new_hash": self.new_hash,
            "files": self.files,
        }


def _default_trainer(config: dict[str, Any], home: Home, output_dir: Path) -> object:
    from lora_router.training.lora import train_from_config

    return train_from_config(config, home, output_dir)


def reproduce(
    home: Home,
    adapter_id: str,
    *,
    seed: int | None = None,
    trainer: Trainer | None = None,
) -> ReproduceResult:
    """Retrain ``adapter_id`` from its run manifest (``seed`` overrides the recorded seed)
    into a temporary directory; compare with the recorded checkpoint hash."""
    store = RegistryStore(home)
    card = store.get_model_card(adapter_id)
    manifest = store.get_run_manifest(card.run_manifest)
    if not manifest.config:
        raise RegistryError(f"run manifest {manifest.id} records no training config")
    config = dict(manifest.config)
    recorded_seed = int(config.get("seed", manifest.seed))
    config["seed"] = recorded_seed if seed is None else seed
    train = trainer if trainer is not None else _default_trainer
    recorded_files = card.adapter_files
    with tempfile.TemporaryDirectory(prefix="lora-router-reproduce-") as tmp:
        out = Path(tmp) / "adapter"
        train(config, home, out)
        new_files = adapter_file_hashes(out)
    files = {
        rel: {"recorded": recorded_files.get(rel), "new": new_files.get(rel)}
        for rel in sorted(set(recorded_files) | set(new_files))
    }
    return ReproduceResult(
        adapter_id=adapter_id,
        run_manifest=manifest.id,
        seed=int(config["seed"]),
        recorded_seed=recorded_seed,
        recorded_hash=manifest.checkpoint.hash,
        new_hash=tree_hash(new_files),
        files=files,
    )
