"""One request can never fail the requests batched with it, even ones already mid-decode.

Degenerate but valid sampling values (a temperature or top_p too small for float32) decode
greedily; a row that still cannot be decoded (an adapter whose finite weights overflow to
inf/NaN) fails alone, under every mixing strategy, while its batch mates finish with exactly
the output they would have had alone.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_router.adapters.adapter_files import WEIGHTS_FILE
from lora_router.adapters.engine import GenerationRequest, GenerationResult, SamplingParams
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.ground.errors import EngineError
from tests.engine.conftest import CONFIG, started
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome

BLOWUP = "blowup@v1"


def _req(
    adapter_id: str | None, prompt: str, rid: str, **params: object
) -> GenerationRequest:
    return GenerationRequest(rid, prompt, adapter_id, SamplingParams(**params))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def blowup_dir(tiny: TinyHome, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``alpha@v1`` with finite weights so large that its rows overflow to inf/NaN."""
    out = tmp_path_factory.mktemp("blowup") / BLOWUP
    shutil.copytree(tiny.home.adapter_dir("alpha@v1"), out)
    tensors = load_file(str(out / WEIGHTS_FILE))
    # |lora_A| ~ 0.12: scaled to ~2.5e38 (finite) any row's x @ A overflows, not just this
    # adapter's rows, which is what a mixing strategy must not let leak into other rows
    scale = {True: 2e39, False: 1e37}
    scaled = {k: (t.double() * scale[".lora_A" in k]).float() for k, t in tensors.items()}
    assert all(torch.isfinite(t).all() for t in scaled.values())
    save_file(scaled, str(out / WEIGHTS_FILE))
    return out


async def _mid_decode(
    engine: EmbeddedEngine, joiners: list[GenerationRequest]
) -> tuple[str, int, list[GenerationResult | BaseException]]:
    """Start a long greedy stream, let ``joiners`` join it mid-decode, then finish it.

    Returns the stream's text, how many chunks it sent after the joiners were answered, and
    each joiner's result or error.
    """
    stream = engine.stream(_req("alpha@v1", PROMPTS[3], "long", max_tokens=60))
    first = await stream.__anext__()  # the long request is decoding now
    assert first.result is None
    results = await asyncio.gather(*(engine.generate(r) for r in joiners), return_exceptions=True)
    rest = [c async for c in stream]
    return first.text + "".join(c.text for c in rest), len(rest), list(results)


async def test_degenerate_sampling_values_joining_mid_decode_decode_greedily(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, oracle: Oracle
) -> None:
    engine = roomy_engine
    for a in ("alpha@v1", "beta@v1"):
        await engine.load_adapter(a, tiny.home.adapter_dir(a))
    joiners = [
        _req("beta@v1", PROMPTS[2], "ok-beta", max_tokens=6),
        _req(None, PROMPTS[1], "tiny-temp", max_tokens=9, temperature=1e-40),
        _req("alpha@v1", PROMPTS[0], "tiny-top-p", max_tokens=5, temperature=1.0, top_p=1e-50),
        _req(None, PROMPTS[0], "both", max_tokens=4, temperature=5e-324, top_p=5e-324),
        _req("beta@v1", PROMPTS[1], "as-filed", max_tokens=7, temperature=1e-30, top_p=1e-30),
    ]
    long_text, after, results = await _mid_decode(engine, joiners)

    assert after > 3  # the long request was still decoding when the joiners were answered
    assert long_text == oracle.greedy("alpha@v1", PROMPTS[3], 60)
    for r, res in zip(joiners, results, strict=True):
        assert isinstance(res, GenerationResult), f"{r.request_id}: {res!r}"
        assert res.text == oracle.greedy(r.adapter_id, r.prompt, r.params.max_tokens)


@pytest.mark.parametrize("strategy", ["segment", "cat", "bmm"])
async def test_a_row_that_cannot_be_decoded_fails_alone_mid_decode(
    tiny: TinyHome, oracle: Oracle, blowup_dir: Path, strategy: str
) -> None:
    engine = await started(
        tiny, replace(CONFIG, max_adapters=6, mixed_strategy=strategy), load=False  # type: ignore[arg-type]
    )
    try:
        for a in ("alpha@v1", "beta@v1"):
            await engine.load_adapter(a, tiny.home.adapter_dir(a))
        await engine.load_adapter(BLOWUP, blowup_dir)
        joiners = [
            _req("beta@v1", PROMPTS[2], "ok-beta", max_tokens=6),
            _req(BLOWUP, PROMPTS[0], "bad-sampled", max_tokens=8, temperature=1.0, seed=1),
            _req(None, PROMPTS[1], "ok-base", max_tokens=9),
            _req(BLOWUP, PROMPTS[1], "bad-greedy", max_tokens=4),
            _req("alpha@v1", PROMPTS[0], "ok-alpha", max_tokens=3),
        ]
        long_text, after, results = await _mid_decode(engine, joiners)

        assert after > 3
        assert long_text == oracle.greedy("alpha@v1", PROMPTS[3], 60)
        for r, res in zip(joiners, results, strict=True):
            if r.adapter_id == BLOWUP:
                assert isinstance(res, EngineError) and "non-finite" in res.message, res
            else:
                assert isinstance(res, GenerationResult), f"{r.request_id}: {res!r}"
                assert res.text == oracle.greedy(r.adapter_id, r.prompt, r.params.max_tokens)
        # the engine carries on serving
        again = await engine.generate(_req("beta@v1", PROMPTS[0], "after", max_tokens=5))
        assert again.text == oracle.greedy("beta@v1", PROMPTS[0], 5)
    finally:
        await engine.close()
