"""The embedded engine: a pinned base on torch + transformers, LoRA applied from slot tensors.

Model work runs on one worker thread (:class:`~adapters.batcher.MicroBatcher`); the event
loop only validates, queues and awaits futures, so it stays responsive. peft is used for the
adapter file format (and, in tests, as the correctness oracle), never at serving time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from lora_router.adapters.adapter_files import linear_shapes
from lora_router.adapters.batcher import BatchLimits, DecodeLoop, Decoder, MicroBatcher
from lora_router.adapters.decoding import Codec, Row
from lora_router.adapters.engine import (
    AdapterInfo,
    BaseInfo,
    Engine,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
    check_sampling,
)
from lora_router.adapters.packing import read_packed
from lora_router.adapters.slots import SlotBank, Strategy
from lora_router.adapters.static_decode import StaticDecoder, static_unsupported
from lora_router.ground.errors import (
    AdapterBusy,
    AdapterNotResident,
    ConfigError,
    EngineTimeout,
    InvalidRequest,
    LoraRouterError,
    NoFreeSlot,
)
from lora_router.ground.home import Home
from lora_router.ground.ids import parse_adapter_id
from lora_router.registry.base_pin import verify_base

log = logging.getLogger(__name__)
T = TypeVar("T")
_PREPARE_TIMEOUT_S = 900.0  # allocating the static cache and capturing every CUDA graph


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 32
    batch_wait_ms: float = 2.0
    max_lora_rank: int = 16
    max_adapters: int = 8
    max_queue: int = 1024
    request_timeout_s: float = 60.0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    torch_threads: int | None = None
    mixed_strategy: Strategy = "auto"  # segment on CPU, cat on CUDA (adapters.slots)
    # On CUDA, decode steps replay CUDA graphs over a static cache (adapters.static_decode);
    # ignored on CPU.
    cuda_graphs: bool = True
    # The static-shape decode path: None = on CUDA when cuda_graphs, off on CPU; True on CPU
    # runs the same static steps eagerly (how the tests check them without a GPU).
    static_decode: bool | None = None
    # Static decoding preallocates this many cache columns per batch row; it caps the
    # context window (BaseInfo.max_context) while static decoding is on.
    static_max_len: int = 4096


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA device is available")
    return torch.device(device)


def wants_static(config: EngineConfig, device: torch.device) -> bool:
    if config.static_decode is not None:
        return config.static_decode
    return device.type == "cuda" and config.cuda_graphs


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class _FutureSink:
    """A request awaited as one result."""

    def __init__(self) -> None:
        self.future: Future[GenerationResult] = Future()

    def cancelled(self) -> bool:
        return self.future.cancelled()

    def on_text(self, piece: str) -> None:
        pass

    def on_done(self, outcome: GenerationResult | LoraRouterError) -> None:
        try:
            if isinstance(outcome, GenerationResult):
                self.future.set_result(outcome)
            else:
                self.future.set_exception(outcome)
        except InvalidStateError:  # cancelled by a timeout meanwhile
            pass


class _StreamSink:
    """A streamed request: pieces and the outcome go to an asyncio queue on the caller's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[str | GenerationResult | LoraRouterError] = asyncio.Queue()
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def on_text(self, piece: str) -> None:
        self._put(piece)

    def on_done(self, outcome: GenerationResult | LoraRouterError) -> None:
        self._put(outcome)

    def _put(self, item: str | GenerationResult | LoraRouterError) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self._cancelled = True


