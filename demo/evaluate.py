"""Held-out evaluation of the triage adapters, per language slice (greedy, peft on the base).

This is the offline oracle path (peft), independent of the serving engine: the first
generated word is parsed as the label (:func:`demo.task.parse_label`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lora_router.demo.task import LANGUAGES, format_prompt, parse_label

BASE = "__base__"
MAX_NEW_TOKENS = 5


@torch.inference_mode()
def predict(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64) -> list[
    str | None
]:
    """Greedy labels for ``texts`` (left-padded batches)."""
    out: list[str | None] = []
    for i in range(0, len(texts), batch_size):
        prompts = [format_prompt(t) for t in texts[i : i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(parse_label(s) for s in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def slice_accuracy(rows: Sequence[Mapping[str, str]], preds: Sequence[str | None]) -> dict[
    str, float
]:
    """``{accuracy, slice_en, slice_es}`` over ``rows`` (each with ``label`` and ``language``)."""
    def acc(pairs: list[tuple[Mapping[str, str], str | None]]) -> float:
        return round(sum(r["label"] == p for r, p in pairs) / len(pairs), 4) if pairs else 0.0

    pairs = list(zip(rows, preds, strict=True))
    result = {"accuracy": acc(pairs)}
    for lang in LANGUAGES:
        result[f"slice_{lang}"] = acc([(r, p) for r, p in pairs if r["language"] == lang])
    return result


def evaluate_adapters(
    base_dir: Path, adapters: Mapping[str, Path], rows: Sequence[Mapping[str, str]]
) -> dict[str, dict[str, float]]:
    """Per-slice accuracy of the plain base (:data:`BASE`) and of each adapter on ``rows``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()  # type: ignore[no-untyped-call]
    texts = [r["text"] for r in rows]
    results = {BASE: slice_accuracy(rows, predict(base, tokenizer, texts))}
    model: Any = None
    for name, path in adapters.items():
        if model is None:
            model = PeftModel.from_pretrained(base, str(path), adapter_name=name).eval()
        else:
            model.load_adapter(str(path), adapter_name=name)
        model.set_adapter(name)
        results[name] = slice_accuracy(rows, predict(model, tokenizer, texts))
    return results
