"""Build the engine the settings ask for (the embedded one; vLLM is an optional extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.engine import Engine
from adapters.peft_engine import EmbeddedEngine, EngineConfig
from registry.errors import ConfigError
from registry.home import Home

if TYPE_CHECKING:  # router depends on adapters, not the reverse
    from router.settings import Settings


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        max_batch_size=settings.max_batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        max_lora_rank=settings.max_lora_rank,
        max_adapters=settings.max_adapters,
        max_queue=settings.max_queue,
        request_timeout_s=settings.request_timeout_s,
        device=settings.device,
        dtype=settings.dtype,
        torch_threads=settings.torch_threads,
    )


def build_engine(settings: Settings, home: Home) -> Engine:
    """Load the pinned base from ``home`` (``BaseModelMismatch`` if its files changed)."""
    kind = getattr(settings, "engine", "embedded")
    if kind == "vllm":
        raise ConfigError(
            "engine 'vllm' is not installed here; install the `vllm` extra on a "
            "GPU host, or use the embedded engine"
        )
    if kind != "embedded":
        raise ConfigError(f"unknown engine {kind!r} (expected 'embedded')")
    return EmbeddedEngine.from_home(home, engine_config(settings))
