"""Adapters that do not fit the tiny base, each a copy of a real one with one thing wrong."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.engine.tiny import build_adapter

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / CONFIG).read_text())
    cfg.update(changes)
    (path / CONFIG).write_text(json.dumps(cfg))


def wrong_shape(alpha: Path, base_dir: Path, tmp: Path) -> Path:
    """One lora_A is 32 wide where the base's q_proj takes 64 inputs."""
    p = _copy(alpha, tmp / "wrong-shape")
    tensors = load_file(str(p / WEIGHTS))
    key = next(k for k in tensors if "layers.1.self_attn.q_proj.lora_A" in k)
    tensors[key] = torch.randn(tensors[key].shape[0], 32)
    save_file(tensors, str(p / WEIGHTS))
    return p


def missing_target(alpha: Path, base_dir: Path, tmp: Path) -> Path:
    """Declares a target module the base does not have."""
    p = _copy(alpha, tmp / "missing-target")
    _edit_config(p, target_modules=["q_proj", "v_proj", "w_proj"])
    return p


def rank_too_big(alpha: Path, base_dir: Path, tmp: Path) -> Path:
    """A real peft adapter of rank 16, above the engines' max_lora_rank 8."""
    p = tmp / "rank16"
    build_adapter(base_dir, p, seed=7, r=16, lora_alpha=16, target_modules=["q_proj"])
    return p


def dora(alpha: Path, base_dir: Path, tmp: Path) -> Path:
    """DoRA changes the maths; no engine here serves it."""
    p = _copy(alpha, tmp / "dora")
    _edit_config(p, use_dora=True)
    return p


BROKEN: list[Callable[[Path, Path, Path], Path]] = [wrong_shape, missing_target, rank_too_big, dora]
