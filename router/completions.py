"""The completion service: resolve ``model``, route, call the engine, record the request.

The API layer (``router.api.openai``) turns HTTP into a :class:`Call` and a result back into
OpenAI's shapes; this module knows nothing about HTTP. Hooks for later issues:

- ``recorder``: called with one :class:`~router.log.record.InferenceRecord` per request
  (served or failed). It must only enqueue (no I/O); the inference-log writer plugs in here.
- ``shadow``: a :class:`ShadowDispatcher` that receives the primary request after it was
  served when the route sampled it for a shadow copy; it must schedule the copy in the
  background and return at once (the flags issue implements it; it can build the shadow's
  record with :func:`build_record`).

A route's policy text (:mod:`router.flags.policy_text`) is applied to the prompt the engine
sees, whichever arm serves the call: prefixed to a completion's prompt, or first as a system
message of a chat's ``messages`` (re-rendered). Records keep the client's own prompt (its
``input_hash`` and features) and name the policy in ``policy_version``.

Prompts are bounded before any work: over ``max_prompt_chars`` (chat: the messages' text,
before the template is rendered) is refused with ``LimitExceeded``. A prompt longer than
:data:`INLINE_TOKENIZE_CHARS` is tokenised on the service's tokenizer threads (the fast
tokenizer releases the GIL), never on the event loop; the engine receives its ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from lora_router.adapters.engine import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamChunk,
)
from lora_router.ground.errors import (
    AdapterNotFound,
    AdapterNotResident,
    AdapterRetired,
    EngineError,
    EngineTimeout,
    InvalidRequest,
    LoraRouterError,
    ModelNotFound,
)
from lora_router.ground.home import Home
from lora_router.ground.ids import is_adapter_id
from lora_router.router.catalog import ModelCatalog
from lora_router.router.flags.policy_text import (
    PolicyText,
    prefixed_prompt,
    with_system_message,
)
from lora_router.router.flags.residency import Residency
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore
from lora_router.router.limits import Limits
from lora_router.router.log.record import InferenceRecord
from lora_router.router.routing import Decision, choose

log = logging.getLogger(__name__)

Recorder = Callable[[InferenceRecord], None]
# What a call can fail with; cancellation is recorded too (the client went away).
_FAILURES = (Exception, asyncio.CancelledError)
# Grace on top of the engine's own request timeout: the engine should answer first.
TIMEOUT_GRACE_S = 5.0
# Prompts up to this many characters are tokenised by the engine inline (~0.3 ms on the
# event loop, cheaper than a thread hop); longer ones on the tokenizer threads.
INLINE_TOKENIZE_CHARS = 1024
TOKENIZER_THREADS = 2


class ShadowDispatcher(Protocol):
    def submit(
        self,
        primary: GenerationRequest,
        decision: Decision,
        route_key: str | None,
        *,
        subject: str | None = None,
        prompt: str | None = None,
    ) -> None:
        """Schedule a background copy of ``primary`` on ``decision.shadow_adapter``.

        Must return at once and never raise; the copy's output is recorded, never returned.
        ``subject`` is the primary's data subject (the OpenAI ``user``), for its record;
        ``prompt`` the client's prompt, for its record (``primary.prompt`` is what the
        engine saw: the route's policy applied; None: the same).
        """


@dataclass(frozen=True, slots=True)
class Call:
    """One completion asked of the service. ``route_key`` picks the canary arm (sticky)."""

    request_id: str
    model: str
    prompt: str
    params: SamplingParams
    route_key: str | None = None
    user: str | None = None  # the end user (OpenAI ``user``): the record's data subject
    # chat: the messages ``prompt`` was rendered from, so that a route's policy text can go
    # first as a system message (None: a completion, the policy is prefixed to ``prompt``)
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """Who serves a call: known before the first token, so it can go in the headers."""

    request_id: str
    model_id: str  # the adapter that served it, or the base's name
    decision: Decision


@dataclass(frozen=True, slots=True)
class Completion:
    served: Served
    result: GenerationResult


@dataclass(slots=True)
class _Ctx:
    call: Call
    started: float
    key: str  # the routing key (hashed by the log writer, off the request path)
    decision: Decision | None = None

    def model_id(self, base_name: str) -> str:
        if self.decision is None:
            return self.call.model
        return self.decision.adapter_id or base_name

    def served(self, base_name: str) -> Served:
        assert self.decision is not None
        return Served(self.call.request_id, self.model_id(base_name), self.decision)


def build_record(
    *,
    request_id: str,
    prompt: str,
    model_id: str,
    base_model_id: str,
    decision: Decision | None,
    started: float,
    route_key: str | None,
    result: GenerationResult | None = None,
    error: BaseException | None = None,
    output: str = "",
    parent_request_id: str | None = None,
    arm: str | None = None,
    subject: str | None = None,
) -> InferenceRecord:
    """One ``inference_log`` record for a served (``result``) or failed (``error``) request
    (no hashing here: the writer derives ``input_hash`` and ``route_key_hash``)."""
    return InferenceRecord(
        request_id=request_id,
        model_id=model_id,
        output=result.text if result is not None else output,
        served_at=datetime.now(UTC),
        confidence=result.confidence if result is not None else None,
        route=decision.route if decision else None,
        arm=arm or (decision.arm if decision else None),
        flag_version=decision.flag_version if decision else None,
        policy_version=decision.policy_version if decision else None,
        parent_request_id=parent_request_id,
        base_model_id=base_model_id,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        prompt_tokens=result.prompt_tokens if result is not None else None,
        completion_tokens=result.completion_tokens if result is not None else None,
        engine_ms=result.engine_s * 1000.0 if result is not None else None,
        route_key=route_key,
        status="ok" if error is None else "error",
        error=_describe(error),
        subject=subject,
        prompt=prompt,
    )


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled: the client went away"
    return f"{type(error).__name__}: {error}"


class CompletionService:
    """Serves completions for routes, pinned adapter ids and the base.

    Contract:
    - ``model`` is a route name (arm chosen by :func:`router.routing.choose` with the call's
      ``route_key``, else the request id), an adapter id (pinned), or the base's name. A
      registered adapter that is not resident is loaded on demand through ``residency``
      (:meth:`~router.flags.residency.Residency.load_on_demand`: verified, bounded by the free
      slots, ``NoSlotForPinned`` (422) when routes hold every slot); without a residency it
      raises ``AdapterNotResident``. A retired or unregistered adapter, and anything else,
      raise ``ModelNotFound`` listing the valid names (:class:`router.catalog.ModelCatalog`).
    - Every await on the engine is bounded (engine timeout + grace -> ``EngineTimeout``);
      engine failures that are not project errors become ``EngineError``.
    - Exactly one record per call reaches ``recorder`` (ok or error), when one is set.
    """

    def __init__(
        self,
        engine: Engine,
        store: RouteStore,
        home: Home,
        *,
        request_timeout_s: float,
        recorder: Recorder | None = None,
        shadow: ShadowDispatcher | None = None,
        limits: Limits | None = None,
        route_for: Callable[[str], RouteState | None] | None = None,
        residency: Residency | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        # the state a route's requests are served from (default: the newest applied);
        # the gateway passes ServingRoutes.get: an earlier version while one is loading
        self._route_for = route_for if route_for is not None else store.get
        self.residency = residency
        self.catalog = ModelCatalog(engine, store, home, self._route_for)
        self.recorder = recorder
        self.shadow = shadow
        self.limits = limits if limits is not None else Limits()
        self._tokenizer = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="tokenize")
        self._home = home
        self._timeout_s = request_timeout_s + TIMEOUT_GRACE_S
        self._base_name = engine.base.name
        self._max_context = engine.base.max_context

    # -- resolution -------------------------------------------------------------------
    def _resolve(self, model: str, key: str) -> tuple[Decision, bool]:
        """The decision, and whether its (pinned) adapter must be loaded first."""
        state = self._route_for(model)
        if state is not None:
            return choose(state, key), False
        if model == self._base_name:
            return Decision(None, "live", None, None), False
        if model in self.engine.resident_adapters():
            if self.residency is not None:
                self.residency.touch(model)
            return Decision(None, "live", model, None), False
        if is_adapter_id(model) and self._on_disk(model):
            return Decision(None, "live", model, None), True
        raise self._not_found(model)

    def _not_found(self, model: str, why: str = "") -> ModelNotFound:
        valid = self.catalog.ids()
        return ModelNotFound(
            f"model {model!r} not found{why}; valid models: {', '.join(valid)}",
            param="model",
            valid=valid,
        )

    async def _load_pinned(self, adapter_id: str) -> None:
        """Load a pinned adapter on demand (bounded by the request timeout)."""
        if self.residency is None:
            raise AdapterNotResident(
                f"adapter {adapter_id!r} exists but is not loaded (no route references it)",
                param="model",
            )
        keep = Residency.referenced(self.store.all())
        try:
            async with asyncio.timeout(self._timeout_s):
                await self.residency.load_on_demand(adapter_id, keep)
        except AdapterRetired as exc:
            raise self._not_found(adapter_id, ": the adapter is retired") from exc
        except AdapterNotFound as exc:
            raise self._not_found(adapter_id, ": the adapter is not registered") from exc

    def _on_disk(self, adapter_id: str) -> bool:
        # only reached when the adapter is not resident: a stat is fine there
        return (self._home.adapter_dir(adapter_id) / "adapter_config.json").is_file()

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt for chat ``messages``; their text is bounded before it is rendered."""
        chars = sum(len(m["content"]) for m in messages)
        self.limits.check("max_prompt_chars", "the messages' text", chars, param="messages")
        return self.engine.chat_prompt(messages)

    def close(self) -> None:
        self._tokenizer.shutdown(wait=False, cancel_futures=True)

    # -- serving ----------------------------------------------------------------------
    async def _admit(self, ctx: _Ctx) -> GenerationRequest:
        """Check, route and tokenise ``ctx.call`` (sets ``ctx.decision``)."""
        call = ctx.call
        self.limits.check("max_prompt_chars", "prompt", len(call.prompt), param="prompt")
        if call.params.max_tokens > self._max_context:
            raise InvalidRequest(
                f"max_tokens {call.params.max_tokens} exceeds the context window "
                f"({self._max_context} tokens)",
                param="max_tokens",
            )
        ctx.decision, load = self._resolve(call.model, ctx.key)
        if load:
            await self._load_pinned(call.model)
        prompt = self._engine_prompt(call, ctx.decision.policy)
        ids = await self._encode(prompt)
        return GenerationRequest(
            call.request_id, prompt, ctx.decision.adapter_id, call.params, prompt_ids=ids
        )

    def _engine_prompt(self, call: Call, policy: PolicyText | None) -> str:
        """The prompt with the route's policy text applied (:mod:`router.flags.policy_text`);
        the record keeps the client's own prompt."""
        if policy is None:
            return call.prompt
        if call.messages is not None:
            return self.engine.chat_prompt(with_system_message(policy, call.messages))
        return prefixed_prompt(policy, call.prompt)

    async def _encode(self, prompt: str) -> tuple[int, ...] | None:
        """A long prompt's ids, computed off the event loop; None: the engine encodes it."""
        if len(prompt) <= INLINE_TOKENIZE_CHARS:
            return None
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self._tokenizer, self.engine.encode, prompt)
        return tuple(ids)

    def _ctx(self, call: Call) -> _Ctx:
        return _Ctx(call, time.perf_counter(), call.route_key or call.request_id)

    async def complete(self, call: Call) -> Completion:
        """Serve one completion; raise a ``LoraRouterError`` (recorded) on failure."""
        ctx = self._ctx(call)
        try:
            request = await self._admit(ctx)
            async with asyncio.timeout(self._timeout_s):
                result = await self.engine.generate(request)
        except _FAILURES as exc:
            err = self._failed(call, ctx, exc)
            if err is exc:
                raise
            raise err from exc
        self._record(ctx, result=result)
        self._shadow(ctx, request)
        return Completion(ctx.served(self._base_name), result)

    async def open_stream(
        self, call: Call
    ) -> tuple[Served, AsyncGenerator[StreamChunk, None]]:
        """Admit a streamed call and wait for its first chunk, so admission errors keep their
        HTTP status. Returns who serves it and the chunks (the first included); the chunks
        generator records the request when it ends, fails or is closed: close it."""
        ctx = self._ctx(call)
        try:
            request = await self._admit(ctx)
            it = aiter(self.engine.stream(request))
            async with asyncio.timeout(self._timeout_s):
                first = await anext(it)
        except _FAILURES as exc:
            err = self._failed(call, ctx, exc)
            if err is exc:
                raise
            raise err from exc
        return ctx.served(self._base_name), self._chunks(ctx, request, it, first)

    async def _chunks(
        self,
        ctx: _Ctx,
        request: GenerationRequest,
        it: AsyncIterator[StreamChunk],
        chunk: StreamChunk,
    ) -> AsyncGenerator[StreamChunk, None]:
        parts: list[str] = []
        try:
            while True:
                parts.append(chunk.text)
                yield chunk
                if chunk.result is not None:
                    break
                async with asyncio.timeout(self._timeout_s):
                    chunk = await anext(it)
        except StopAsyncIteration as exc:
            ended = EngineError(f"engine stream for {ctx.call.request_id} ended without a result")
            raise self._failed(ctx.call, ctx, ended, "".join(parts)) from exc
        except (*_FAILURES, GeneratorExit) as exc:
            err = self._failed(ctx.call, ctx, exc, "".join(parts))
            if err is exc:
                raise
            raise err from exc
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        self._record(ctx, result=chunk.result)
        self._shadow(ctx, request)

    def _shadow(self, ctx: _Ctx, request: GenerationRequest) -> None:
        decision = ctx.decision
        if self.shadow is None or decision is None or not decision.shadow_adapter:
            return
        try:
            self.shadow.submit(request, decision, ctx.key, subject=ctx.call.user,
                               prompt=ctx.call.prompt)
        except Exception:  # the primary is served: its shadow must never fail it
            log.exception("shadow dispatch failed for request %s", ctx.call.request_id)

    # -- failures and records ---------------------------------------------------------
    def _failed(
        self, call: Call, ctx: _Ctx, exc: BaseException, output: str = ""
    ) -> BaseException:
        """Record the failure; return the exception to raise (project errors as they are)."""
        if isinstance(exc, LoraRouterError):
            err: BaseException = exc
        elif isinstance(exc, TimeoutError):
            err = EngineTimeout(
                f"request {call.request_id} timed out after {self._timeout_s:.1f} s",
                request_id=call.request_id,
            )
        elif isinstance(exc, Exception):
            log.exception("engine failed on request %s", call.request_id)
            err = EngineError(
                f"engine failed on request {call.request_id}: {type(exc).__name__}",
                request_id=call.request_id,
            )
        else:  # cancelled or closed (the client went away): record, re-raise as is
            err = exc
        self._record(ctx, error=err, output=output)
        return err

    def _record(
        self,
        ctx: _Ctx,
        *,
        result: GenerationResult | None = None,
        error: BaseException | None = None,
        output: str = "",
    ) -> None:
        if self.recorder is None:
            return
        record = build_record(
            request_id=ctx.call.request_id,
            prompt=ctx.call.prompt,
            model_id=ctx.model_id(self._base_name),
            base_model_id=self._base_name,
            decision=ctx.decision,
            started=ctx.started,
            route_key=ctx.key,
            result=result,
            error=error,
            output=output,
            subject=ctx.call.user,
        )
        try:
            self.recorder(record)
        except Exception:  # a broken recorder must never fail inference
            log.exception("recorder failed for request %s", ctx.call.request_id)

