"""Graph keys and buckets, the eager fallback, and (on a CUDA machine only) real capture.

The capture tests are marked ``gpu`` and skipped without CUDA: they are the ones to run on a
GPU machine (``pytest -m gpu tests/engine/test_cuda_graph.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import torch

from lora_router.adapters.cuda_graph import (
    Buckets,
    GraphKey,
    GraphRunner,
    batch_buckets,
    bucket,
    length_buckets,
)
from lora_router.adapters.engine import GenerationRequest, SamplingParams
from tests.engine.conftest import CONFIG, started
from tests.engine.oracle import PROMPTS
from tests.engine.tiny import TinyHome


def test_batch_buckets_bound_the_padding() -> None:
    assert batch_buckets(1) == (1,)
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(12) == (1, 2, 4, 8, 12)
    assert batch_buckets(100) == (1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 100)
    for max_batch in (1, 7, 32, 100, 256):
        buckets = batch_buckets(max_batch)
        for n in range(1, max_batch + 1):
            b = bucket(n, buckets)
            assert n <= b <= max(2 * n, n + 15) and b <= max_batch


def test_length_buckets_are_powers_of_two_up_to_the_cache_length() -> None:
    assert length_buckets(1024) == (64, 128, 256, 512, 1024)
    assert length_buckets(96) == (64, 96)
    assert length_buckets(40) == (40,)
    assert bucket(65, length_buckets(96)) == 96
    assert bucket(64, length_buckets(96)) == 64


def test_a_shape_outside_the_buckets_is_refused() -> None:
    with pytest.raises(ValueError):
        bucket(33, batch_buckets(32))
    with pytest.raises(ValueError):
        bucket(0, batch_buckets(32))


def test_every_key_is_captured_once_largest_first() -> None:
    buckets = Buckets.for_limits(max_batch=16, max_len=256)
    keys = buckets.keys()
    assert len(keys) == len(set(keys)) == 5 * 3 * 2
    assert keys[0] == GraphKey(16, 256, True)
    sizes = [k.batch * k.length for k in keys]
    assert sizes == sorted(sizes, reverse=True)
    assert buckets.key(5, 65, False) == GraphKey(8, 128, False)
    assert buckets.key(5, 65, False) in keys


def test_without_cuda_the_runner_runs_the_step_eagerly() -> None:
    seen: list[GraphKey] = []

    def step(key: GraphKey) -> torch.Tensor:
        seen.append(key)
        return torch.full((key.batch,), float(key.length))

    runner = GraphRunner(step)
    key = GraphKey(4, 64, True)
    assert runner.capture([key], torch.device("cpu")) is False
    assert runner.captured == ()
    assert runner.run(key).tolist() == [64.0] * 4
    assert runner.run(key).tolist() == [64.0] * 4
    assert seen == [key, key]  # each run is a real step: nothing replayed


# -- on a CUDA machine ---------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
async def test_graph_replays_decode_like_the_eager_engine_on_cuda(tiny: TinyHome) -> None:
    gpu = replace(CONFIG, device="cuda", dtype="float32")
    graphs = await started(tiny, gpu)
    eager = await started(tiny, replace(gpu, cuda_graphs=False))
    try:
        assert graphs.decode_mode == "cuda_graphs" and eager.decode_mode == "eager"
        adapters = [None, "alpha@v1", "beta@v1", "gamma@v1", "delta@v1"]
        prompts = [*PROMPTS, PROMPTS[0]]
        reqs = [
            GenerationRequest(f"r{i}", p, a, SamplingParams(max_tokens=6 + 5 * i))
            for i, (a, p) in enumerate(zip(adapters, prompts, strict=True))
        ]
        got = await asyncio.gather(*(graphs.generate(r) for r in reqs))
        want = await asyncio.gather(*(eager.generate(r) for r in reqs))
        assert [g.text for g in got] == [w.text for w in want]
    finally:
        await graphs.close()
        await eager.close()
