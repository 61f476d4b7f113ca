"""Decoding controls, streaming, continuous batching and request validation."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from lora_router.adapters.engine import GenerationRequest, SamplingParams, StreamChunk
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.ground.errors import (
    AdapterNotResident,
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    InvalidRequest,
)
from tests.engine.conftest import CONFIG, started
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome


def _req(
    adapter_id: str | None = None, prompt: str = PROMPTS[0], rid: str = "r", **params: object
) -> GenerationRequest:
    return GenerationRequest(rid, prompt, adapter_id, SamplingParams(**params))  # type: ignore[arg-type]


SAMPLED = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.9}


async def test_seeded_sampling_is_reproducible_whatever_the_batch_mates(
    engine: EmbeddedEngine,
) -> None:
    alone = await engine.generate(_req("beta@v1", seed=42, **SAMPLED))
    mates = [
        _req(a, p, f"m{i}", seed=i, **SAMPLED)
        for i, (a, p) in enumerate(zip(["alpha@v1", None, "gamma@v1"], PROMPTS, strict=False))
    ]
    crowd = await asyncio.gather(
        engine.generate(_req("beta@v1", seed=42, **SAMPLED)), *(engine.generate(m) for m in mates)
    )
    batch = await engine.generate_batch([*mates, _req("beta@v1", seed=42, **SAMPLED)])
    assert crowd[0].text == alone.text == batch[-1].text
    others = {(await engine.generate(_req("beta@v1", seed=s, **SAMPLED))).text for s in range(5)}
    assert len(others) > 1  # the seed matters: sampling is not secretly greedy


async def test_top_p_near_zero_is_greedy(engine: EmbeddedEngine, oracle: Oracle) -> None:
    res = await engine.generate(_req("alpha@v1", max_tokens=10, temperature=1.5, top_p=1e-6))
    assert res.text == oracle.greedy("alpha@v1", PROMPTS[0], 10)


async def test_stop_sequence_trims_text_and_stops(engine: EmbeddedEngine) -> None:
    full = await engine.generate(_req("delta@v1", max_tokens=20))
    stop = full.text[6:8]
    cut = full.text.find(stop)
    assert stop and cut > 0
    res = await engine.generate(_req("delta@v1", max_tokens=20, stop=("no-such-text", stop)))
    assert res.text == full.text[:cut]
    assert res.finish_reason == "stop"
    assert res.completion_tokens < full.completion_tokens


@pytest.mark.parametrize("stop_at", [None, 5])
async def test_streamed_pieces_concatenate_to_the_final_text(
    engine: EmbeddedEngine, stop_at: int | None
) -> None:
    full = await engine.generate(_req("gamma@v1", PROMPTS[2], max_tokens=24))
    stops = () if stop_at is None else (full.text[stop_at : stop_at + 3],)
    chunks: list[StreamChunk] = [
        c async for c in engine.stream(_req("gamma@v1", PROMPTS[2], max_tokens=24, stop=stops))
    ]
    final = chunks[-1].result
    assert final is not None and all(c.result is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == final.text
    assert len(chunks) > 2
    if stop_at is None:
        assert final.text == full.text
    else:
        assert final.text == full.text[: full.text.find(stops[0])]
        assert final.finish_reason == "stop"


async def test_requests_join_a_running_batch_and_leave_it(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, oracle: Oracle
) -> None:
    engine = roomy_engine
    for a in ("alpha@v1", "beta@v1"):
        await engine.load_adapter(a, tiny.home.adapter_dir(a))
    long_req = _req("alpha@v1", PROMPTS[3], max_tokens=60)
    stream = engine.stream(long_req)
    first = await stream.__anext__()  # the long request is decoding now
    assert first.result is None
    joiners = [
        _req("beta@v1", PROMPTS[2], max_tokens=6),
        _req(None, PROMPTS[1], max_tokens=9),
        _req("alpha@v1", PROMPTS[0], max_tokens=3),
    ]
    short = await asyncio.gather(*(engine.generate(r) for r in joiners))
    rest = [c async for c in stream]
    assert len(rest) > 3  # the long one was still running while the short ones came and went
    long_text = first.text + "".join(c.text for c in rest)
    assert long_text == oracle.greedy("alpha@v1", PROMPTS[3], 60)
    for r, res in zip(joiners, short, strict=True):
        assert res.text == oracle.greedy(r.adapter_id, r.prompt, r.params.max_tokens)


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
)
async def test_invalid_sampling_values_are_refused(
    engine: EmbeddedEngine, params: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequest):
        await engine.generate(_req(**params))


async def test_prompt_beyond_the_context_window_is_refused(engine: EmbeddedEngine) -> None:
    prompt = " ".join(PROMPTS)
    n = engine.count_tokens(prompt)
    assert n < engine.base.max_context
    with pytest.raises(InvalidRequest, match="context window"):
        await engine.generate(_req(prompt=prompt, max_tokens=engine.base.max_context - n + 1))
    with pytest.raises(InvalidRequest):
        engine.stream(_req(prompt=prompt * 3))
    ok = await engine.generate(_req(prompt=prompt, max_tokens=engine.base.max_context - n))
    assert ok.completion_tokens >= 1


async def test_unknown_adapter_is_not_resident(engine: EmbeddedEngine) -> None:
    with pytest.raises(AdapterNotResident):
        await engine.generate(_req("omega@v1"))
    with pytest.raises(AdapterNotResident):
        await engine.generate_batch([_req(None), _req("omega@v1")])


async def test_full_queue_is_overloaded(tiny: TinyHome) -> None:
    engine = await started(tiny, replace(CONFIG, max_queue=2), load=False)
    try:
        busy = [
            asyncio.ensure_future(engine.generate(_req(max_tokens=60, rid=f"b{i}")))
            for i in range(2)
        ]
        await asyncio.sleep(0)
        with pytest.raises(EngineOverloaded):
            await engine.generate(_req(max_tokens=2))
        assert all(r.completion_tokens > 0 for r in await asyncio.gather(*busy))
        assert (await engine.generate(_req(max_tokens=2))).completion_tokens > 0
    finally:
        await engine.close()


async def test_a_request_past_its_timeout_fails_without_hanging(tiny: TinyHome) -> None:
    engine = await started(tiny, replace(CONFIG, request_timeout_s=0.001), load=False)
    try:
        with pytest.raises(EngineTimeout):
            await engine.generate(_req(max_tokens=60))
    finally:
        await engine.close()


async def test_close_fails_queued_requests(tiny: TinyHome) -> None:
    engine = await started(tiny, load=False)
    task = asyncio.ensure_future(engine.generate(_req(max_tokens=80)))
    await asyncio.sleep(0)
    await engine.close()
    with pytest.raises(EngineError):
        await task


async def test_chat_prompt_and_token_count(engine: EmbeddedEngine) -> None:
    msgs = [{"role": "system", "content": "triage"}, {"role": "user", "content": "printer jammed"}]
    prompt = engine.chat_prompt(msgs)
    assert prompt == "system: triage\nuser: printer jammed\nassistant:"
    assert engine.count_tokens(prompt) == len(engine._codec.encode(prompt)) > 5
    res = await engine.generate(_req(prompt=prompt, max_tokens=4))
    assert res.prompt_tokens == engine.count_tokens(prompt)


async def test_event_loop_stays_responsive_while_the_engine_works(
    engine: EmbeddedEngine,
) -> None:
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(
        engine.generate_batch(
            [_req(a, p, max_tokens=60) for a in (None, "beta@v1") for p in PROMPTS]
        )
    )
    gaps, last = [], loop.time()
    while not work.done():
        await asyncio.sleep(0.002)
        now = loop.time()
        gaps.append(now - last)
        last = now
    assert len(await work) == 8
    assert len(gaps) > 10  # the loop kept ticking during generation
    assert max(gaps) < 0.25
