"""The engine contract for refusals: bad requests, adapters that are not resident, a full
queue, the request timeout and a closed engine each raise their error, never hang."""

from __future__ import annotations

import asyncio

import pytest

from lora_router.adapters.engine import GenerationResult
from lora_router.ground.errors import (
    AdapterNotResident,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    InvalidRequest,
)
from tests.engine.contract.conftest import Open, load, req, stream_all
from tests.engine.contract.engines import Opened
from tests.engine.oracle import PROMPTS


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 0},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": -3},
        {"stop": ("",)},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
async def test_bad_sampling_values_are_invalid(opened: Opened, params: dict[str, object]) -> None:
    engine, _ = opened
    r = req(**{"max_tokens": 4, **params})
    with pytest.raises(InvalidRequest):
        await engine.generate(r)
    with pytest.raises(InvalidRequest):
        await stream_all(engine, r)
    with pytest.raises(InvalidRequest):
        await engine.generate_batch([req(), r])


async def test_a_prompt_beyond_the_context_window_is_invalid(opened: Opened) -> None:
    engine, _ = opened
    prompt = " ".join(PROMPTS)
    n = engine.count_tokens(prompt)
    room = engine.base.max_context - n
    assert room > 0
    with pytest.raises(InvalidRequest):
        await engine.generate(req(None, prompt, room + 1))
    with pytest.raises(InvalidRequest):
        await stream_all(engine, req(None, prompt * 3, 1))
    ok = await engine.generate(req(None, prompt, room))  # exactly fills the window
    assert ok.completion_tokens >= 1


async def test_an_adapter_that_is_not_resident_is_refused(opened: Opened) -> None:
    engine, paths = opened
    await load(engine, paths, "alpha@v1")
    with pytest.raises(AdapterNotResident):
        await engine.generate(req("omega@v1"))
    with pytest.raises(AdapterNotResident):
        await stream_all(engine, req("omega@v1"))
    with pytest.raises(AdapterNotResident):
        await engine.generate_batch([req(None), req("omega@v1")])
    await engine.unload_adapter("alpha@v1")
    with pytest.raises(AdapterNotResident):
        await engine.generate(req("alpha@v1"))


async def test_a_full_queue_is_overloaded_and_admits_again_once_it_drains(
    open_engine: Open,
) -> None:
    async with open_engine(max_queue=2) as (engine, _):
        outcomes = await asyncio.gather(
            *(engine.generate(req(None, PROMPTS[i % 4], 60, rid=f"b{i}")) for i in range(6)),
            return_exceptions=True,
        )
        overloaded = [o for o in outcomes if isinstance(o, EngineOverloaded)]
        served = [o for o in outcomes if isinstance(o, GenerationResult)]
        assert len(overloaded) + len(served) == len(outcomes), outcomes
        assert overloaded and served
        assert all(r.completion_tokens > 0 for r in served)
        assert (await engine.generate(req(max_tokens=2))).completion_tokens > 0


async def test_a_request_past_the_timeout_fails_instead_of_hanging(open_engine: Open) -> None:
    async with open_engine(request_timeout_s=0.001) as (engine, _):
        with pytest.raises(EngineTimeout):
            await engine.generate(req(None, PROMPTS[0], 60))
        with pytest.raises(EngineTimeout):
            await stream_all(engine, req(None, PROMPTS[1], 60))


async def test_close_fails_in_flight_requests_and_refuses_new_ones(open_engine: Open) -> None:
    async with open_engine() as (engine, _):
        stream = engine.stream(req(None, PROMPTS[3], 80))
        await stream.__anext__()
        await engine.close()
        with pytest.raises(EngineError):
            async for _ in stream:
                pass
        with pytest.raises(EngineError):
            await engine.generate(req())
