"""Mixed-adapter batches give every row what peft gives that adapter running alone."""

from __future__ import annotations

import asyncio

import pytest
import torch

from lora_router.adapters.adapter_files import linear_shapes, read_adapter
from lora_router.adapters.engine import GenerationRequest, SamplingParams
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.adapters.slots import SlotBank
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome, load_base

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
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def expected(oracle: Oracle) -> dict[tuple[str | None, str], str]:
    return {row: oracle.greedy(row[0], row[1], MAX_TOKENS) for row in set(ROWS)}


def test_adapters_change_the_output(expected: dict[tuple[str | None, str], str]) -> None:
    # Otherwise the comparisons below would prove nothing.
    assert expected[("alpha@v1", PROMPTS[0])] != expected[(None, PROMPTS[0])]
    assert expected[("delta@v1", PROMPTS[0])] != expected[(None, PROMPTS[0])]
    assert expected[("beta@v1", PROMPTS[2])] != expected[(None, PROMPTS[2])]


@pytest.mark.parametrize(
    ("strategy", "grouped"),
    [("cat", False), ("bmm", False), ("segment", False), ("segment", True)],
)
def test_slot_logits_match_peft_per_row(
    tiny: TinyHome, oracle: Oracle, strategy: str, grouped: bool
) -> None:
    rows = sorted(ROWS, key=lambda r: r[0] or "") if grouped else ROWS
    model = load_base(tiny.home.base_dir)
    shapes = linear_shapes(model)
    bank = SlotBank(model, num_slots=4, max_rank=8, strategy=strategy)  # type: ignore[arg-type]
    slot_of = {
        a: bank.install(a, read_adapter(tiny.home.adapter_dir(a), shapes, 8))
        for a in tiny.adapter_ids
    }
    enc = [oracle.tokenizer(p)["input_ids"] for _, p in rows]
    width = max(map(len, enc))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, width - len(e) :] = torch.tensor(e)
        mask[i, width - len(e) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    plan = bank.make_plan([0 if a is None else slot_of[a] for a, _ in rows])
    assert (plan.runs is not None) == grouped
    bank.use(plan)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    for i, (adapter_id, prompt) in enumerate(rows):
        want = oracle.logits(adapter_id, prompt)
        got = logits[i, width - len(enc[i]) :]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"row {i} {adapter_id}")


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(f"r{i}", prompt, adapter_id, SamplingParams(max_tokens=MAX_TOKENS))
        for i, (adapter_id, prompt) in enumerate(ROWS)
    ]


async def test_generate_batch_rows_match_peft_alone(
    engine: EmbeddedEngine, expected: dict[tuple[str | None, str], str]
) -> None:
    results = await engine.generate_batch(_requests())
    for (adapter_id, prompt), res in zip(ROWS, results, strict=True):
        assert res.adapter_id == adapter_id
        assert res.text == expected[(adapter_id, prompt)], (adapter_id, prompt)
        assert 0.0 < res.confidence <= 1.0
        assert res.prompt_tokens == engine.count_tokens(prompt)


async def test_concurrent_requests_share_batches_and_match_peft(
    engine: EmbeddedEngine, expected: dict[tuple[str | None, str], str]
) -> None:
    results = await asyncio.gather(*(engine.generate(r) for r in _requests()))
    for (adapter_id, prompt), res in zip(ROWS, results, strict=True):
        assert res.text == expected[(adapter_id, prompt)], (adapter_id, prompt)
        assert res.completion_tokens == MAX_TOKENS
        assert res.finish_reason == "length"


def test_cpu_engine_uses_the_segment_strategy(engine: EmbeddedEngine) -> None:
    # Measured fastest on CPU (bench/batching.py, and per-layer CPU-time comparisons).
    assert engine._bank.ctx.strategy == "segment"
