"""Engine seconds, as the batcher measures them: each forward pass's wall time split equally
among the rows it computed. So rows that shared every pass are charged the same, and the
engine seconds of all requests add up to the time the engine spent in passes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from lora_router.adapters.engine import GenerationRequest, SamplingParams
from lora_router.adapters.factory import build_engine
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.ground.home import Home
from lora_router.router.engine_spec import engine_spec
from lora_router.router.settings import Settings

PROMPT = "Ticket: I was charged twice for the same invoice.\nCategory:"
V1 = "support-triage@v1"


@pytest.fixture
async def engine(demo_home: Home) -> AsyncIterator[EmbeddedEngine]:
    e = build_engine(engine_spec(Settings(home=demo_home.root, device="cpu")), demo_home)
    assert isinstance(e, EmbeddedEngine)
    await e.start()
    await e.load_adapter(V1, demo_home.adapter_dir(V1))
    yield e
    await e.close()


async def test_rows_sharing_every_pass_are_charged_equal_shares(engine: EmbeddedEngine) -> None:
    decoder = engine._batcher.decoder
    release = threading.Event()
    held = engine._batcher.call(lambda: release.wait(30))  # queue the rows, then one batch
    busy_before = decoder.busy_s
    params = SamplingParams(max_tokens=5)
    tasks = [asyncio.create_task(engine.generate(GenerationRequest(f"r{i}", PROMPT, V1, params)))
             for i in range(4)]
    deadline = time.monotonic() + 30
    while engine._batcher._inflight < 4:
        assert time.monotonic() < deadline, "rows not queued"
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.wrap_future(held)
    results = await asyncio.gather(*tasks)
    assert len({r.text for r in results}) == 1  # same prompt, greedy: the same passes
    shares = [r.engine_s for r in results]
    assert shares[0] > 0 and shares == [shares[0]] * 4
    assert sum(shares) == pytest.approx(decoder.busy_s - busy_before, rel=1e-9)


async def test_engine_seconds_add_up_to_the_engine_busy_time(engine: EmbeddedEngine) -> None:
    decoder = engine._batcher.decoder
    busy_before = decoder.busy_s
    params = [SamplingParams(max_tokens=n) for n in (1, 3, 8, 2, 6)]
    results = await asyncio.gather(*(
        engine.generate(GenerationRequest(f"m{i}", PROMPT * (i + 1), V1 if i % 2 else None, p))
        for i, p in enumerate(params)))
    assert all(r.engine_s > 0 for r in results)
    assert sum(r.engine_s for r in results) == pytest.approx(decoder.busy_s - busy_before,
                                                             rel=1e-9)
