"""The sampler, row by row: degenerate sampling values never produce inf/NaN, and a row that
cannot be sampled fails alone while its batch mates get exactly what they would get alone."""

from __future__ import annotations

import math

import torch

from lora_router.adapters.decoding import Row, sample_tokens
from lora_router.adapters.engine import GenerationRequest, GenerationResult, SamplingParams
from lora_router.ground.errors import EngineError, LoraRouterError

VOCAB = 64


class Outcomes:
    """A row sink that keeps what it is told."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.outcomes: list[GenerationResult | LoraRouterError] = []

    def cancelled(self) -> bool:
        return False

    def on_text(self, piece: str) -> None:
        self.pieces.append(piece)

    def on_done(self, outcome: GenerationResult | LoraRouterError) -> None:
        self.outcomes.append(outcome)


def _row(params: SamplingParams, rid: str = "r") -> Row:
    gen = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
    return Row(
        request=GenerationRequest(rid, "prompt", None, params),
        slot=0,
        prompt_ids=[1],
        sink=Outcomes(),
        generator=gen,
    )


def _logits(n: int) -> torch.Tensor:
    return torch.randn(n, VOCAB, generator=torch.Generator().manual_seed(0)) * 3


def _outcomes(row: Row) -> list[GenerationResult | LoraRouterError]:
    assert isinstance(row.sink, Outcomes)
    return row.sink.outcomes


def _alone(params: SamplingParams, logits_row: torch.Tensor) -> int:
    tokens, _ = sample_tokens([_row(params)], logits_row[None, :].clone())
    return tokens[0]


GREEDY_EQUIVALENT = [
    SamplingParams(temperature=1e-30),
    SamplingParams(temperature=1e-40),
    SamplingParams(temperature=5e-324),  # the smallest positive double: 0 in float32
    SamplingParams(temperature=1.0, top_p=1e-50),  # rounds to 0 in float32
    SamplingParams(temperature=1.0, top_p=5e-324),
    SamplingParams(temperature=1e-30, top_p=1e-30),
]


def test_degenerate_temperature_and_top_p_are_greedy_and_leave_mates_alone() -> None:
    sampled = SamplingParams(temperature=0.8, top_p=0.9, seed=7)
    params = [SamplingParams(), *GREEDY_EQUIVALENT, sampled, SamplingParams(temperature=1e-3)]
    logits = _logits(len(params))
    logits[-1] *= 1e36  # huge but finite logits at a small temperature: divided, they overflow
    rows = [_row(p, f"r{i}") for i, p in enumerate(params)]

    tokens, probs = sample_tokens(rows, logits.clone())

    greedy = logits.argmax(-1).tolist()
    for i, p in enumerate(params):
        if p is not sampled:
            assert tokens[i] == greedy[i], f"row {i} ({p}) is not greedy"
    assert tokens[params.index(sampled)] == _alone(sampled, logits[params.index(sampled)])
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in probs)
    assert all(not _outcomes(r) and not r.done for r in rows)


def test_a_row_with_non_finite_logits_fails_alone() -> None:
    sampled = SamplingParams(temperature=1.0, top_p=0.95, seed=11)
    params = [
        SamplingParams(),
        SamplingParams(temperature=1.0, seed=3),  # NaN logits, sampled
        sampled,
        SamplingParams(),  # +inf logits, greedy
        SamplingParams(temperature=1e-40),
    ]
    logits = _logits(len(params))
    clean = logits.clone()
    logits[1, 5] = float("nan")
    logits[3, 9] = float("inf")
    rows = [_row(p, f"r{i}") for i, p in enumerate(params)]

    tokens, _ = sample_tokens(rows, logits)

    for bad in (1, 3):
        [err] = _outcomes(rows[bad])
        assert isinstance(err, EngineError) and "non-finite" in err.message
        assert rows[bad].done
    greedy = clean.argmax(-1).tolist()
    assert tokens[0] == greedy[0] and tokens[4] == greedy[4]
    assert tokens[2] == _alone(sampled, clean[2])
    assert all(not _outcomes(rows[i]) for i in (0, 2, 4))
