"""The engine contract for generation: greedy outputs equal peft's for every adapter and the
base, alone or mixed in one batch; streams concatenate to the generated text; the text
helpers agree with what generation computes."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from lora_router.adapters.engine import GenerationRequest, GenerationResult
from lora_router.registry.base_pin import read_lock
from tests.engine.contract.conftest import Expect, Open, load, req, stream_all
from tests.engine.contract.engines import Opened
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome

ROWS: list[tuple[str | None, str]] = [
    (None, PROMPTS[0]),
    ("alpha@v1", PROMPTS[1]),
    ("beta@v1", PROMPTS[2]),
    ("gamma@v1", PROMPTS[3]),
    ("delta@v1", PROMPTS[0]),
    ("beta@v1", PROMPTS[3]),
    (None, PROMPTS[2]),
    ("alpha@v1", PROMPTS[0]),
]
N = 12


def _requests() -> list[GenerationRequest]:
    return [req(a, p, N, rid=f"r{i}") for i, (a, p) in enumerate(ROWS)]


def _check(res: GenerationResult, adapter_id: str | None, prompt: str, expect: Expect) -> None:
    assert res.adapter_id == adapter_id
    assert res.text == expect(adapter_id, prompt, N), (adapter_id, prompt)
    assert 0.0 < res.confidence <= 1.0
    assert res.finish_reason == "length" and res.completion_tokens == N


@pytest.fixture
async def full(opened: Opened) -> Opened:
    """The engine with all four tiny adapters resident."""
    engine, paths = opened
    await load(engine, paths, *paths)
    return opened


def test_the_adapters_change_the_outputs(expect: Expect) -> None:
    # Otherwise equality with the oracle would prove nothing about the adapters.
    for adapter_id, prompt in ROWS:
        if adapter_id is not None:
            assert expect(adapter_id, prompt, N) != expect(None, prompt, N), adapter_id


async def test_greedy_outputs_equal_peft_for_every_adapter_and_the_base(
    full: Opened, expect: Expect
) -> None:
    engine, _ = full
    for r, (adapter_id, prompt) in zip(_requests(), ROWS, strict=True):
        res = await engine.generate(r)
        _check(res, adapter_id, prompt, expect)
        assert res.request_id == r.request_id
        assert res.prompt_tokens == engine.count_tokens(prompt)


async def test_concurrent_mixed_adapter_requests_each_equal_their_solo_output(
    full: Opened, expect: Expect
) -> None:
    engine, _ = full
    together = await asyncio.gather(*(engine.generate(r) for r in _requests()))
    for res, (adapter_id, prompt) in zip(together, ROWS, strict=True):
        _check(res, adapter_id, prompt, expect)


async def test_generate_batch_rows_each_equal_their_solo_output(
    full: Opened, expect: Expect
) -> None:
    engine, _ = full
    results = await engine.generate_batch(_requests())
    assert [r.request_id for r in results] == [r.request_id for r in _requests()]
    for res, (adapter_id, prompt) in zip(results, ROWS, strict=True):
        _check(res, adapter_id, prompt, expect)
    assert await engine.generate_batch([]) == []


async def test_base_requests_need_no_adapter(opened: Opened, expect: Expect) -> None:
    engine, _ = opened
    res = await engine.generate(req(None, PROMPTS[1], N))
    assert res.adapter_id is None and res.text == expect(None, PROMPTS[1], N)


@pytest.mark.parametrize("adapter_id", [None, "gamma@v1"])
@pytest.mark.parametrize("with_stop", [False, True], ids=["no-stop", "stop"])
async def test_streamed_pieces_concatenate_to_the_generated_text(
    full: Opened, adapter_id: str | None, with_stop: bool
) -> None:
    engine, _ = full
    whole = await engine.generate(req(adapter_id, PROMPTS[2], 24))
    stop = (whole.text[5:8],) if with_stop else ()
    assert all(stop)
    chunks = await stream_all(engine, req(adapter_id, PROMPTS[2], 24, stop=stop))
    final = chunks[-1].result
    assert final is not None and all(c.result is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == final.text
    if with_stop:
        assert final.text == whole.text[: whole.text.find(stop[0])]
        assert final.finish_reason == "stop"
    else:
        assert final.text == whole.text and final.finish_reason == whole.finish_reason
        assert len(chunks) > 2  # pieces come as they are generated, not all at the end
    assert final.completion_tokens <= whole.completion_tokens


async def test_a_stop_sequence_trims_the_text_and_stops(full: Opened) -> None:
    engine, _ = full
    whole = await engine.generate(req("delta@v1", max_tokens=20))
    stop = whole.text[6:8]
    cut = whole.text.find(stop)
    assert stop and cut > 0
    res = await engine.generate(req("delta@v1", max_tokens=20, stop=("no-such-text", stop)))
    assert res.text == whole.text[:cut]
    assert res.finish_reason == "stop"
    assert res.completion_tokens < whole.completion_tokens


SAMPLED = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.9}


async def test_seeded_sampling_is_repeatable_and_the_seed_matters(full: Opened) -> None:
    engine, _ = full
    a = await engine.generate(req("beta@v1", seed=42, **SAMPLED))
    b, *_ = await asyncio.gather(
        engine.generate(req("beta@v1", seed=42, **SAMPLED)),
        *(engine.generate(req("alpha@v1", p, seed=i, **SAMPLED)) for i, p in enumerate(PROMPTS)),
    )
    assert a.text == b.text
    texts = {(await engine.generate(req("beta@v1", seed=s, **SAMPLED))).text for s in range(5)}
    assert len(texts) > 1  # sampling is not secretly greedy


async def test_text_helpers_agree_with_generation(opened: Opened, oracle: Oracle) -> None:
    engine, paths = opened
    await load(engine, paths, "alpha@v1")
    for prompt in PROMPTS:
        ids = engine.encode(prompt)
        assert ids == oracle.tokenizer(prompt)["input_ids"]  # the base's own tokenizer
        assert engine.count_tokens(prompt) == len(ids)
    plain = await engine.generate(req("alpha@v1", PROMPTS[2]))
    pre = replace(req("alpha@v1", PROMPTS[2]), prompt_ids=tuple(engine.encode(PROMPTS[2])))
    assert (await engine.generate(pre)).text == plain.text  # prompt_ids: what encode gives
    messages = [{"role": "system", "content": "triage"},
                {"role": "user", "content": "printer jammed"}]
    chat = engine.chat_prompt(messages)
    assert isinstance(chat, str) and "printer jammed" in chat
    res = await engine.generate(req(None, chat, 4))
    assert res.prompt_tokens == engine.count_tokens(chat) == len(engine.encode(chat))


async def test_base_info_names_the_pinned_base(opened: Opened, tiny: TinyHome) -> None:
    engine, _ = opened
    lock = read_lock(tiny.home)
    assert engine.base.name == lock.name == "tiny-llama"
    assert engine.base.sha256 == lock.sha256
    assert engine.base.max_context == 96


async def test_requests_for_the_base_work_before_and_after_adapters_come_and_go(
    open_engine: Open, expect: Expect
) -> None:
    async with open_engine(max_adapters=1) as (engine, paths):
        want = expect(None, PROMPTS[3], N)
        assert (await engine.generate(req(None, PROMPTS[3], N))).text == want
        await load(engine, paths, "delta@v1")
        assert (await engine.generate(req(None, PROMPTS[3], N))).text == want
        await engine.unload_adapter("delta@v1")
        assert (await engine.generate(req(None, PROMPTS[3], N))).text == want
