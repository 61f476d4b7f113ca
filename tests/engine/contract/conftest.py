"""Fixtures of the engine contract suite: each test runs once per engine of ``ENGINES``.

The reference is peft itself (:mod:`tests.engine.oracle`): an engine's greedy output for an
adapter must equal peft's for that adapter run alone, unbatched, on the same tiny model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from lora_router.adapters.engine import Engine, GenerationRequest, SamplingParams, StreamChunk
from tests.engine.contract.engines import ENGINES, EngineFactory, Knobs, Opened
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome

Open = Callable[..., AbstractAsyncContextManager[Opened]]
Expect = Callable[[str | None, str, int], str]


@pytest.fixture(params=ENGINES)
def open_engine(request: pytest.FixtureRequest, tiny: TinyHome) -> Open:
    """``open_engine(**knobs)``: an engine of this run's implementation (see ``Knobs``)."""
    factory: EngineFactory = request.param

    def open_(**knobs: Any) -> AbstractAsyncContextManager[Opened]:
        return factory(tiny, Knobs(**knobs))

    return open_


@pytest.fixture
async def opened(open_engine: Open) -> AsyncIterator[Opened]:
    """A started engine with default knobs and nothing loaded, and the adapters' paths."""
    async with open_engine() as o:
        yield o


@pytest.fixture(scope="session")
def expect(oracle: Oracle) -> Expect:
    """``expect(adapter_id, prompt, max_tokens)``: peft's greedy text (memoised)."""
    memo: dict[tuple[str | None, str, int], str] = {}

    def greedy(adapter_id: str | None, prompt: str, max_tokens: int) -> str:
        key = (adapter_id, prompt, max_tokens)
        if key not in memo:
            memo[key] = oracle.greedy(adapter_id, prompt, max_tokens)
        return memo[key]

    return greedy


def req(
    adapter_id: str | None = None,
    prompt: str = PROMPTS[0],
    max_tokens: int = 12,
    rid: str = "r",
    **sampling: Any,
) -> GenerationRequest:
    params = SamplingParams(max_tokens=max_tokens, **sampling)
    return GenerationRequest(rid, prompt, adapter_id, params)


async def load(engine: Engine, paths: dict[str, Any], *adapter_ids: str) -> None:
    for adapter_id in adapter_ids:
        await engine.load_adapter(adapter_id, paths[adapter_id])


async def stream_all(engine: Engine, request: GenerationRequest) -> list[StreamChunk]:
    """Every chunk of a stream (an admission error may come from the call or the first read)."""
    return [chunk async for chunk in engine.stream(request)]

