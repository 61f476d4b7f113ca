"""What the vLLM engine computes without vLLM: its settings, the mapping of our requests and
adapters onto vLLM's API, and the results read back. Nothing here imports vLLM, so all of
it is tested on CPU (``tests/engine/test_vllm_engine.py``); :mod:`.vllm_engine` drives vLLM.

Written against vLLM's Python API as read at vllm-project/vllm ``00080ee1``
(``vllm/v1/engine/async_llm.py``), ``01533aa8`` (``vllm/lora/model_manager.py``) and the
v0.22 reference pages (``vllm.lora.request.LoRARequest``, ``vllm.config.lora.LoRAConfig``,
``vllm.sampling_params``); see :mod:`.vllm_engine`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lora_router.adapters.adapter_files import CONFIG_FILE, WEIGHTS_FILE, AdapterWeights
from lora_router.adapters.engine import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from lora_router.ground.errors import ConfigError, EngineError

# vllm.config.lora.MaxLoRARanks: the only values vLLM accepts for max_lora_rank
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class VllmConfig:
    """The vLLM engine's knobs. The model is always the home's pinned base directory.

    ``max_adapters`` adapters may be resident (``NoFreeSlot`` beyond). vLLM keeps
    ``max_cpu_loras`` adapters in host memory and evicts the least recently used one past
    that, reloading it from disk on its next request; so ``max_cpu_loras`` is at least
    ``max_adapters`` (None means equal), and vLLM never evicts a resident adapter, the
    rollback target included. ``max_loras`` adapters share one batch on the GPU; the others
    wait in host memory for a GPU slot (a copy, not a reload).
    """

    max_adapters: int = 8
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    gpu_memory_utilization: float = 0.90
    max_model_len: int | None = None  # None: the base's max_position_embeddings
    max_num_seqs: int = 64
    max_queue: int = 1024
    request_timeout_s: float = 60.0
    dtype: str = "bfloat16"  # auto | bfloat16 | float16 | float32
    enforce_eager: bool = False
    extra_args: Mapping[str, Any] = field(default_factory=dict, hash=False)  # to AsyncEngineArgs

    def __post_init__(self) -> None:
        check_config(self)


def check_config(c: VllmConfig) -> None:
    """Refuse, at start and in one line, settings vLLM would refuse or misuse later."""
    if c.max_adapters < 1 or c.max_loras < 1:
        raise ConfigError("vllm: max_adapters and max_loras must be at least 1")
    if c.max_cpu_loras is not None and c.max_cpu_loras < max(c.max_adapters, c.max_loras):
        raise ConfigError(
            f"vllm: max_cpu_loras ({c.max_cpu_loras}) must be at least max_adapters "
            f"({c.max_adapters}) and max_loras ({c.max_loras}): vLLM would evict resident "
            "adapters (the rollback target among them) from its host cache"
        )
    if not 1 <= c.max_lora_rank <= VLLM_RANKS[-1]:
        raise ConfigError(f"vllm: max_lora_rank must be in [1, {VLLM_RANKS[-1]}]")
    if not 0.0 < c.gpu_memory_utilization <= 1.0:
        raise ConfigError("vllm: gpu_memory_utilization must be in (0, 1]")
    if c.max_num_seqs < 1 or c.max_queue < 1 or c.request_timeout_s <= 0:
        raise ConfigError("vllm: max_num_seqs, max_queue and request_timeout_s must be positive")
    if c.dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(f"vllm: unknown dtype {c.dtype!r}")


def vllm_rank(max_rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``max_rank`` (we still refuse above it)."""
    return next(r for r in VLLM_RANKS if r >= max_rank)


def cpu_loras(c: VllmConfig) -> int:
    return c.max_cpu_loras if c.max_cpu_loras is not None else max(c.max_adapters, c.max_loras)


def engine_kwargs(c: VllmConfig, model_dir: Path, max_model_len: int) -> dict[str, Any]:
    """``AsyncEngineArgs(**...)`` for the pinned base with runtime LoRA."""
    return {
        "model": str(model_dir),
        "tokenizer": str(model_dir),
        "dtype": c.dtype,
        "seed": 0,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": c.gpu_memory_utilization,
        "max_num_seqs": c.max_num_seqs,
        "enforce_eager": c.enforce_eager,
        "enable_lora": True,
        "max_loras": c.max_loras,
        "max_lora_rank": vllm_rank(c.max_lora_rank),
        "max_cpu_loras": cpu_loras(c),
        "disable_log_stats": True,
        **dict(c.extra_args),
    }


def sampling_kwargs(p: SamplingParams) -> dict[str, Any]:
    """``vllm.SamplingParams(**...)`` for our params (validated before; output_kind apart).

    vLLM decodes greedily below temperature 1e-5, the embedded engine's threshold too.
    ``logprobs=0`` returns the sampled token's log-probability only; vLLM's default
    ``logprobs_mode`` (raw) gives the model's, at temperature 1, as the embedded engine's
    confidence does.
    """
    return {
        "n": 1,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "seed": p.seed,
        "stop": list(p.stop) or None,
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "logprobs": 0,
    }


