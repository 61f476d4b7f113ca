"""The remote engine: the :class:`~adapters.engine.Engine` contract over backend servers that
speak vLLM's OpenAI protocol (vLLM with runtime LoRA updating, or
``lora-router serve --engine-api``); wire format in :mod:`adapters.engine_protocol`.

Contract, beyond :class:`~adapters.engine.Engine`'s:
- The base is pinned: a backend is admitted only when its base card's name is the pinned
  base's name and, when it reports one, its ``sha256`` is the pinned hash; a mismatch at
  :meth:`RemoteEngine.start` refuses the start (``BaseModelMismatch``), later it keeps the
  backend out. ``start`` waits up to ``start_timeout_s`` for one backend (``NoBackend``).
- Loads are two-phase across the backends in service: ``load_adapter`` returns once every
  one of them has the adapter. A backend that refuses it fails the load and the others
  unload it again (nothing half-loaded); a backend that stops answering mid-load is taken
  out of service and the load completes on the rest. ``unload_adapter`` stops admitting,
  drains the gateway's own in-flight requests for the adapter, then unloads everywhere.
- Requests go to the backend in service with the fewest in flight. A backend that does not
  answer, or answers that it lacks the adapter, or answers as another ``model`` than the
  one asked for, is taken out of service, and the request is retried on another, but only
  while nothing of it was passed on (a stream's first piece ends retrying). A read timeout
  is ``EngineTimeout``, not a reason to take a backend out (the probe decides).
- A probe every ``probe_interval_s`` checks each backend (``/health``, ``/v1/models``): one
  in service whose adapters differ from what was loaded there (a restart) is taken out; one
  out of service is re-admitted once it answers, its base matches the pin and it is
  re-synced with the resident set (strays unloaded, missing adapters loaded).
- Files are never checked here: the caller (the gateway's residency) verifies an adapter
  against its model card before it asks for the load. Backends read the adapter from
  ``adapters_root`` (their path of ``<home>/adapters``; default: the gateway's own path).
- Text (``encode``, ``count_tokens``, ``chat_prompt``) comes from the home's pinned base
  tokenizer, locally (:mod:`adapters.local_base`).

One gateway owns its backends: two gateways sharing one backend would unload each other's
adapters at re-sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from lora_router.adapters import engine_protocol as wire
from lora_router.adapters.engine import (
    AdapterInfo,
    BaseInfo,
    Engine,
    GenerationRequest,
    GenerationResult,
    StreamChunk,
    check_sampling,
)
from lora_router.adapters.local_base import LocalText, base_shape, verify_local_base
from lora_router.adapters.remote_backend import TRANSPORT, Backend, lacks_model
from lora_router.adapters.remote_pool import BackendPool, NoBackend, RemoteConfig
from lora_router.ground.errors import (
    AdapterBusy,
    AdapterIncompatible,
    AdapterNotFound,
    AdapterNotResident,
    ConfigError,
    EngineError,
    EngineTimeout,
    LoraRouterError,
    NoFreeSlot,
)
from lora_router.ground.home import Home
from lora_router.ground.ids import parse_adapter_id

__all__ = ["NoBackend", "RemoteConfig", "RemoteEngine"]

log = logging.getLogger(__name__)


class _WrongModel(Exception):
    """A backend answered as another model than the one asked for."""


class RemoteEngine(Engine):
    """:class:`~adapters.engine.Engine` over backend servers; see the module docstring."""

    def __init__(self, home: Home, base: BaseInfo, text: LocalText, config: RemoteConfig):
        if not config.backends:
            raise ConfigError("the remote engine needs backends (LORA_ROUTER_ENGINE_BACKENDS)")
        self.base = base
        self.config = config
        self._home = home
        self._text = text
        self._pool = BackendPool(config, base, self._wanted)
        self._resident: dict[str, AdapterInfo] = {}
        self._draining: set[str] = set()
        self._counts: dict[str | None, int] = {}
        self._idle: dict[str | None, asyncio.Event] = {}
        self._closed = False

    @classmethod
    def from_home(cls, home: Home, config: RemoteConfig) -> RemoteEngine:
        lock = verify_local_base(home)
        shape = base_shape(home)
        base = BaseInfo(name=lock.name, sha256=lock.sha256, max_context=shape.max_context,
                        vocab_size=shape.vocab_size, device="remote", dtype=shape.dtype)
        return cls(home, base, LocalText(home), config)

    async def start(self) -> None:
        try:
            await self._pool.start()
        except BaseException:
            await self._pool.close()
            raise

    async def close(self) -> None:
        self._closed = True
        await self._pool.close()

    def backends(self) -> list[dict[str, Any]]:
        """Each backend's state: url, up, reason (when out), in_flight, adapters."""
        return self._pool.states()

    def _wanted(self) -> dict[str, str]:
        """What every backend in service must hold: adapter id -> the path it loads from."""
        return {a: self._backend_path(i.path) for a, i in self._resident.items()
                if a not in self._draining}

    def _backend_path(self, path: Path) -> str:
        root = self.config.adapters_root
        if root is None:
            return str(path)
        try:
            rel = Path(path).resolve().relative_to(self._home.adapters_dir)
        except ValueError:
            return str(path)
        return f"{root.rstrip('/')}/{rel.as_posix()}"

    # -- adapters ------------------------------------------------------------------------
    async def load_adapter(self, adapter_id: str, path: Path) -> AdapterInfo:
        parse_adapter_id(adapter_id)
        async with self._pool.sync:
            if adapter_id in self._draining:
                raise AdapterBusy(f"adapter {adapter_id} is being unloaded; retry afterwards")
            if adapter_id in self._resident:
                return self._resident[adapter_id]
            if len(self._resident) >= self.config.max_adapters:
                raise NoFreeSlot(f"all {self.config.max_adapters} adapter slots are taken")
            t0 = time.perf_counter()
            info = await asyncio.to_thread(_adapter_info, adapter_id, Path(path))
            await self._pool.load_everywhere(adapter_id, self._backend_path(Path(path)))
            info = replace(info, load_ms=(time.perf_counter() - t0) * 1000.0)
            self._resident[adapter_id] = info
            return info

    async def unload_adapter(self, adapter_id: str, drain_timeout_s: float = 30.0) -> None:
        if adapter_id not in self._resident or adapter_id in self._draining:
            return
        self._draining.add(adapter_id)  # admission stops here
        try:
            await self._drain(adapter_id, drain_timeout_s)
            async with self._pool.sync:
                await self._pool.unload_everywhere(adapter_id)
        finally:
            self._resident.pop(adapter_id, None)
            self._draining.discard(adapter_id)

    async def _drain(self, adapter_id: str, timeout_s: float) -> None:
        if not self._counts.get(adapter_id):
            return
        try:
            await asyncio.wait_for(self._idle[adapter_id].wait(), timeout_s)
        except TimeoutError:
            log.warning("adapter %s: requests still in flight after %.0f s; unloading anyway",
                        adapter_id, timeout_s)

    def resident_adapters(self) -> dict[str, AdapterInfo]:
        return {k: v for k, v in self._resident.items() if k not in self._draining}

    # -- generation ----------------------------------------------------------------------
    def _model_for(self, request: GenerationRequest) -> str:
        """The ``model`` to ask for; raises now for a closed engine, bad sampling values or
        an adapter that is not resident."""
        if self._closed:
            raise EngineError("the engine is closed")
        check_sampling(request.params)
        adapter_id = request.adapter_id
        if adapter_id is None:
            return self.base.name
        if adapter_id not in self._resident or adapter_id in self._draining:
            raise AdapterNotResident(f"adapter {adapter_id} is not loaded in the engine",
                                     adapter_id=adapter_id)
        return adapter_id

    @contextlib.contextmanager
    def _counting(self, adapter_id: str | None) -> Iterator[None]:
        self._counts[adapter_id] = self._counts.get(adapter_id, 0) + 1
        self._idle.setdefault(adapter_id, asyncio.Event()).clear()
        try:
            yield
        finally:
            self._counts[adapter_id] -= 1
            if not self._counts[adapter_id]:
                self._idle[adapter_id].set()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        model = self._model_for(request)
        body = wire.completion_body(request, model, stream=False)
        tried: set[Backend] = set()
        with self._counting(request.adapter_id):
            while True:
                b = self._pool.pick(request.adapter_id, tried)
                tried.add(b)
                b.in_flight += 1
                try:
                    tally = await b.complete(body, request.request_id)
                    _check_echo(tally, model)
                    return self._result(request, tally)
                except Exception as exc:
                    self._retry_or_raise(b, exc, model, sent=False)
                finally:
                    b.in_flight -= 1

    def _retry_or_raise(self, b: Backend, exc: Exception, model: str, *, sent: bool) -> None:
        """Take ``b`` out and return (the caller retries) when the failure is the backend's
        and nothing was passed on; raise otherwise."""
        if self._closed:
            raise EngineError("the engine was closed during the request") from exc
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            raise EngineTimeout(f"backend {b.url} did not answer in time") from exc
        if isinstance(exc, TRANSPORT):
            reason = f"request failed: {type(exc).__name__}: {exc}"
        elif isinstance(exc, _WrongModel):
            reason = f"answered as model {exc.args[0]!r} when asked for {model!r}"
        elif isinstance(exc, LoraRouterError) and lacks_model(exc):
            reason = f"out of step: it lacks {model}"
        else:
            raise exc
        self._pool.take_out(b, reason)
        if sent:
            raise EngineError(f"backend {b.url} failed mid-stream: {reason}") from exc

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Admit now (an adapter that is not resident raises from this call), stream later."""
        return self._stream(request, self._model_for(request))

    async def _stream(self, request: GenerationRequest, model: str
                      ) -> AsyncIterator[StreamChunk]:
        body = wire.completion_body(request, model, stream=True)
        tried: set[Backend] = set()
        with self._counting(request.adapter_id):
            while True:
                b = self._pool.pick(request.adapter_id, tried)
                tried.add(b)
                tally, sent = wire.Tally(), False
                b.in_flight += 1
                try:
                    async with b.events(body, request.request_id) as events:
                        async for payload in events:
                            piece = tally.add(payload)
                            _check_echo(tally, model)
                            if piece:
                                sent = True
                                yield StreamChunk(piece)
                    yield StreamChunk("", result=self._result(request, tally))
                    return
                except Exception as exc:
                    self._retry_or_raise(b, exc, model, sent=sent)
                finally:
                    b.in_flight -= 1

    def _result(self, request: GenerationRequest, tally: wire.Tally) -> GenerationResult:
        prompt_tokens = tally.prompt_tokens or (
            len(request.prompt_ids) if request.prompt_ids is not None
            else self.count_tokens(request.prompt))
        return GenerationResult(
            request_id=request.request_id, adapter_id=request.adapter_id, text=tally.text,
            prompt_tokens=prompt_tokens, completion_tokens=tally.completion_tokens,
            confidence=tally.mean_confidence(), finish_reason=tally.finish_reason or "stop",
            engine_s=tally.engine_s,
        )

    async def generate_batch(self, requests: Sequence[GenerationRequest]
                             ) -> list[GenerationResult]:
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    def saturated(self) -> bool:
        return self._pool.saturated()

    # -- text ----------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self._text.encode(text))

    def encode(self, text: str) -> list[int]:
        return self._text.encode(text)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        return self._text.chat_prompt(messages)


def _check_echo(tally: wire.Tally, model: str) -> None:
    if tally.model != model:
        raise _WrongModel(tally.model)


def _adapter_info(adapter_id: str, path: Path) -> AdapterInfo:
    """What the gateway knows of an adapter from its files (the backend holds the weights)."""
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterNotFound(f"adapter {adapter_id} has no adapter_config.json under {path}",
                              adapter_id=adapter_id)
    try:
        config = json.loads(config_path.read_text())
        targets = config.get("target_modules") or ()
        return AdapterInfo(
            adapter_id=adapter_id, path=path, rank=int(config["r"]),
            alpha=float(config.get("lora_alpha", config["r"])),
            target_modules=(targets,) if isinstance(targets, str) else tuple(sorted(targets)),
            slot=-1, size_bytes=sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
            load_ms=0.0,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterIncompatible(f"adapter {adapter_id}: unreadable adapter_config.json: "
                                  f"{exc}", adapter_id=adapter_id) from exc
