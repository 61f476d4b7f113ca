"""The static-shape decode path (what CUDA graphs replay), run eagerly on the CPU.

Capture itself needs a GPU; everything around it does not: the preallocated cache, rows
placed in lines and compacted when others leave, per-row positions and slots as device
tensors, padding rows up to a batch bucket, the mask over a length bucket and the fixed-shape
LoRA path. These tests drive that path through the real engine (``static_decode=True`` on
CPU) and hold it to the peft oracle and to the eager engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from lora_router.adapters.adapter_files import linear_shapes
from lora_router.adapters.batcher import Decoder
from lora_router.adapters.decoding import Codec, Row
from lora_router.adapters.engine import GenerationRequest, GenerationResult, SamplingParams
from lora_router.adapters.packing import read_packed
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.adapters.slots import SlotBank
from lora_router.adapters.static_decode import StaticBatch, StaticDecoder
from lora_router.ground.errors import EngineError, InvalidRequest
from tests.engine.conftest import CONFIG, started
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.test_row_isolation import BLOWUP, blowup_dir  # noqa: F401 (a fixture)
from tests.engine.tiny import TinyHome, load_base

STATIC = replace(CONFIG, static_decode=True)
MIXED: list[tuple[str | None, str, int]] = [
    (None, PROMPTS[0], 12),
    ("alpha@v1", PROMPTS[1], 3),
    ("beta@v1", PROMPTS[2], 12),
    ("gamma@v1", PROMPTS[3], 7),
    ("delta@v1", PROMPTS[0], 1),
    ("beta@v1", PROMPTS[3], 9),
    (None, PROMPTS[2], 5),
    ("alpha@v1", PROMPTS[0], 12),
]


def _req(adapter_id: str | None, prompt: str, rid: str, **params: Any) -> GenerationRequest:
    return GenerationRequest(rid, prompt, adapter_id, SamplingParams(**params))


def _mixed() -> list[GenerationRequest]:
    return [_req(a, p, f"r{i}", max_tokens=n) for i, (a, p, n) in enumerate(MIXED)]


@pytest.fixture
async def static_engine(tiny: TinyHome) -> AsyncIterator[EmbeddedEngine]:
    e = await started(tiny, STATIC)
    yield e
    await e.close()


async def test_static_engine_decodes_mixed_rows_like_peft_alone(
    static_engine: EmbeddedEngine, oracle: Oracle
) -> None:
    assert static_engine.decode_mode == "static"  # the static path, not the eager one
    results = await static_engine.generate_batch(_mixed())
    for (adapter_id, prompt, n), res in zip(MIXED, results, strict=True):
        assert res.text == oracle.greedy(adapter_id, prompt, n), (adapter_id, prompt, n)
        assert res.completion_tokens == n


async def test_static_and_eager_engines_agree_token_for_token(
    static_engine: EmbeddedEngine, engine: EmbeddedEngine
) -> None:
    # rows of different lengths leave at different steps: lines are compacted as they go
    static, eager = await asyncio.gather(
        asyncio.gather(*(static_engine.generate(r) for r in _mixed())),
        asyncio.gather(*(engine.generate(r) for r in _mixed())),
    )
    for s, e in zip(static, eager, strict=True):
        assert s.text == e.text and s.completion_tokens == e.completion_tokens
        # the chosen tokens' probabilities come from the logits: equal up to float order
        assert s.confidence == pytest.approx(e.confidence, rel=1e-5)


async def test_rows_join_a_running_static_batch_and_cross_length_buckets(
    static_engine: EmbeddedEngine, oracle: Oracle
) -> None:
    stream = static_engine.stream(_req("alpha@v1", PROMPTS[3], "long", max_tokens=70))
    first = await stream.__anext__()  # decoding now, in line 0
    joiners = [_req(a, p, f"j{i}", max_tokens=n) for i, (a, p, n) in enumerate(MIXED)]
    joined = await asyncio.gather(*(static_engine.generate(r) for r in joiners))
    rest = [c async for c in stream]
    assert len(rest) > 3  # the long row outlived every joiner
    # ~10 prompt tokens + 70 generated: the steps crossed from the 64- to the 96-column bucket
    text = first.text + "".join(c.text for c in rest)
    assert text == oracle.greedy("alpha@v1", PROMPTS[3], 70)
    for (adapter_id, prompt, n), res in zip(MIXED, joined, strict=True):
        assert res.text == oracle.greedy(adapter_id, prompt, n)


async def test_static_decoding_caps_the_context_window(tiny: TinyHome) -> None:
    e = await started(tiny, replace(STATIC, static_max_len=40), load=False)
    try:
        assert e.base.max_context == 40
        with pytest.raises(InvalidRequest):
            await e.generate(_req(None, PROMPTS[2], "long", max_tokens=39))
        res = await e.generate(_req(None, PROMPTS[0], "fits", max_tokens=20))
        assert res.completion_tokens == 20
    finally:
        await e.close()


async def test_a_row_that_cannot_be_decoded_fails_alone_on_the_static_path(
    tiny: TinyHome, oracle: Oracle, blowup_dir: Path  # noqa: F811
) -> None:
    e = await started(tiny, replace(STATIC, max_adapters=6), load=False)
    try:
        for a in ("alpha@v1", "beta@v1"):
            await e.load_adapter(a, tiny.home.adapter_dir(a))
        await e.load_adapter(BLOWUP, blowup_dir)  # its x @ A overflows for every row
        reqs = [
            _req("beta@v1", PROMPTS[2], "ok-beta", max_tokens=6),
            _req(BLOWUP, PROMPTS[1], "bad", max_tokens=4),
            _req(None, PROMPTS[1], "ok-base", max_tokens=9),
            _req("alpha@v1", PROMPTS[0], "ok-alpha", max_tokens=3),
        ]
        results = await asyncio.gather(*(e.generate(r) for r in reqs), return_exceptions=True)
        for r, res in zip(reqs, results, strict=True):
            if r.adapter_id == BLOWUP:
                assert isinstance(res, EngineError) and "non-finite" in res.message, res
            else:
                assert isinstance(res, GenerationResult), f"{r.request_id}: {res!r}"
                assert res.text == oracle.greedy(r.adapter_id, r.prompt, r.params.max_tokens)
    finally:
        await e.close()


# -- the pieces, on a decoder built by hand -------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.outcome: object = None

    def cancelled(self) -> bool:
        return False

    def on_text(self, piece: str) -> None:
        pass

    def on_done(self, outcome: object) -> None:
        self.outcome = outcome


@pytest.fixture
def loop(tiny: TinyHome) -> StaticDecoder:
    model = load_base(tiny.home.base_dir)
    shapes = linear_shapes(model)
    bank = SlotBank(model, num_slots=4, max_rank=8, strategy="segment")
    for a in tiny.adapter_ids:
        bank.install(a, read_packed(tiny.home.adapter_dir(a), shapes, 8, torch.device("cpu")))
    tok = AutoTokenizer.from_pretrained(tiny.home.base_dir)
    decoder = Decoder(model, Codec(tok), bank, frozenset({tok.eos_token_id}), tok.pad_token_id)
    static = StaticDecoder(decoder, max_rows=8, max_len=96, graphs=True)
    with torch.inference_mode():
        static.prepare()
    assert not static.graphs  # no CUDA here: the same steps run eagerly
    return static


def _rows(loop: StaticDecoder, specs: list[tuple[int, str]], n: int = 30) -> list[Row]:
    return [
        Row(_req(None, p, f"x{i}", max_tokens=n), slot, loop.eager.codec.encode(p), _Sink())
        for i, (slot, p) in enumerate(specs)
    ]


@torch.inference_mode()
def test_prefilled_rows_are_placed_from_column_zero(loop: StaticDecoder) -> None:
    new = loop.prefill(_rows(loop, [(0, PROMPTS[0]), (2, PROMPTS[2]), (1, PROMPTS[3])]))
    batch = loop.merge(None, new)
    assert batch is not None and loop.kv is not None
    width = new.mask.shape[1]
    lengths = new.next_pos.tolist()
    assert batch.pos == lengths and len(set(lengths)) > 1  # left padding differed per row
    for li, layer in enumerate(new.cache.layers):
        for row, m in enumerate(lengths):
            assert torch.equal(loop.kv.k[li][row, :, :m], layer.keys[row, :, width - m :])
            assert torch.equal(loop.kv.v[li][row, :, :m], layer.values[row, :, width - m :])


@torch.inference_mode()
def test_a_step_fills_row_inputs_and_pads_to_the_batch_bucket(loop: StaticDecoder) -> None:
    rows = _rows(loop, [(0, PROMPTS[0]), (3, PROMPTS[1]), (1, PROMPTS[2])])
    batch = loop.merge(None, loop.prefill(rows))
    assert batch is not None
    last, pos, slots = list(batch.last), list(batch.pos), [r.slot for r in batch.rows]
    loop.step(batch)
    key = loop.buckets.key(3, max(pos) + 1, True)
    assert key.batch == 4  # three rows, padded to the bucket of four
    pad = loop.eager.pad_id
    assert loop.io[:, :4].tolist() == [[*last, pad], [*pos, 0], [*slots, 0]]
    assert batch.pos == [p + 1 for p in pos]
    assert all(len(r.out_ids) == 2 for r in batch.rows)


@torch.inference_mode()
def test_leaving_rows_are_replaced_by_the_last_lines(loop: StaticDecoder) -> None:
    rows = _rows(loop, [(0, PROMPTS[0]), (2, PROMPTS[2]), (1, PROMPTS[3]), (4, PROMPTS[1])])
    batch = loop.merge(None, loop.prefill(rows))
    assert batch is not None and loop.kv is not None
    loop.step(batch)
    before = [k.clone() for k in loop.kv.k]
    snapshot = StaticBatch(list(batch.rows), list(batch.pos), list(batch.last))
    snapshot.rows[1].finish = "stop"  # the row in line 1 leaves
    pruned = loop.prune(batch)
    assert pruned is not None
    assert pruned.rows == [snapshot.rows[i] for i in (0, 3, 2)]
    assert pruned.pos == [snapshot.pos[i] for i in (0, 3, 2)]
    assert pruned.last == [snapshot.last[i] for i in (0, 3, 2)]
    m = snapshot.pos[3]
    for li, k in enumerate(loop.kv.k):
        assert torch.equal(k[1, :, :m], before[li][3, :, :m])  # line 3 moved into line 1
        assert torch.equal(k[0], before[li][0]) and torch.equal(k[2], before[li][2])
    for r in rows:
        r.finish = "stop"
    assert loop.prune(pruned) is None
