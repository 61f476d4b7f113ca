"""The engines the contract suite runs against: one factory per implementation, in ENGINES.

A factory is an async context manager: given the tiny home and the knobs a test asks for, it
yields a started engine with no adapter loaded and the paths to load the tiny adapters from
(``{adapter id: directory}``), and closes the engine on exit (a test may close it first).
Adding an implementation is adding one entry to ``ENGINES``. The only skip allowed is an
engine that cannot run on this machine (vLLM without the package or a CUDA device).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lora_router.adapters.engine import Engine
from lora_router.adapters.peft_engine import EmbeddedEngine
from tests.engine.conftest import CONFIG
from tests.engine.contract.remote_engine import remote
from tests.engine.tiny import TinyHome


@dataclass(frozen=True)
class Knobs:
    """The configuration a contract test may ask of any engine."""

    max_adapters: int = 4
    max_queue: int = 256
    request_timeout_s: float = 60.0
    max_lora_rank: int = 8
    max_batch_size: int = 16


Opened = tuple[Engine, dict[str, Path]]
EngineFactory = Callable[[TinyHome, Knobs], AbstractAsyncContextManager[Opened]]


def adapter_paths(tiny: TinyHome) -> dict[str, Path]:
    return {a: tiny.home.adapter_dir(a) for a in tiny.adapter_ids}


@asynccontextmanager
async def _started(engine: Engine, paths: dict[str, Path]) -> AsyncIterator[Opened]:
    await engine.start()
    try:
        yield engine, paths
    finally:
        await engine.close()


@asynccontextmanager
async def embedded(tiny: TinyHome, knobs: Knobs) -> AsyncIterator[Opened]:
    """:class:`EmbeddedEngine` in this process, on CPU."""
    config = replace(
        CONFIG,
        max_adapters=knobs.max_adapters,
        max_queue=knobs.max_queue,
        request_timeout_s=knobs.request_timeout_s,
        max_lora_rank=knobs.max_lora_rank,
        max_batch_size=knobs.max_batch_size,
    )
    async with _started(EmbeddedEngine.from_home(tiny.home, config), adapter_paths(tiny)) as o:
        yield o


@asynccontextmanager
async def vllm(tiny: TinyHome, knobs: Knobs) -> AsyncIterator[Opened]:
    """:class:`VllmEngine` (vLLM's AsyncLLM in this process) on a CUDA device, float32 so that
    greedy outputs can equal peft's."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (the `vllm` extra, CUDA hosts only)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("the vLLM engine needs a CUDA device")
    from lora_router.adapters.vllm_engine import VllmConfig, VllmEngine

    config = VllmConfig(
        max_adapters=knobs.max_adapters,
        max_loras=knobs.max_adapters,
        max_lora_rank=knobs.max_lora_rank,
        max_queue=knobs.max_queue,
        request_timeout_s=knobs.request_timeout_s,
        max_num_seqs=knobs.max_batch_size,
        gpu_memory_utilization=0.3,
        dtype="float32",
        enforce_eager=True,
    )
    async with _started(VllmEngine.from_home(tiny.home, config), adapter_paths(tiny)) as o:
        yield o


ENGINES: list[Any] = [
    pytest.param(embedded, id="embedded"),
    pytest.param(vllm, id="vllm", marks=(pytest.mark.vllm, pytest.mark.gpu)),
    pytest.param(remote, id="remote"),
]
