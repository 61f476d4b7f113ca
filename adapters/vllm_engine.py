"""The vLLM engine: the pinned base served in-process by vLLM's ``AsyncLLM`` (CUDA hosts).

Written against vLLM's Python API as read, not run (vLLM cannot be installed on the
development machines), at vllm-project/vllm commit
``00080ee13c7a451fce071ccb8d0e94d395acf5a7`` (``vllm/v1/engine/async_llm.py``:
``AsyncLLM.from_engine_args``, ``generate``, ``add_lora`` / ``remove_lora`` / ``pin_lora``,
``abort``), ``01533aa8f9c07da9766323fbaf4c8b81bb2aa958`` (``vllm/lora/model_manager.py``:
``LRUCacheLoRAModelManager``) and the v0.22.1 API reference (``LoRARequest(lora_name,
lora_int_id >= 1, lora_path)``, ``LoRAConfig``, ``SamplingParams``, ``RequestOutputKind``).
The ``vllm`` extra asks for vllm>=0.22. ``vllm`` is imported here only, on first use
(:func:`load_vllm`): without it, building this engine fails with one ``ConfigError`` line.

How the :class:`~adapters.engine.Engine` contract maps onto vLLM:

- ``load_adapter`` validates with :func:`~adapters.adapter_files.read_adapter` against the
  base's Linear shapes (read from its config) before vLLM sees anything, rewrites the adapter
  so that vLLM applies exactly peft's maths (:func:`~adapters.vllm_support.write_vllm_adapter`)
  and calls ``add_lora`` with a ``lora_int_id`` fixed per adapter id
  (:class:`~adapters.vllm_support.LoraIds`).
- Residency: vLLM keeps ``max_cpu_loras`` adapters in host memory (LRU) and ``max_loras``
  in GPU slots. ``max_cpu_loras >= max_adapters`` (checked in ``VllmConfig``) and
  ``NoFreeSlot`` past ``max_adapters`` mean vLLM never evicts a resident adapter, so a
  rollback target is never reloaded from disk. :meth:`VllmEngine.pin_adapter`
  (``AsyncLLM.pin_lora``) also keeps one in a GPU slot until it is unloaded
  (``remove_lora`` drops it, pinned or not), for a flip with no host-to-GPU copy.
- ``unload_adapter`` stops admitting, waits for the adapter's requests (counted here), fails
  those still running after ``drain_timeout_s`` (aborted in vLLM), then ``remove_lora``.
- Requests are validated here like the embedded engine's and tokenised by the same code
  (``encode`` is what vLLM receives); vLLM streams DELTA outputs, and the stream's pieces
  concatenate to the result's text. ``max_queue`` admitted requests at most
  (``EngineOverloaded``): vLLM's own queue is unbounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lora_router.adapters.adapter_files import read_adapter
from lora_router.adapters.decoding import Codec
from lora_router.adapters.engine import (
    AdapterInfo,
    BaseInfo,
    Engine,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
    check_sampling,
)
from lora_router.adapters.inflight import InFlight, Ticket
from lora_router.adapters.vllm_support import (
    Completion,
    LoraIds,
    VllmConfig,
    base_linear_shapes,
    engine_kwargs,
    eos_token_ids,
    logprob_floats,
    missing_vllm_message,
    render_chat,
    sampling_kwargs,
    write_vllm_adapter,
)
from lora_router.ground.errors import (
    AdapterBusy,
    AdapterIncompatible,
    AdapterNotResident,
    ConfigError,
    EngineError,
    EngineTimeout,
    InvalidRequest,
    LoraRouterError,
    NoFreeSlot,
)
from lora_router.ground.home import Home
from lora_router.ground.ids import parse_adapter_id
from lora_router.registry.base_pin import verify_base

__all__ = ["VllmApi", "VllmConfig", "VllmEngine", "load_vllm"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class VllmApi:
    """The vLLM names the engine uses, imported on first use."""

    AsyncLLM: Any
    AsyncEngineArgs: Any
    LoRARequest: Any
    SamplingParams: Any
    DELTA: Any  # RequestOutputKind.DELTA


def load_vllm() -> VllmApi:
    """Import vLLM; ``ConfigError`` in one line when it is missing or broken."""
    try:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise ConfigError(missing_vllm_message(exc)) from exc
    return VllmApi(AsyncLLM, AsyncEngineArgs, LoRARequest, SamplingParams, RequestOutputKind.DELTA)


@dataclass(frozen=True, eq=False)
class _Run:
    """One admitted request as vLLM will get it."""

    request: GenerationRequest
    prompt_ids: list[int]
    vllm_id: str  # unique per admission: clients may reuse request ids
    lora: Any  # LoRARequest | None
    ticket: Ticket


class VllmEngine(Engine):
    """:class:`~adapters.engine.Engine` on vLLM; see that class and this module for the contract."""

    def __init__(
        self,
        api: VllmApi,
        model_dir: Path,
        tokenizer: Any,
        base: BaseInfo,
        shapes: dict[str, tuple[int, int]],
        config: VllmConfig,
    ) -> None:
        self.base, self.config = base, config
        self._api, self._model_dir, self._shapes = api, model_dir, shapes
        self._tokenizer, self._codec = tokenizer, Codec(tokenizer)
        self._eos_ids = eos_token_ids(model_dir, tokenizer)
        self._llm: Any = None
        self._work = Path(tempfile.mkdtemp(prefix="lora-router-vllm-"))
        self._lora_ids = LoraIds()
        self._resident: dict[str, AdapterInfo] = {}
        self._loras: dict[str, Any] = {}  # adapter id -> its LoRARequest
        self._loading: set[str] = set()  # holding a slot while their load is under way
        self._draining: set[str] = set()
        self._pinned: set[str] = set()
        self._inflight = InFlight(config.max_queue)
        self._seq = itertools.count()
        self._id_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    @classmethod
    def from_home(cls, home: Home, config: VllmConfig) -> VllmEngine:
        """Check vLLM is importable and the base is the pinned one; vLLM starts in ``start``."""
        from transformers import AutoConfig, AutoTokenizer

        api = load_vllm()
        lock = verify_base(home)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                home.base_dir, padding_side="left", local_files_only=True
            )
            hf = AutoConfig.from_pretrained(home.base_dir, local_files_only=True)
            shapes = base_linear_shapes(home.base_dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the base model at {home.base_dir}: {exc}") from exc
        base = BaseInfo(
            name=lock.name,
            sha256=lock.sha256,
            max_context=config.max_model_len or int(getattr(hf, "max_position_embeddings", 2048)),
            vocab_size=int(hf.vocab_size),
            device="cuda",
            dtype=config.dtype,
        )
        return cls(api, home.base_dir, tokenizer, base, shapes, config)

    async def start(self) -> None:
        kwargs = engine_kwargs(self.config, self._model_dir, self.base.max_context)
        try:
            self._llm = self._api.AsyncLLM.from_engine_args(self._api.AsyncEngineArgs(**kwargs))
        except Exception as exc:  # CUDA, memory or an unsupported model: refuse to start
            raise ConfigError(f"vLLM failed to start: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        self._inflight.fail(EngineError("engine closed before the request finished"), every=True)
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)
        shutil.rmtree(self._work, ignore_errors=True)

    # -- adapters --------------------------------------------------------------------------
    def _id_lock(self, adapter_id: str) -> asyncio.Lock:
        return self._id_locks.setdefault(adapter_id, asyncio.Lock())

    async def _within(self, aw: Awaitable[T], what: str, timeout_s: float | None = None) -> T:
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(aw, timeout)
        except TimeoutError:
            raise EngineTimeout(f"engine did not finish {what} within {timeout:g} s") from None

    def _live(self) -> Any:
        if self._closed or self._llm is None:
            raise EngineError("engine is closed" if self._closed else "engine is not started")
        return self._llm

    async def load_adapter(self, adapter_id: str, path: Path) -> AdapterInfo:
        parse_adapter_id(adapter_id)
        async with self._id_lock(adapter_id):
            llm = self._live()
            if adapter_id in self._draining:
                raise AdapterBusy(f"adapter {adapter_id} is being unloaded; retry afterwards")
            if adapter_id in self._resident:
                return self._resident[adapter_id]
            if len(self._resident) + len(self._loading) >= self.config.max_adapters:
                raise NoFreeSlot(f"all {self.config.max_adapters} adapter slots are taken")
            self._loading.add(adapter_id)
            try:
                info = await self._load(llm, adapter_id, Path(path))
            finally:
                self._loading.discard(adapter_id)
            log.info("adapter %s loaded (lora %d) in %.1f ms", adapter_id, info.slot, info.load_ms)
            return info

    async def _load(self, llm: Any, adapter_id: str, path: Path) -> AdapterInfo:
        t0 = time.perf_counter()
        read = asyncio.to_thread(read_adapter, path, self._shapes, self.config.max_lora_rank)
        weights = await self._within(read, f"reading adapter {adapter_id}")
        int_id = self._lora_ids(adapter_id)
        try:
            out = await asyncio.to_thread(write_vllm_adapter, weights, self._work / str(int_id))
            lora = self._api.LoRARequest(
                lora_name=adapter_id, lora_int_id=int_id, lora_path=str(out)
            )
            await self._within(llm.add_lora(lora), f"loading adapter {adapter_id}")
        except BaseException as exc:
            await self._forget(int_id)
            if isinstance(exc, LoraRouterError) or not isinstance(exc, Exception):
                raise
            raise _load_error(adapter_id, path, exc) from exc
        info = AdapterInfo(
            adapter_id=adapter_id,
            path=path,
            rank=weights.rank,
            alpha=weights.alpha,
            target_modules=weights.target_modules,
            slot=int_id,  # vLLM picks GPU slots per batch; the int id is the stable handle
            size_bytes=weights.size_bytes,
            load_ms=(time.perf_counter() - t0) * 1000.0,
        )
        self._resident[adapter_id], self._loras[adapter_id] = info, lora
        return info

    async def _forget(self, int_id: int) -> None:
        """Undo a load that vLLM refused or did not confirm: nothing stays half-loaded."""
        if self._llm is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._llm.remove_lora(int_id), self.config.request_timeout_s)
        shutil.rmtree(self._work / str(int_id), ignore_errors=True)

    async def unload_adapter(self, adapter_id: str, drain_timeout_s: float = 30.0) -> None:
        async with self._id_lock(adapter_id):
            info = self._resident.get(adapter_id)
            if info is None:
                return
            self._draining.add(adapter_id)  # admission stops here
            try:
                if not await self._inflight.drain(adapter_id, drain_timeout_s):
                    err = EngineError("the request's adapter was unloaded before it finished")
                    self._inflight.fail(err, adapter_id)
                    await self._inflight.drain(adapter_id, self.config.request_timeout_s)
                await self._within(self._live().remove_lora(info.slot), f"unloading {adapter_id}")
            finally:
                self._resident.pop(adapter_id, None)
                self._loras.pop(adapter_id, None)
                self._pinned.discard(adapter_id)
                self._draining.discard(adapter_id)
                shutil.rmtree(self._work / str(info.slot), ignore_errors=True)
            log.info("adapter %s unloaded from vLLM", adapter_id)

    async def pin_adapter(self, adapter_id: str) -> None:
        """Keep a resident adapter in a GPU slot too (a rollback target), until unloaded.

        At most ``max_loras - 1`` are pinned, so that other adapters still get a GPU slot.
        """
        async with self._id_lock(adapter_id):
            info = self._resident.get(adapter_id)
            if info is None or adapter_id in self._draining:
                raise AdapterNotResident(f"adapter {adapter_id} is not loaded in the engine",
                                         adapter_id=adapter_id)
            if adapter_id in self._pinned:
                return
            if len(self._pinned) >= self.config.max_loras - 1:
                raise NoFreeSlot(
                    f"at most {self.config.max_loras - 1} adapters can be pinned "
                    f"(max_loras {self.config.max_loras}; one GPU slot stays unpinned)"
                )
            self._pinned.add(adapter_id)  # counted now: pins of other ids may run meanwhile
            try:
                await self._within(self._live().pin_lora(info.slot), f"pinning {adapter_id}")
            except BaseException:
                self._pinned.discard(adapter_id)
                raise

    def pinned_adapters(self) -> frozenset[str]:
        return frozenset(self._pinned)

    def resident_adapters(self) -> dict[str, AdapterInfo]:
        return {k: v for k, v in self._resident.items() if k not in self._draining}

    # -- generation ------------------------------------------------------------------------
    def _admit(self, request: GenerationRequest, queued: bool = True) -> _Run:
        """Validate and count one request; every refusal raises before vLLM sees it."""
        self._live()
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
        lora = None
        if request.adapter_id is not None:
            lora = self._loras.get(request.adapter_id)
            if lora is None or request.adapter_id in self._draining:
                raise AdapterNotResident(
                    f"adapter {request.adapter_id} is not loaded in the engine",
                    adapter_id=request.adapter_id,
                )
        ticket = self._inflight.admit(request.adapter_id, queued)
        return _Run(request, ids, f"{request.request_id}-{next(self._seq)}", lora, ticket)

    def _sampling(self, run: _Run) -> Any:
        return self._api.SamplingParams(
            **sampling_kwargs(run.request.params), output_kind=self._api.DELTA
        )

    async def _chunks(self, t: _Run) -> AsyncIterator[StreamChunk]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_s
        done = Completion(self._eos_ids)
        outputs = None
        try:
            outputs = self._live().generate(
                {"prompt_token_ids": t.prompt_ids}, self._sampling(t), t.vllm_id,
                lora_request=t.lora,
            )
            while (out := await self._next(outputs, t, deadline - loop.time())) is not None:
                c = out.outputs[0]
                done.add(c.text, list(c.token_ids), logprob_floats(c.logprobs), c.finish_reason)
                if c.text:
                    yield StreamChunk(c.text)
            if done.finish is None:
                raise EngineError("vLLM ended the request without a final output")
            yield StreamChunk("", result=done.result(t.request, len(t.prompt_ids)))
        finally:
            if outputs is not None:  # an unfinished request is aborted in vLLM
                with suppress(Exception):
                    await outputs.aclose()
            self._inflight.release(t.ticket)

    async def _next(self, outputs: Any, t: _Run, timeout_s: float) -> Any:
        """vLLM's next output (None at the end), or the ticket's error (unload, close), or
        ``EngineTimeout``."""
        step = asyncio.ensure_future(outputs.__anext__())
        failed = asyncio.ensure_future(t.ticket.failed.wait())
        try:
            await asyncio.wait({step, failed}, timeout=max(timeout_s, 0.0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not step.done():
                step.cancel()  # vLLM's generate() aborts the request when cancelled
                await asyncio.wait({step})
        if step.cancelled():
            raise t.ticket.error or EngineTimeout(
                f"engine did not finish request {t.request.request_id} within "
                f"{self.config.request_timeout_s:g} s"
            )
        try:
            return step.result()
        except StopAsyncIteration:  # after the finished output
            return None
        except LoraRouterError:
            raise
        except ValueError as exc:  # vllm.exceptions.VLLMValidationError is a ValueError
            raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
        except Exception as exc:  # EngineDeadError, EngineGenerateError, ...
            raise EngineError(f"vLLM failed the request: {exc}") from exc

    def _iterate(self, t: _Run) -> AsyncIterator[StreamChunk]:
        chunks = self._chunks(t)
        weakref.finalize(chunks, self._inflight.release, t.ticket)  # even if never iterated
        return chunks

    async def _collect(self, t: _Run) -> GenerationResult:
        result = None
        async for chunk in self._iterate(t):
            result = chunk.result or result
        if result is None:
            raise EngineError(f"request {t.request.request_id} ended without a result")
        return result

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self._collect(self._admit(request))

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Admit now (admission errors raise from this call), then yield text pieces."""
        return self._iterate(self._admit(request))

    async def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Validate all, then run them concurrently (vLLM batches them; no queue limit)."""
        runs: list[_Run] = []
        try:
            for r in requests:
                runs.append(self._admit(r, queued=False))
        except BaseException:
            for run in runs:
                self._inflight.release(run.ticket)
            raise
        return list(await asyncio.gather(*(self._collect(run) for run in runs)))

    def saturated(self) -> bool:
        return self._inflight.queued >= self.config.max_num_seqs

    # -- text ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self._codec.encode(text))

    def encode(self, text: str) -> list[int]:
        return self._codec.encode(text)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return render_chat(self._tokenizer, messages)


def _load_error(adapter_id: str, path: Path, exc: Exception) -> LoraRouterError:
    """What vLLM's refusal of ``add_lora`` becomes (the load was undone first)."""
    if isinstance(exc, ValueError):
        return AdapterIncompatible(f"vLLM refused adapter {adapter_id}: {exc}", path=str(path))
    return EngineError(f"vLLM failed to load adapter {adapter_id}: {exc}")
