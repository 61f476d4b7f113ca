"""The pinned base as a gateway in front of remote engines needs it: its identity and text.

The remote engine runs the model elsewhere, but tokenises here (token counts for the log,
long prompts encoded off the event loop, chat templates) from the home's pinned base. What
it reads must be the pinned bytes: every file of the lock that is not a weight file is
re-hashed against the lock (``BaseModelMismatch`` otherwise). The weights need not be on the
gateway's host; the backends' bases are checked against the pin by name and, where a
backend reports it, by hash (:mod:`adapters.remote`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lora_router.ground.errors import BaseModelMismatch, ConfigError
from lora_router.ground.hashing import sha256_file
from lora_router.ground.home import Home
from lora_router.registry.base_pin import BaseLock, read_lock

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def verify_local_base(home: Home) -> BaseLock:
    """The home's base lock, with every non-weight file it lists re-hashed and matching."""
    lock = read_lock(home)
    changed = []
    for rel, digest in sorted(lock.files.items()):
        if rel.endswith(_WEIGHT_SUFFIXES):
            continue
        path = home.base_dir / rel
        if not path.is_file() or sha256_file(path) != digest:
            changed.append(rel)
    if changed:
        raise BaseModelMismatch(
            f"base files under {home.base_dir} do not match the pinned hash "
            f"{lock.sha256[:19]}… (changed: {', '.join(changed)}); refusing to start",
            changed=changed,
        )
    return lock


@dataclass(frozen=True)
class BaseShape:
    max_context: int
    vocab_size: int
    dtype: str


def base_shape(home: Home) -> BaseShape:
    """Context window, vocabulary and dtype from the base's ``config.json``."""
    try:
        config = json.loads((home.base_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {home.base_dir / 'config.json'}: {exc}") from exc
    return BaseShape(
        max_context=int(config.get("max_position_embeddings", 2048)),
        vocab_size=int(config.get("vocab_size", 0)),
        dtype=str(config.get("dtype") or config.get("torch_dtype") or "auto"),
    )


class LocalText:
    """Text <-> ids and chat prompts from the base's tokenizer, as the embedded engine does
    (a private copy of the fast tokenizer's backend: thread-safe, releases the GIL)."""

    def __init__(self, home: Home) -> None:
        from transformers import AutoTokenizer

        try:
            self._hf: Any = AutoTokenizer.from_pretrained(
                home.base_dir, padding_side="left", local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the tokenizer from {home.base_dir}: {exc}") from exc
        self._lock = threading.Lock()
        self._fast: Any = None
        backend = getattr(self._hf, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_padding()
            self._fast.no_truncation()

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode_batch([text], add_special_tokens=True)[0].ids)
        with self._lock:
            return list(self._hf(text, add_special_tokens=True)["input_ids"])

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if getattr(self._hf, "chat_template", None):
            with self._lock:
                rendered = self._hf.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            return str(rendered)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])
