"""Bringing files into a home: dataset directories, LoRA configs, subject manifests.

Helpers for :mod:`registry.lifecycle` (which re-exports them) and the CLI; none writes a card
(``subject_manifest``, from :mod:`registry.subjects`, may create the home's subject key).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lora_router.ground.errors import RegistryError
from lora_router.ground.hashing import file_hashes
from lora_router.ground.home import Home
from lora_router.registry.cards import Method
from lora_router.registry.subjects import subject_manifest

__all__ = ["import_dataset_dir", "method_from_adapter_config", "subject_manifest",
           "subjects_by_split", "subjects_in_files"]


def method_from_adapter_config(adapter_dir: Path, objective: str = "sft") -> Method:
    """The LoRA method (r, alpha, target modules) as the adapter's own config declares it."""
    import json

    path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
        targets = cfg.get("target_modules") or []
        return Method(type="lora", r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                      objective=objective,
                      target_modules=sorted([targets] if isinstance(targets, str) else targets))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{path}: not a readable LoRA adapter config: {exc}") from exc


def import_dataset_dir(home: Home, src: Path, dataset_id: str) -> Path:
    """Copy dataset files into ``data/<id>/`` (no-op if already there); never overwrites."""
    dst = home.dataset_dir(dataset_id)
    src = src.resolve()
    if src == dst:
        return dst
    if not src.is_dir():
        raise RegistryError(f"{src}: not a directory of dataset files")
    if dst.exists():
        if file_hashes(dst) != file_hashes(src):
            raise RegistryError(f"{dst} already holds different files for {dataset_id}")
        return dst
    shutil.copytree(src, dst)
    return dst


def subjects_by_split(data_dir: Path, field: str) -> dict[str, list[str]]:
    """Values of ``field`` per split: the JSON Lines (``.jsonl``) and CSV files under
    ``data_dir``, each a split named by its path without the suffix (``train.jsonl`` ->
    ``train``), the name a run's config gives as its ``train_file``."""
    import csv

    out: dict[str, list[str]] = {}
    for path in sorted(data_dir.rglob("*")):
        values: set[str] = set()
        if path.suffix == ".jsonl":
            values.update(_jsonl_values(path, field))
        elif path.suffix == ".csv":
            with path.open(newline="") as f:
                values.update(str(r[field]) for r in csv.DictReader(f) if r.get(field))
        else:
            continue
        split = path.relative_to(data_dir).with_suffix("").as_posix()
        out[split] = sorted(values | set(out.get(split, [])))
    return out


def _jsonl_values(path: Path, field: str) -> set[str]:
    import json

    values: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise RegistryError(f"{path}:{n}: not a JSON record: {exc}") from exc
        if isinstance(row, dict) and (v := row.get(field)) is not None:
            values.add(str(v))
    return values


def subjects_in_files(data_dir: Path, field: str) -> list[str]:
    """Values of ``field`` in the JSON Lines (``.jsonl``) and CSV files under ``data_dir``."""
    return sorted(set[str]().union(*subjects_by_split(data_dir, field).values()))
