"""The engine interface: one pinned base model, resident LoRA adapters, batched generation.

Implementations: :mod:`lora_router.adapters.peft_engine` (embedded, torch + transformers, LoRA
applied from per-layer slot tensors, peft used for the adapter format and as the oracle),
:mod:`lora_router.adapters.vllm_engine` (vLLM's ``AsyncLLM`` in-process on a CUDA host; the
optional ``vllm`` extra) and :mod:`lora_router.adapters.remote` (backend servers over HTTP).
The gateway depends on this module only. Every implementation runs the one contract suite in
``tests/engine/contract/`` (greedy outputs equal peft's).
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lora_router.ground.errors import InvalidRequest

FinishReason = Literal["stop", "length"]
MAX_STOPS = 8  # stop sequences per request


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding controls. ``temperature == 0`` is greedy; ``seed`` makes sampling repeatable."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


def check_sampling(p: SamplingParams) -> None:
    """Every engine's rules for sampling values (``InvalidRequest``), checked before any work
    (and, for a remote engine, before any backend sees the request)."""
    if not isinstance(p.max_tokens, int) or p.max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be a positive integer, got {p.max_tokens!r}")
    if not (math.isfinite(p.temperature) and 0.0 <= p.temperature <= 100.0):
        raise InvalidRequest(f"temperature must be in [0, 100], got {p.temperature!r}")
    if not (math.isfinite(p.top_p) and 0.0 < p.top_p <= 1.0):
        raise InvalidRequest(f"top_p must be in (0, 1], got {p.top_p!r}")
    if p.seed is not None and not (isinstance(p.seed, int) and 0 <= p.seed < 2**63):
        raise InvalidRequest(f"seed must be an integer in [0, 2**63), got {p.seed!r}")
    if len(p.stop) > MAX_STOPS or any(not isinstance(s, str) or not s for s in p.stop):
        raise InvalidRequest(f"stop must be at most {MAX_STOPS} non-empty strings")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One completion. ``adapter_id`` None means the plain base model. ``prompt_ids``, when
    given, are ``encode(prompt)`` computed by the caller (off its event loop)."""

    request_id: str
    prompt: str
    adapter_id: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    request_id: str
    adapter_id: str | None
    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float  # mean probability of the generated tokens, in [0, 1]
    finish_reason: FinishReason
    # the request's share of the engine's time: each forward pass (prefill or decode step,
    # sampling included) split equally among the rows it computed; 0.0 when not measured
    engine_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A streamed piece of text; the last chunk carries ``result`` (and empty or final text)."""

    text: str
    result: GenerationResult | None = None


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    adapter_id: str
    path: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    slot: int
    size_bytes: int
    load_ms: float


@dataclass(frozen=True, slots=True)
class BaseInfo:
    name: str  # the name clients may use as ``model`` to reach the plain base
    sha256: str  # pinned content hash (weights + tokenizer files)
    max_context: int
    vocab_size: int
    device: str
    dtype: str


class Engine(abc.ABC):
    """Serves generation for a pinned base and the adapters resident in it.

    Contract:
    - ``load_adapter`` validates before it touches the engine: an adapter whose declared
      base, target modules or shapes don't fit raises ``AdapterIncompatible`` and leaves
      nothing half-loaded. Loading an id that is already resident returns its info.
      ``NoFreeSlot`` when every slot is taken.
    - ``unload_adapter`` stops admitting requests for the adapter, waits (up to
      ``drain_timeout_s``) for its in-flight requests, then frees its slot. Unknown ids are
      a no-op. Requests for other adapters are never affected.
    - ``generate`` / ``stream`` admit one request into the batcher; concurrent requests for
      different adapters share one forward pass. They raise ``InvalidRequest`` (prompt too
      long for the context window, bad sampling values), ``AdapterNotResident``,
      ``EngineOverloaded`` (queue full) or ``EngineError``; never hang past the engine's
      request timeout (``EngineTimeout``).
    - ``generate_batch`` runs the given requests together, bypassing the batcher (benches,
      tests, offline evaluation).
    """

    base: BaseInfo

    @abc.abstractmethod
    async def start(self) -> None:
        """Start worker threads/tasks. Called once, inside the serving event loop."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Fail queued requests with ``EngineError`` and stop workers."""

    @abc.abstractmethod
    async def load_adapter(self, adapter_id: str, path: Path) -> AdapterInfo: ...

    @abc.abstractmethod
    async def unload_adapter(self, adapter_id: str, drain_timeout_s: float = 30.0) -> None: ...

    @abc.abstractmethod
    def resident_adapters(self) -> dict[str, AdapterInfo]: ...

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]: ...

    @abc.abstractmethod
    async def generate_batch(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult]: ...

    def backends(self) -> list[dict[str, Any]] | None:
        """An out-of-process engine's backends (``url``, ``up``, ``reason``, ``in_flight``,
        ``adapters``), for readiness; None for an engine that runs in this process."""
        return None

    def saturated(self) -> bool:
        """A cheap, lock-free hint: True when a new request would wait for batch room.

        For optional work (shadow copies), which is dropped rather than queued behind the
        requests that clients wait for. Default: never saturated.
        """
        return False

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids ``generate`` would compute for ``text``. Thread-safe and releases the
        GIL: long text is meant to be encoded on a worker thread, not the event loop."""

    @abc.abstractmethod
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat messages into the prompt text the base expects."""