class LoraIds:
    """vLLM's ``lora_int_id`` per adapter id: from 1, the same id for the engine's life.

    Never reused for another adapter: vLLM keys its host and GPU caches by this int, so a
    reused one could serve a stale copy of the adapter that held it before.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def __call__(self, adapter_id: str) -> int:
        return self._ids.setdefault(adapter_id, len(self._ids) + 1)


def _short_names(weights: AdapterWeights) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name in weights.modules})


def write_vllm_adapter(weights: AdapterWeights, out_dir: Path) -> Path:
    """Write ``weights`` as a plain peft LoRA that vLLM applies with exactly our maths.

    vLLM applies one scaling (``lora_alpha / r``, or rsLoRA's) to every module and ignores
    peft's ``rank_pattern`` / ``alpha_pattern``. Here each module's own scaling is already
    folded into ``lora_B`` (:func:`~adapters.adapter_files.read_adapter`), every module is
    zero-padded to one rank ``r`` (padding adds nothing) and ``lora_alpha = r``: scaling 1.
    """
    r = weights.rank
    tensors: dict[str, torch.Tensor] = {}
    for name, m in weights.modules.items():
        fan_in, fan_out = m.a.shape[0], m.b.shape[1]
        a = torch.zeros((r, fan_in), dtype=torch.float32)
        b = torch.zeros((fan_out, r), dtype=torch.float32)
        a[: m.rank] = m.a.t()
        b[:, : m.rank] = m.b.t()
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": r,
        "target_modules": _short_names(weights),
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "lora_dropout": 0.0,
        "base_model_name_or_path": None,
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def base_linear_shapes(base_dir: Path) -> dict[str, tuple[int, int]]:
    """The base's Linear shapes from its config alone (meta tensors: no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_router.adapters.adapter_files import linear_shapes

    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return linear_shapes(model)


@dataclass
class Completion:
    """One request's output, summed over vLLM's DELTA outputs (:meth:`add` each)."""

    eos_ids: frozenset[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    prob_sum: float = 0.0
    n_probs: int = 0
    finish: FinishReason | None = None

    def add(
        self,
        text: str,
        token_ids: Sequence[int],
        logprobs: Sequence[Mapping[int, float]] | None,
        finish_reason: str | None,
    ) -> None:
        self.text += text
        self.token_ids.extend(token_ids)
        for tok, position in zip(token_ids, logprobs or (), strict=False):
            lp = position.get(tok)
            if lp is not None and math.isfinite(lp):
                self.prob_sum += math.exp(lp)
                self.n_probs += 1
        if finish_reason is not None:
            self.finish = finish_reason_of(finish_reason)

    def result(self, request: GenerationRequest, prompt_tokens: int) -> GenerationResult:
        n = len(self.token_ids)
        if self.finish == "stop" and n and self.token_ids[-1] in self.eos_ids:
            n -= 1  # the embedded engine does not count the EOS token it stopped on
        return GenerationResult(
            request_id=request.request_id,
            adapter_id=request.adapter_id,
            text=self.text,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            confidence=self.prob_sum / self.n_probs if self.n_probs else 0.0,
            finish_reason=self.finish or "length",
        )


def finish_reason_of(vllm_reason: str) -> FinishReason:
    """vLLM's ``CompletionOutput.finish_reason``: ``stop`` (EOS or a stop string), ``length``,
    or ``abort`` (cancelled, or failed in the engine), which is an error here."""
    if vllm_reason in ("stop", "length"):
        return vllm_reason  # type: ignore[return-value]
    raise EngineError(f"vLLM ended the request: {vllm_reason}")


def logprob_floats(logprobs: Sequence[Mapping[int, Any]] | None) -> list[dict[int, float]]:
    """vLLM's per-position ``{token id: Logprob}`` as plain floats."""
    return [{tok: float(lp.logprob) for tok, lp in pos.items()} for pos in logprobs or ()]


def eos_token_ids(base_dir: Path, tokenizer: Any) -> frozenset[int]:
    """The tokens that end a generation: the base's generation config and tokenizer EOS."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(base_dir, local_files_only=True).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The base's chat template, or the plain ``role: content`` lines the embedded engine uses."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        )
    return "\n".join([*(f"{m['role']}: {m['content']}" for m in messages), "assistant:"])


_NO_MODULE = re.compile(r"No module named '?([\w.]+)'?")


def missing_vllm_message(exc: ImportError) -> str:
    """One line for a missing (or broken) vLLM install."""
    m = _NO_MODULE.search(str(exc))
    what = f"module {m.group(1)} is missing" if m else str(exc).splitlines()[0]
    return (
        f"engine 'vllm' needs the vLLM package ({what}): install the `vllm` extra "
        "(pip install 'lora-router[vllm]') on a CUDA host, or use engine=embedded"
    )
