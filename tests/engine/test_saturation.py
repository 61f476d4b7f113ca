"""``Engine.saturated()``: a cheap hint that a new request would wait for batch room."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

from lora_router.adapters.engine import GenerationRequest, SamplingParams
from tests.engine.conftest import CONFIG, started
from tests.engine.oracle import PROMPTS
from tests.engine.tiny import TinyHome


async def test_saturated_while_queued_and_running_rows_fill_a_batch(tiny: TinyHome) -> None:
    engine = await started(tiny, replace(CONFIG, max_batch_size=2), load=False)
    release = threading.Event()
    try:
        assert not engine.saturated()
        # hold the worker between steps so that admitted rows stay in flight
        held = engine._batcher.call(lambda: release.wait(30))
        params = SamplingParams(max_tokens=4)

        def submit(i: int) -> asyncio.Task[object]:
            return asyncio.create_task(
                engine.generate(GenerationRequest(f"r{i}", PROMPTS[0], None, params))
            )

        first = submit(0)
        await asyncio.sleep(0.05)
        assert not engine.saturated(), "one row in flight, room for another"
        second = submit(1)
        await asyncio.sleep(0.05)
        assert engine.saturated()
        release.set()
        await asyncio.wrap_future(held)
        await asyncio.gather(first, second)
        assert not engine.saturated(), "finished rows no longer count"
    finally:
        release.set()
        await engine.close()
