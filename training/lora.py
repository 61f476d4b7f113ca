"""A deterministic LoRA SFT trainer (peft), bit-for-bit reproducible on CPU.

The config is plain data (it is stored whole in a run manifest); paths in it are relative
to a home, so ``reproduce`` can re-run a manifest's config against any home into any output
directory and compare hashes. Reproducibility comes from: fixed seeds (torch, python),
a fixed torch thread count and deterministic algorithms during training (both restored
afterwards), a seeded data order, and an ``adapter_config.json`` whose bytes do not depend
on where the home lives (``base_model_name_or_path`` is the pinned base's name).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from lora_router.ground.errors import BaseModelMismatch, RegistryError
from lora_router.ground.hashing import file_hashes, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.base_pin import compute_base_hash
from lora_router.training.loop import StepCallback, deterministic_torch, optimise

log = logging.getLogger(__name__)

LLAMA_LINEAR_MODULES: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)  # fmt: skip
ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors")
IGNORE_INDEX = -100


class TrainConfig(BaseModel):
    """Everything that determines the adapter's bytes (with the base and data files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer: str = "adapters.training/lora-sft-v1"
    adapter_id: str  # name@version; default output adapters/<name>/<version>
    base_dir: str = "base"  # relative to the home
    base_name: str  # written as base_model_name_or_path (never a path)
    base_hash: str  # the pinned base the adapter is trained on (checked before training)
    dataset_id: str
    dataset_hash: str  # tree hash of data/<dataset_id>/ (checked before training)
    train_file: str = "train.jsonl"
    prompt_template: str = "Ticket: {text}\nCategory:"
    completion_template: str = " {label}"
    seed: int = 1234
    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2.5e-3, gt=0)
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = 0.0
    max_length: int = Field(default=128, ge=8)
    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = LLAMA_LINEAR_MODULES
    torch_threads: int = Field(default=2, ge=1)


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    files: dict[str, str]  # relpath -> sha256 of the adapter files
    adapter_hash: str  # ground.hashing.tree_hash(files)
    final_loss: float
    seconds: float
    config: TrainConfig


def _check_inputs(config: TrainConfig, home: Home) -> tuple[Path, Path]:
    base_dir = home.root / config.base_dir
    digest, _ = compute_base_hash(base_dir)
    if digest != config.base_hash:
        raise BaseModelMismatch(
            f"{config.adapter_id}: config expects base {config.base_hash[:19]}…, "
            f"{base_dir} hashes to {digest[:19]}…"
        )
    data_dir = home.dataset_dir(config.dataset_id)
    if not data_dir.is_dir() or tree_hash(file_hashes(data_dir)) != config.dataset_hash:
        raise RegistryError(
            f"{config.adapter_id}: dataset {config.dataset_id!r} under {data_dir} does not "
            f"match the recorded hash {config.dataset_hash[:19]}…"
        )
    return base_dir, data_dir / config.train_file


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _encode(
    tokenizer: Any, rows: Sequence[dict[str, str]], cfg: TrainConfig
) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` per row; the loss covers the completion and EOS only."""
    prompts = [cfg.prompt_template.format(text=" ".join(r["text"].split())) for r in rows]
    completions = [cfg.completion_template.format(label=r["label"]) for r in rows]
    p_ids = tokenizer(prompts)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    eos = int(tokenizer.eos_token_id)
    out = []
    for p, c in zip(p_ids, c_ids, strict=True):
        target = [*c, eos]
        p = p[-(cfg.max_length - len(target)) :]
        out.append(([*p, *target], [IGNORE_INDEX] * len(p) + target))
    return out


def _batches(n: int, cfg: TrainConfig) -> Iterator[list[int]]:
    """Seeded epochs of shuffled indices, cut into ``batch_size`` batches (deterministic)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    pending: list[int] = []
    while True:
        while len(pending) < cfg.batch_size:
            pending.extend(torch.randperm(n, generator=gen).tolist())
        yield pending[: cfg.batch_size]
        pending = pending[cfg.batch_size :]


def _collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right padding: positions start at 0 on real tokens, as under left-padded generation."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 1.0

    return f


def _finalise(out_dir: Path, cfg: TrainConfig) -> dict[str, str]:
    """Make the adapter's bytes independent of the home's location; keep only PEFT files."""
    cfg_path = out_dir / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["base_model_name_or_path"] = cfg.base_name
    data["revision"] = None
    if isinstance(data.get("target_modules"), list):  # peft keeps a set: order varies by process
        data["target_modules"] = sorted(data["target_modules"])
    cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    for extra in out_dir.iterdir():
        if extra.name not in ADAPTER_FILES:
            extra.unlink()  # peft's README.md records the absolute base path
    for name in ADAPTER_FILES:
        os.chmod(out_dir / name, 0o644)  # safetensors writes 0600
    return file_hashes(out_dir, [out_dir / n for n in ADAPTER_FILES])


def train_lora(
    config: TrainConfig,
    home: Home,
    output_dir: Path | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train one LoRA adapter on ``data/<dataset_id>/<train_file>`` of ``home``.

    Checks that the base and dataset bytes match the hashes in ``config`` first
    (``BaseModelMismatch`` / ``RegistryError``). Writes ``adapter_config.json`` and
    ``adapter_model.safetensors`` to ``output_dir`` (default: the adapter's directory in
    the home) and returns their hashes. Same config + same bytes -> same hashes.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, train_path = _check_inputs(config, home)
    out_dir = output_dir if output_dir is not None else home.adapter_dir(config.adapter_id)
    started = time.perf_counter()
    with deterministic_torch(config.seed, config.torch_threads):
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        examples = _encode(tokenizer, _read_jsonl(train_path), config)
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        torch.manual_seed(config.seed)
        lora = LoraConfig(
            r=config.r,
            lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft accepts floats
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # transformers 5 deprecation raised inside peft
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            model = get_peft_model(base, lora)
        params = [p for p in model.parameters() if p.requires_grad]
        pad_id = int(tokenizer.pad_token_id)
        batches = (
            _collate([examples[i] for i in idx], pad_id)
            for idx in _batches(len(examples), config)
        )
        loss_value = optimise(
            model, params, batches, steps=config.steps, lr=config.lr,
            weight_decay=config.weight_decay, schedule=_schedule(config), on_step=on_step,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir))
    files = _finalise(out_dir, config)
    seconds = time.perf_counter() - started
    log.info(
        "trained %s: %d steps, loss %.4f, %.1fs",
        config.adapter_id,
        config.steps,
        loss_value,
        seconds,
    )
    return TrainResult(out_dir, files, tree_hash(files), loss_value, seconds, config)


def train_from_config(
    config: dict[str, Any], home: Home, output_dir: Path, on_step: StepCallback | None = None
) -> TrainResult:
    """Re-run training from a run manifest's ``config`` dict into ``output_dir``.

    Used by ``registry reproduce``: compare ``result.adapter_hash`` (or ``result.files``)
    with the manifest's checkpoint hash.
    """
    return train_lora(TrainConfig.model_validate(config), home, output_dir, on_step)
