"""Per-request decoding state: token choice, EOS, max_tokens, stop sequences, streamed text.

A :class:`Row` is one request inside a batch. It owns its ``torch.Generator`` (seeded rows
draw the same numbers whatever their batch mates), its generated ids and the text it has
streamed so far; the streamed pieces always concatenate to the final text, because a piece
is only released once no stop sequence can still begin inside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lora_router.adapters.engine import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from lora_router.ground.errors import EngineError, LoraRouterError

log = logging.getLogger(__name__)


class RowSink(Protocol):
    """Where a row reports: streamed text pieces, then exactly one result or error."""

    def cancelled(self) -> bool: ...

    def on_text(self, piece: str) -> None: ...

    def on_done(self, outcome: GenerationResult | LoraRouterError) -> None: ...


class Codec:
    """Thread-safe text <-> ids: a private copy of the fast tokenizer's backend.

    The Hugging Face wrapper mutates padding/truncation state per call, which is unsafe when
    the event loop encodes while the worker decodes; the bare ``tokenizers.Tokenizer`` is not.
    Slow tokenizers fall back to the wrapper under a lock.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._hf = tokenizer
        self._lock = threading.Lock()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_padding()
            self._fast.no_truncation()

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:  # encode_batch releases the GIL (encode holds it)
            return list(self._fast.encode_batch([text], add_special_tokens=True)[0].ids)
        with self._lock:
            return list(self._hf(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(list(ids), skip_special_tokens=True))
        with self._lock:
            return str(
                self._hf.decode(
                    list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
            )


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop sequence."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if stop.startswith(text[-k:]):
                hold = k
                break
    return hold


@dataclass(eq=False)
class Row:
    """One request in a batch; mutated only by the worker thread."""

    request: GenerationRequest
    slot: int
    prompt_ids: list[int]
    sink: RowSink
    streaming: bool = False
    generator: torch.Generator | None = None
    out_ids: list[int] = field(default_factory=list)
    prob_sum: float = 0.0
    n_chosen: int = 0
    text: str = ""
    emitted: int = 0
    finish: FinishReason | None = None
    reported: bool = False
    retired: bool = False  # the batcher no longer counts it in flight
    engine_s: float = 0.0  # its share of the forward passes it was in (Decoder._charge)

    @property
    def done(self) -> bool:
        return self.finish is not None or self.reported or self.sink.cancelled()

    def accept(self, token: int, prob: float, eos_ids: frozenset[int], codec: Codec) -> None:
        """Take the chosen token: EOS, stop sequences and max_tokens decide when to finish."""
        self.prob_sum += prob
        self.n_chosen += 1
        if token in eos_ids:
            self.finish = "stop"
        else:
            self.out_ids.append(token)
            if self.request.params.stop or self.streaming:
                self._update_text(codec)
            if self.finish is None and len(self.out_ids) >= self.request.params.max_tokens:
                self.finish = "length"
        if self.finish is not None and self.streaming and len(self.text) > self.emitted:
            self._emit(len(self.text))

    def _update_text(self, codec: Codec) -> None:
        stops = self.request.params.stop
        text = codec.decode(self.out_ids)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.finish = text[:cut], "stop"
            return
        self.text = text
        if self.streaming:
            safe = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence may still change
            safe = min(safe, len(text) - _held_back(text, stops))
            if safe > self.emitted:
                self._emit(safe)

    def _emit(self, upto: int) -> None:
        self.sink.on_text(self.text[self.emitted : upto])
        self.emitted = upto

    def result(self, codec: Codec) -> GenerationResult:
        if not (self.request.params.stop or self.streaming):
            self.text = codec.decode(self.out_ids)
        return GenerationResult(
            request_id=self.request.request_id,
            adapter_id=self.request.adapter_id,
            text=self.text,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.out_ids),
            confidence=self.prob_sum / self.n_chosen if self.n_chosen else 0.0,
            finish_reason=self.finish or "length",
            engine_s=self.engine_s,
        )

    def report(self, outcome: GenerationResult | LoraRouterError) -> None:
        if not self.reported:
            self.reported = True
            self.sink.on_done(outcome)


# Below this temperature a row is decoded greedily: the limit of softmax(logits / T) as T -> 0,
# and the epsilon vLLM uses. Above it the logits are shifted by their max before dividing, so
# no finite logits overflow however small T is.
GREEDY_BELOW_TEMPERATURE = 1e-5


def fail_alone(row: Row, why: str, exc: BaseException | None = None) -> None:
    """Fail one row (its request gets ``EngineError``); its batch mates carry on."""
    log.warning("request %s failed alone: %s", row.request.request_id, why, exc_info=exc)
    row.report(EngineError(f"{why}; only this request failed"))


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_p, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly above each token
    drop = before >= top_p
    drop[0] = False  # the most likely token stays, even for a top_p that is 0 in float32
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_p)


def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from softmax(logits / T) within the top-p nucleus.

    ``logits [V]`` has a finite logsumexp (no NaN or +inf, not all -inf). Shifted by their
    max, the scaled logits lie in [-inf, 0] with the top one at 0, so the softmax is finite
    and sums to at least 1 for every T > 0.
    """
    z = (logits - logits.max()) / params.temperature
    probs = torch.softmax(z, dim=-1)
    if params.top_p < 1.0:
        probs = _top_p_filter(probs, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def sample_tokens(rows: Sequence[Row], logits: torch.Tensor) -> tuple[list[int], list[float]]:
    """Choose one token per row from ``logits [B, V]``; return tokens and their probabilities.

    Rows are independent: a row whose logits are not all finite, or whose draw raises, is
    failed alone (:func:`fail_alone`; it is then ``done`` and its token is a placeholder),
    and no row's sampling values can make another row's choice differ. The probability
    reported (for confidence) is the model's, at temperature 1.
    """
    logits = logits.float()
    tokens = torch.argmax(logits, dim=-1)
    lse = torch.logsumexp(logits, dim=-1)  # NaN or +inf if any logit is; -inf if all are
    finite = torch.isfinite(lse).tolist()
    for i, row in enumerate(rows):
        if row.done:
            continue
        if not finite[i]:
            fail_alone(row, "the model produced non-finite scores (inf/NaN) for this request")
            continue
        p = row.request.params
        if p.temperature >= GREEDY_BELOW_TEMPERATURE:
            try:
                tokens[i] = _draw(logits[i], p, row.generator)
            except Exception as exc:  # attributable to this row alone
                fail_alone(row, f"sampling failed: {exc}", exc)
    # p(token) = exp(logit - logsumexp): no [B, V] softmax written for the greedy rows
    chosen = torch.exp(logits.gather(1, tokens[:, None]).squeeze(1) - lse)
    return tokens.tolist(), chosen.nan_to_num(0.0).tolist()