class EmbeddedEngine(Engine):
    """:class:`~adapters.engine.Engine` on torch + transformers; see that class for the contract."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, base: BaseInfo, config: EngineConfig
    ) -> None:
        self.base = base
        self.config = config
        self._tokenizer = tokenizer
        self._codec = Codec(tokenizer)
        self._device = next(model.parameters()).device
        self._shapes = linear_shapes(model)
        self._bank = SlotBank(
            model, config.max_adapters, config.max_lora_rank, config.mixed_strategy
        )
        decoder = Decoder(
            model.eval(), self._codec, self._bank, _eos_ids(model, tokenizer), _pad_id(tokenizer)
        )
        self._loop: DecodeLoop[Any] = decoder
        if wants_static(config, self._device):
            if config.static_max_len < 1:
                raise ConfigError(f"static_max_len must be >= 1, got {config.static_max_len}")
            why = static_unsupported(model)
            if why is not None:
                log.warning("static decoding is off for this base: %s", why)
            else:
                self.base = replace(
                    base, max_context=min(base.max_context, config.static_max_len)
                )
                self._loop = StaticDecoder(
                    decoder, config.max_batch_size, self.base.max_context, config.cuda_graphs
                )
        self._batcher: MicroBatcher[Any] = MicroBatcher(
            self._loop,
            BatchLimits(config.max_batch_size, config.batch_wait_ms, config.max_queue),
        )
        self._resident: dict[str, AdapterInfo] = {}
        self._draining: set[str] = set()
        self._lock = threading.Lock()
        self._id_locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_home(cls, home: Home, config: EngineConfig) -> EmbeddedEngine:
        """Verify the pinned base (``BaseModelMismatch`` refuses to start) and load it once."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        lock = verify_base(home)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                home.base_dir, padding_side="left", local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                home.base_dir, dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the base model from {home.base_dir}: {exc}") from exc
        model = model.to(device)  # type: ignore[arg-type]
        base = BaseInfo(
            name=lock.name,
            sha256=lock.sha256,
            max_context=int(getattr(model.config, "max_position_embeddings", 2048)),
            vocab_size=int(model.config.vocab_size),
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
        )
        return cls(model, tokenizer, base, config)

    async def start(self) -> None:
        self._batcher.start()
        await self._await(
            self._batcher.call(self._loop.prepare), _PREPARE_TIMEOUT_S, "preparing to decode"
        )

    @property
    def decode_mode(self) -> str:
        """``eager``, ``static`` (static shapes, run eagerly) or ``cuda_graphs``."""
        if isinstance(self._loop, StaticDecoder):
            return "cuda_graphs" if self._loop.graphs else "static"
        return "eager"

    async def close(self) -> None:
        await asyncio.to_thread(self._batcher.stop, self.config.request_timeout_s)

    # -- adapters --------------------------------------------------------------------------
    def _id_lock(self, adapter_id: str) -> asyncio.Lock:
        return self._id_locks.setdefault(adapter_id, asyncio.Lock())

    async def _await(self, fut: Future[T] | Awaitable[T], timeout_s: float, what: str) -> T:
        aw = asyncio.wrap_future(fut) if isinstance(fut, Future) else fut
        try:
            return await asyncio.wait_for(aw, timeout_s)
        except TimeoutError:
            raise EngineTimeout(f"engine did not finish {what} within {timeout_s:g} s") from None

    async def load_adapter(self, adapter_id: str, path: Path) -> AdapterInfo:
        parse_adapter_id(adapter_id)
        async with self._id_lock(adapter_id):
            with self._lock:
                if adapter_id in self._draining:
                    raise AdapterBusy(f"adapter {adapter_id} is being unloaded; retry afterwards")
                if adapter_id in self._resident:
                    return self._resident[adapter_id]
                if len(self._resident) >= self.config.max_adapters:
                    raise NoFreeSlot(f"all {self.config.max_adapters} adapter slots are taken")
            t0 = time.perf_counter()
            timeout = self.config.request_timeout_s
            # validated, packed into one buffer and (CUDA) uploaded off the worker thread
            weights = await self._await(
                asyncio.to_thread(
                    read_packed, Path(path), self._shapes, self.config.max_lora_rank, self._device
                ),
                timeout,
                f"reading adapter {adapter_id}",
            )
            fut = self._batcher.call(lambda: self._bank.install(adapter_id, weights))
            try:
                slot = await self._await(fut, timeout, f"loading adapter {adapter_id}")
            except EngineTimeout:
                fut.add_done_callback(self._free_abandoned)
                raise
            info = AdapterInfo(
                adapter_id=adapter_id,
                path=Path(path),
                rank=weights.rank,
                alpha=weights.alpha,
                target_modules=weights.target_modules,
                slot=slot,
                size_bytes=weights.size_bytes,
                load_ms=(time.perf_counter() - t0) * 1000.0,
            )
            with self._lock:
                self._resident[adapter_id] = info
            log.info("adapter %s loaded into slot %d in %.1f ms", adapter_id, slot, info.load_ms)
            return info

    def _free_abandoned(self, fut: Future[int]) -> None:
        """An install that finished after its caller timed out must not keep its slot."""
        if not fut.cancelled() and fut.exception() is None:
            slot = fut.result()
            self._batcher.call(lambda: self._bank.free(slot))

    async def unload_adapter(self, adapter_id: str, drain_timeout_s: float = 30.0) -> None:
        async with self._id_lock(adapter_id):
            with self._lock:
                info = self._resident.get(adapter_id)
                if info is None:
                    return
                self._draining.add(adapter_id)  # admission stops here
            try:
                fut = self._batcher.drain(
                    info.slot, drain_timeout_s, lambda: self._bank.free(info.slot)
                )
                await self._await(
                    fut,
                    drain_timeout_s + self.config.request_timeout_s,
                    f"unloading adapter {adapter_id}",
                )
            finally:
                with self._lock:
                    self._resident.pop(adapter_id, None)
                    self._draining.discard(adapter_id)
            log.info("adapter %s unloaded from slot %d", adapter_id, info.slot)

    def resident_adapters(self) -> dict[str, AdapterInfo]:
        with self._lock:
            return {k: v for k, v in self._resident.items() if k not in self._draining}

    # -- generation ------------------------------------------------------------------------
    def _row(self, request: GenerationRequest, sink: Any, streaming: bool = False) -> Row:
        """Validate a request and build its row; the caller queues it under ``self._lock``."""
        p = request.params
        check_sampling(p)
        ids = (list(request.prompt_ids) if request.prompt_ids is not None
               else self._codec.encode(request.prompt))
        if not ids:
            raise InvalidRequest("the prompt is empty (no tokens)")
        if len(ids) + p.max_tokens > self.base.max_context:
            raise InvalidRequest(
                f"prompt ({len(ids)} tokens) + max_tokens ({p.max_tokens}) exceeds the "
                f"context window of {self.base.max_context} tokens"
            )
        slot = 0
        if request.adapter_id is not None:
            info = self._resident.get(request.adapter_id)
            if info is None or request.adapter_id in self._draining:
                raise AdapterNotResident(
                    f"adapter {request.adapter_id} is not loaded in the engine",
                    adapter_id=request.adapter_id,
                )
            slot = info.slot
        gen = None
        if p.temperature > 0:
            gen = torch.Generator(device=self._device)
            gen.manual_seed(p.seed if p.seed is not None else secrets.randbits(63))
        return Row(
            request=request,
            slot=slot,
            prompt_ids=ids,
            sink=sink,
            streaming=streaming,
            generator=gen,
        )

    def _submit(self, request: GenerationRequest, sink: Any, streaming: bool = False) -> None:
        with self._lock:  # resident check and queueing are atomic w.r.t. an unload
            self._batcher.submit(self._row(request, sink, streaming))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        sink = _FutureSink()
        self._submit(request, sink)
        return await self._await(
            sink.future, self.config.request_timeout_s, f"request {request.request_id}"
        )

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Admit now (admission errors raise from this call), then yield text pieces.

        The last chunk carries the result; the pieces' texts concatenate to ``result.text``.
        """
        loop = asyncio.get_running_loop()
        sink = _StreamSink(loop)
        self._submit(request, sink, streaming=True)
        return self._chunks(sink, loop, request.request_id)

    async def _chunks(
        self, sink: _StreamSink, loop: asyncio.AbstractEventLoop, request_id: str
    ) -> AsyncIterator[StreamChunk]:
        deadline = loop.time() + self.config.request_timeout_s
        sent = 0
        try:
            while True:
                item = await self._await(
                    sink.queue.get(), max(deadline - loop.time(), 0.0), f"request {request_id}"
                )
                if isinstance(item, str):
                    sent += len(item)
                    yield StreamChunk(item)
                elif isinstance(item, GenerationResult):
                    yield StreamChunk(item.text[sent:], result=item)
                    return
                else:
                    raise item
        finally:
            sink.cancel()

    async def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        sinks = [_FutureSink() for _ in requests]
        with self._lock:
            rows = [self._row(r, s) for r, s in zip(requests, sinks, strict=True)]
            done = self._batcher.run_now(rows)
        try:
            await self._await(done, self.config.request_timeout_s, "a batch")
        except EngineTimeout:
            for s in sinks:
                s.future.cancel()
            raise
        return [s.future.result() for s in sinks]

    def saturated(self) -> bool:
        return self._batcher.saturated()

    # -- text ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self._codec.encode(text))

    def encode(self, text: str) -> list[int]:
        return self._codec.encode(text)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            rendered = self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
            return str(rendered)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])


def _eos_ids(model: nn.Module, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
