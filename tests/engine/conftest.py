"""Fixtures: a tiny pinned base with four real peft adapters (built once per session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from lora_router.adapters.peft_engine import EmbeddedEngine, EngineConfig
from tests.engine.oracle import Oracle
from tests.engine.tiny import TinyHome, build_tiny_home

CONFIG = EngineConfig(
    max_batch_size=16,
    batch_wait_ms=5.0,
    max_lora_rank=8,
    max_adapters=4,
    max_queue=256,
    request_timeout_s=60.0,
    device="cpu",
    dtype="float32",
)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyHome:
    return build_tiny_home(tmp_path_factory.mktemp("tiny-home"))


async def started(
    tiny: TinyHome, config: EngineConfig = CONFIG, load: bool = True
) -> EmbeddedEngine:
    engine = EmbeddedEngine.from_home(tiny.home, config)
    await engine.start()
    if load:
        for adapter_id in tiny.adapter_ids:
            await engine.load_adapter(adapter_id, tiny.home.adapter_dir(adapter_id))
    return engine


@pytest.fixture
async def engine(tiny: TinyHome) -> AsyncIterator[EmbeddedEngine]:
    """An engine with all four adapters resident (every slot taken)."""
    e = await started(tiny)
    yield e
    await e.close()


@pytest.fixture
async def roomy_engine(tiny: TinyHome) -> AsyncIterator[EmbeddedEngine]:
    """An engine with free slots and no adapter loaded."""
    e = await started(tiny, replace(CONFIG, max_adapters=6), load=False)
    yield e
    await e.close()


@pytest.fixture(scope="session")
def oracle(tiny: TinyHome) -> Oracle:
    return Oracle.build(tiny)
