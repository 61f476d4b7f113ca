"""peft as the correctness oracle: each adapter run alone, unbatched, by peft itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from tests.engine.tiny import TinyHome, load_base

PROMPTS = (
    "the printer on floor two",
    "el cargo de mi tarjeta aparece",
    "refund requested for a duplicate subscription charge",
    "my password",
)


def peft_name(adapter_id: str) -> str:
    return adapter_id.split("@")[0]  # peft adapter names cannot contain dots


@dataclass
class Oracle:
    model: Any
    tokenizer: Any

    @classmethod
    def build(cls, tiny: TinyHome) -> Oracle:
        home = tiny.home
        first, *rest = tiny.adapter_ids
        model = PeftModel.from_pretrained(
            load_base(home.base_dir), home.adapter_dir(first), adapter_name=peft_name(first)
        )
        for adapter_id in rest:
            model.load_adapter(home.adapter_dir(adapter_id), adapter_name=peft_name(adapter_id))
        model.eval()
        return cls(model, AutoTokenizer.from_pretrained(home.base_dir))

    def _run(self, adapter_id: str | None, fn: Any) -> Any:
        with torch.no_grad():
            if adapter_id is None:
                with self.model.disable_adapter():
                    return fn()
            self.model.set_adapter(peft_name(adapter_id))
            return fn()

    def logits(self, adapter_id: str | None, prompt: str) -> torch.Tensor:
        """``[T, V]`` logits of the prompt, the adapter run alone without padding."""
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        return self._run(adapter_id, lambda: self.model(input_ids=ids).logits[0])  # type: ignore[no-any-return]

    def greedy(self, adapter_id: str | None, prompt: str, max_tokens: int) -> str:
        enc = self.tokenizer(prompt, return_tensors="pt")
        out = self._run(
            adapter_id,
            lambda: self.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False),
        )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        return str(
            self.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )
