"""Read a PEFT LoRA adapter directory and validate it against the loaded base.

Everything here runs before the engine is touched: a refused adapter leaves nothing behind.
The adapter's ``base_model_name_or_path`` is only a hint (it records whatever path the
trainer used); the base's identity is the pinned hash, and fit is checked from the tensors'
shapes against the base's Linear modules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lora_router.ground.errors import AdapterIncompatible, AdapterNotFound

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# ``base_model.model.<module>.lora_A.weight`` (peft's saved form; an adapter name may remain).
_KEY_RE = re.compile(
    r"^(?:base_model\.model\.)?(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$"
)

# Options whose presence changes the maths; a non-default value is refused.
_REFUSED_TRUE = ("use_dora", "fan_in_fan_out", "lora_bias", "use_qalora")
_REFUSED_SET = (
    "modules_to_save",
    "target_parameters",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "layer_replication",
    "megatron_config",
    "velora_config",
    "monteclora_config",
)

LinearShapes = Mapping[str, tuple[int, int]]  # module name -> (in_features, out_features)
# reads the weights file; raises SafetensorError, OSError or ValueError when it cannot
TensorLoader = Callable[[Path], Mapping[str, torch.Tensor]]


@dataclass(frozen=True, slots=True)
class LoraModule:
    """One target Linear's low-rank update: ``y += x @ a @ b`` (scaling folded into ``b``)."""

    name: str
    a: torch.Tensor  # [in, r]
    b: torch.Tensor  # [r, out], already multiplied by alpha / r (or alpha / sqrt(r))
    rank: int
    scaling: float


@dataclass(frozen=True, slots=True)
class AdapterWeights:
    path: Path
    rank: int  # largest rank over modules
    alpha: float
    target_modules: tuple[str, ...]  # short module names, e.g. ("q_proj", "v_proj")
    modules: dict[str, LoraModule]
    size_bytes: int


@dataclass(frozen=True, slots=True)
class RawModule:
    """One target Linear's tensors as stored: ``a [r, in]``, ``b [out, r]``
    (the update is ``y += x a^T b^T * scaling``)."""

    name: str
    a: torch.Tensor
    b: torch.Tensor
    rank: int
    scaling: float


@dataclass(frozen=True, slots=True)
class CheckedAdapter:
    """A validated adapter, tensors untouched (converting them is the loader's business)."""

    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    modules: dict[str, RawModule]
    size_bytes: int


def linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{module name: (in_features, out_features)}`` for every ``nn.Linear`` of the base."""
    return {
        name: (mod.in_features, mod.out_features)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
    }


def _incompatible(path: Path, why: str) -> AdapterIncompatible:
    return AdapterIncompatible(
        f"adapter at {path} does not fit the pinned base: {why}", path=str(path)
    )


def _read_config(path: Path) -> dict[str, Any]:
    cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_path.is_file():
        raise AdapterNotFound(f"no {CONFIG_FILE} in {path}", path=str(path))
    if not weights_path.is_file():
        raise AdapterNotFound(
            f"no {WEIGHTS_FILE} in {path} (only safetensors adapters are loaded)", path=str(path)
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise _incompatible(path, f"unreadable {CONFIG_FILE}: {exc}") from exc
    if not isinstance(cfg, dict):
        raise _incompatible(path, f"{CONFIG_FILE} is not a JSON object")
    return cfg


def _check_options(path: Path, cfg: Mapping[str, Any], max_rank: int) -> None:
    if cfg.get("peft_type") != "LORA":
        raise _incompatible(path, f"peft_type is {cfg.get('peft_type')!r}, only LORA is served")
    for opt in _REFUSED_TRUE:
        if cfg.get(opt):
            raise _incompatible(path, f"option {opt}={cfg[opt]!r} is not supported")
    for opt in _REFUSED_SET:
        if cfg.get(opt):
            raise _incompatible(path, f"option {opt}={cfg[opt]!r} is not supported")
    if cfg.get("bias", "none") != "none":
        raise _incompatible(path, f"bias={cfg['bias']!r} is not supported (only 'none')")
    ranks = [cfg.get("r", 8), *(cfg.get("rank_pattern") or {}).values()]
    if any(not isinstance(r, int) or r < 1 for r in ranks):
        raise _incompatible(path, f"invalid rank in r / rank_pattern: {ranks}")
    if max(ranks) > max_rank:
        raise _incompatible(
            path, f"rank {max(ranks)} exceeds the engine's max_lora_rank {max_rank}"
        )


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's ``get_pattern_key``: the first pattern matching the module name's tail."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _targets_in_base(path: Path, cfg: Mapping[str, Any], shapes: LinearShapes) -> None:
    targets = cfg.get("target_modules")
    if targets is None or targets == "all-linear":
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in shapes):
            raise _incompatible(path, f"target_modules regex {targets!r} matches no Linear module")
        return
    for t in targets:
        if not any(name == t or name.endswith("." + t) for name in shapes):
            raise _incompatible(path, f"target module {t!r} does not exist in the base")


def _group_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY_RE.match(key)
        if m is None:
            raise _incompatible(path, f"unsupported tensor {key!r} (only lora_A / lora_B weights)")
        grouped.setdefault(m["mod"], {})[m["ab"]] = t
    if not grouped:
        raise _incompatible(path, f"{WEIGHTS_FILE} holds no LoRA weights")
    return grouped


def _module_weights(
    path: Path,
    name: str,
    ab: Mapping[str, torch.Tensor],
    cfg: Mapping[str, Any],
    shapes: LinearShapes,
    max_rank: int,
    check_finite: bool = True,
) -> RawModule:
    if name not in shapes:
        raise _incompatible(path, f"module {name!r} is not a Linear module of the base")
    if set(ab) != {"A", "B"}:
        raise _incompatible(path, f"module {name!r} lacks lora_{'A' if 'A' not in ab else 'B'}")
    a, b = ab["A"], ab["B"]
    fan_in, fan_out = shapes[name]
    r = _pattern_value(cfg.get("rank_pattern") or {}, name, cfg.get("r", 8))
    if a.dim() != 2 or b.dim() != 2 or a.shape != (r, fan_in) or b.shape != (fan_out, r):
        raise _incompatible(
            path,
            f"module {name!r}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit "
            f"Linear({fan_in} -> {fan_out}) at rank {r} "
            f"(expected A {(r, fan_in)}, B {(fan_out, r)})",
        )
    if r > max_rank:
        raise _incompatible(path, f"module {name!r} rank {r} exceeds max_lora_rank {max_rank}")
    if check_finite and not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise non_finite(path, name)
    alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, name, cfg.get("lora_alpha", 8)))
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return RawModule(name=name, a=a, b=b, rank=r, scaling=scaling)


def non_finite(path: Path, module: str) -> AdapterIncompatible:
    return _incompatible(path, f"module {module!r} has non-finite weights")


def _load_cpu(weights_path: Path) -> Mapping[str, torch.Tensor]:
    return load_file(str(weights_path), device="cpu")


def read_checked(
    path: Path,
    shapes: LinearShapes,
    max_rank: int,
    loader: TensorLoader = _load_cpu,
    check_finite: bool = True,
) -> CheckedAdapter:
    """Load and validate the adapter at ``path``, keeping its tensors as stored.

    Raises ``AdapterNotFound`` (no directory / files) or ``AdapterIncompatible`` (anything
    that does not fit the base: options, modules, shapes, rank, non-finite weights unless
    ``check_finite`` is off and the caller checks them), naming the module and shapes.
    """
    path = Path(path)
    if not path.is_dir():
        raise AdapterNotFound(f"adapter directory {path} does not exist", path=str(path))
    cfg = _read_config(path)
    _check_options(path, cfg, max_rank)
    _targets_in_base(path, cfg, shapes)
    weights_path = path / WEIGHTS_FILE
    try:
        tensors = loader(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise _incompatible(path, f"unreadable {WEIGHTS_FILE}: {exc}") from exc
    grouped = _group_tensors(path, tensors)
    modules = {
        name: _module_weights(path, name, ab, cfg, shapes, max_rank, check_finite)
        for name, ab in sorted(grouped.items())
    }
    return CheckedAdapter(
        path=path,
        rank=max(m.rank for m in modules.values()),
        alpha=float(cfg.get("lora_alpha", 8)),
        target_modules=tuple(sorted({n.rsplit(".", 1)[-1] for n in modules})),
        modules=modules,
        size_bytes=weights_path.stat().st_size,
    )


def read_adapter(path: Path, shapes: LinearShapes, max_rank: int) -> AdapterWeights:
    """:func:`read_checked`, with each module's update as float32 ``a [in, r]`` / ``b [r, out]``
    (scaling folded into ``b``). The engine loads :func:`adapters.packing.read_packed` instead.
    """
    checked = read_checked(path, shapes, max_rank)
    modules = {}
    for name, m in checked.modules.items():
        a32, b32 = m.a.to(torch.float32), m.b.to(torch.float32)
        modules[name] = LoraModule(
            name=name,
            a=a32.t().contiguous(),
            b=(b32.t() * m.scaling).contiguous(),
            rank=m.rank,
            scaling=m.scaling,
        )
    return AdapterWeights(
        path=checked.path,
        rank=checked.rank,
        alpha=checked.alpha,
        target_modules=checked.target_modules,
        modules=modules,
        size_bytes=checked.size_bytes,
    )
