"""A tiny random Llama, a locally trained BPE tokenizer and real peft LoRA adapters."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from lora_router.ground.home import Home
from lora_router.registry.base_pin import pin_base

CORPUS = [
    "the printer on floor two is jammed again and nobody can print invoices",
    "my password reset link expired before I could use it, please help",
    "el cargo de mi tarjeta aparece dos veces en la factura de marzo",
    "the app crashes when I upload a photo larger than ten megabytes",
    "no puedo iniciar sesion desde que cambie mi numero de telefono",
    "shipping label printed with the wrong address for order 55120",
    "refund requested for a duplicate subscription charge on my account",
    "the dashboard loads slowly every morning between eight and nine",
]

# name -> LoraConfig kwargs; different ranks, targets and scaling rules.
ADAPTERS: dict[str, dict[str, Any]] = {
    "alpha@v1": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    "beta@v1": {
        "r": 8,
        "lora_alpha": 16,
        "target_modules": [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    },
    "gamma@v1": {
        "r": 2,
        "lora_alpha": 4,
        "use_rslora": True,
        "target_modules": ["o_proj", "down_proj"],
    },
    "delta@v1": {
        "r": 8,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj", "up_proj"],
        "rank_pattern": {"q_proj": 4},
        "alpha_pattern": {"v_proj": 32},
    },
}


@dataclass(frozen=True)
class TinyHome:
    home: Home
    adapter_ids: tuple[str, ...]


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )


def build_base(base_dir: Path) -> None:
    tokenizer = build_tokenizer()
    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
        initializer_range=0.15,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)


def load_base(base_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()


def build_adapter(base_dir: Path, out_dir: Path, seed: int, **lora: Any) -> None:
    torch.manual_seed(seed)
    peft_model = get_peft_model(load_base(base_dir), LoraConfig(init_lora_weights=False, **lora))
    peft_model.save_pretrained(out_dir)


def build_tiny_home(root: Path) -> TinyHome:
    home = Home.at(root)
    if home.base_dir.exists():
        shutil.rmtree(home.base_dir)
    build_base(home.base_dir)
    pin_base(home, name="tiny-llama")
    for i, (adapter_id, lora) in enumerate(ADAPTERS.items()):
        build_adapter(home.base_dir, home.adapter_dir(adapter_id), seed=100 + i, **lora)
    return TinyHome(home=home, adapter_ids=tuple(ADAPTERS))
