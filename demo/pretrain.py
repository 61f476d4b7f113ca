"""The demo base: a tiny Llama-architecture model, briefly pre-trained (full parameters).

A LoRA adapter cannot teach a near-random base a task in seconds; after a short causal-LM
pass over ticket text and a glossary that ties each topic's cue words (both languages) to
the topic name, the adapters have features to steer. Deterministic for a seed and thread
count; saved with ``save_pretrained`` (safetensors) next to the tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from lora_router.training.loop import StepCallback, deterministic_torch, optimise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 20261126
    steps: int = 300
    batch_size: int = 32
    block_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    torch_threads: int = 2
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    max_position_embeddings: int = 512


def model_config(tokenizer: PreTrainedTokenizerBase, cfg: PretrainConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _blocks(tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], size: int) -> torch.Tensor:
    """Pack ``<s> line </s>`` sequences into one stream cut into ``size``-token blocks."""
    stream: list[int] = []
    eos = int(tokenizer.eos_token_id)
    for ids in tokenizer(list(lines))["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // size
    return torch.tensor(stream[: n * size], dtype=torch.long).view(n, size)


def pretrain_base(
    tokenizer: PreTrainedTokenizerBase,
    lines: Sequence[str],
    out_dir: Path,
    cfg: PretrainConfig | None = None,
    on_step: StepCallback | None = None,
) -> float:
    """Train the tiny base from scratch on ``lines``; save it to ``out_dir``; return last loss."""
    cfg = cfg or PretrainConfig()
    with deterministic_torch(cfg.seed, cfg.torch_threads):
        model = LlamaForCausalLM(model_config(tokenizer, cfg))
        blocks = _blocks(tokenizer, lines, cfg.block_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        loss_value = optimise(
            model, list(model.parameters()), _sampled(blocks, cfg.batch_size, gen),
            steps=cfg.steps, lr=cfg.lr, weight_decay=0.01,
            schedule=_warmup_cosine(cfg.warmup_steps, cfg.steps), on_step=on_step,
        )
        model.eval()  # type: ignore[no-untyped-call]
        log.info("pre-trained base: %d steps, final loss %.3f", cfg.steps, loss_value)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir))
    for f in out_dir.glob("*.safetensors"):
        f.chmod(0o644)  # safetensors writes 0600
    return loss_value


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    import math

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _sampled(
    blocks: torch.Tensor, size: int, gen: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    """``size`` blocks drawn with replacement per step; a block is its own label."""
    while True:
        batch = blocks[torch.randint(len(blocks), (size,), generator=gen)]
        yield {"input_ids": batch, "labels": batch}
