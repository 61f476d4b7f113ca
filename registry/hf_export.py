"""Export a model card as a Hugging Face ``README.md`` so the lineage travels with the adapter.

The YAML front matter follows the Hub's model card metadata (``base_model``,
``base_model_relation: adapter``, ``library_name: peft``, ``datasets``, ``tags``,
``model-index`` with one result for the overall metrics and one per ``slice_*`` metric);
``lora_router`` adds what the Hub has no field for: the exact hashes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

from lora_router.ground.errors import RegistryError
from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard, ModelCard, RunManifest
from lora_router.registry.store import RegistryStore

_SLICE = "slice_"


def hf_metadata(card: ModelCard, dataset: DatasetCard | None) -> dict[str, Any]:
    """The README's YAML metadata block."""
    overall = {k: v for k, v in card.eval.items() if not k.startswith(_SLICE)}
    slices = {k: v for k, v in card.eval.items() if k.startswith(_SLICE)}
    ds_ref = {"name": card.trained_on, "type": card.trained_on}
    results: list[dict[str, Any]] = []
    if overall:
        results.append({
            "task": {"type": "text-generation", "name": card.intended_use},
            "dataset": {**ds_ref, "split": "test"},
            "metrics": [{"type": k, "name": k, "value": v} for k, v in overall.items()],
        })
    for key, value in slices.items():
        results.append({
            "task": {"type": "text-generation", "name": card.intended_use},
            "dataset": {**ds_ref, "split": "test", "config": key[len(_SLICE):]},
            "metrics": [{"type": key, "name": key, "value": value}],
        })
    meta: dict[str, Any] = {
        "base_model": card.base_model.name,
        "base_model_relation": "adapter",
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "datasets": [card.trained_on],
        "tags": ["lora", "peft", "lora-router", f"status-{card.status}"],
        "model-index": [{"name": card.id, "results": results}],
        "lora_router": {
            "adapter_id": card.id,
            "adapter_hash": card.adapter_hash,
            "base_model": card.base_model.model_dump(),
            "dataset_hash": dataset.hash if dataset else None,
            "run_manifest": card.run_manifest,
            "rollback_target": card.rollback_target,
            "status": card.status,
        },
    }
    return meta


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items) if items else "- (none recorded)"


def hf_readme(card: ModelCard, dataset: DatasetCard | None, run: RunManifest | None) -> str:
    """The whole README.md: front matter, then the card in prose."""
    meta = yaml.safe_dump(hf_metadata(card, dataset), sort_keys=False, allow_unicode=True)
    lines = [
        f"---\n{meta}---\n",
        f"# {card.id}\n",
        f"LoRA adapter ({card.method.type}, r={card.method.r}, alpha={card.method.alpha:g}, "
        f"objective {card.method.objective}) on base `{card.base_model.name}` "
        f"version {card.base_model.version} (`{card.base_model.hash}`).\n",
        f"## Intended use\n\n{card.intended_use}\n",
        f"## Out of scope\n\n{_bullets(card.out_of_scope)}\n",
        f"## Known limitations\n\n{_bullets(card.known_limitations)}\n",
        "## Evaluation\n\n| metric | value |\n|---|---|\n"
        + "".join(f"| {k} | {v:g} |\n" for k, v in card.eval.items()),
        "## Lineage\n",
        f"- trained on dataset card `{card.trained_on}`"
        + (f" (`{dataset.hash}`), sources: {', '.join(s.name for s in dataset.sources)}"
           if dataset else ""),
        f"- run manifest `{card.run_manifest}`"
        + (f": code {run.code_version}, seed {run.seed}, {run.hardware.device}"
           if run else ""),
        f"- adapter files hash `{card.adapter_hash}`",
        f"- rollback target: `{card.rollback_target or 'none'}`",
        f"- status: {card.status}\n",
    ]
    return "\n".join(lines)


def export_hf(home: Home, adapter_id: str, out_dir: Path | None = None) -> Path:
    """Write ``README.md`` into the adapter directory (or ``out_dir``); return its path."""
    store = RegistryStore(home)
    card = store.get_model_card(adapter_id)
    dataset = run = None
    with contextlib.suppress(RegistryError):
        dataset = store.get_dataset_card(card.trained_on)
    with contextlib.suppress(RegistryError):
        run = store.get_run_manifest(card.run_manifest)
    target = out_dir if out_dir is not None else home.adapter_dir(adapter_id)
    target.mkdir(parents=True, exist_ok=True)
    path = target / "README.md"
    path.write_text(hf_readme(card, dataset, run))
    return path
