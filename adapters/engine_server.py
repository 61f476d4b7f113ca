"""An engine behind vLLM's OpenAI server protocol (``lora-router serve --engine-api``).

Serves any :class:`~adapters.engine.Engine` (the embedded one in practice) with the routes a
:class:`~adapters.remote.RemoteEngine` drives, in the shapes of
:mod:`adapters.engine_protocol`: ``/v1/models``, ``/v1/completions`` (``stream`` as
server-sent events), ``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter`` and ``/health``.
It is an engine, not a gateway: no routes, no registry checks (the gateway verifies every
adapter against its model card before it asks for a load), no log. Loading an adapter that
is already resident answers 200 (the engine's contract); vLLM answers 400 there.

With ``api_key`` every ``/v1`` route wants ``Authorization: Bearer <key>`` (401 otherwise),
as vLLM's ``--api-key`` does.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from lora_router.adapters.engine import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamChunk,
)
from lora_router.adapters.engine_protocol import DONE, error_body
from lora_router.ground.errors import (
    AdapterNotFound,
    EngineError,
    InvalidRequest,
    LoraRouterError,
    ModelNotFound,
)

log = logging.getLogger(__name__)
JSON = "application/json"


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lora_name: str = Field(min_length=1)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionBody(BaseModel):
    """The fields of vLLM's completion request that an engine acts on; others are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    prompt: str | list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    def params(self) -> SamplingParams:
        if self.n != 1:
            raise InvalidRequest(f"n={self.n} is not supported: only n=1", param="n")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(self.max_tokens, self.temperature, self.top_p, self.seed, stop)


M = TypeVar("M", bound=BaseModel)


async def _body(request: Request, model: type[M]) -> M:
    """The body parsed as ``model`` in one pass (FastAPI's own parsing costs more per
    request, and the engine's hop is on every request's path)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errs = exc.errors()
        where = ".".join(str(p) for p in errs[0]["loc"]) if errs else ""
        why = errs[0]["msg"] if errs else "invalid"
        raise InvalidRequest(f"{where}: {why}", param=where) from None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(to_json(payload), status_code=status, media_type=JSON)


def _error(exc: LoraRouterError) -> Response:
    return _json(error_body(exc), exc.status_code)


def create_engine_app(
    build: Callable[[], Engine], *, api_key: str | None = None, base_root: str | None = None
) -> FastAPI:
    """The engine API over the engine ``build`` returns (built and started in the lifespan,
    off the event loop); ``base_root`` is reported as the base card's ``root``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await asyncio.to_thread(build)
        await engine.start()
        app.state.engine = engine
        log.info("engine API ready: base %s (%s)", engine.base.name, engine.base.sha256[:19])
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="lora-router engine", lifespan=lifespan, openapi_url=None)
    app.state.base_root = base_root

    async def authorised(request: Request) -> None:
        if api_key is None:
            return
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
            raise _Unauthorised("missing or wrong API key")

    async def on_project_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoraRouterError)
        return _error(exc)

    async def on_failure(request: Request, exc: Exception) -> Response:
        log.error("engine API request failed: %s: %s", type(exc).__name__, exc)
        return _error(EngineError(f"engine failed: {type(exc).__name__}"))

    app.add_exception_handler(LoraRouterError, on_project_error)
    app.add_exception_handler(Exception, on_failure)
    guarded = [Depends(authorised)]
    app.add_api_route("/health", _health, methods=["GET"])
    app.add_api_route("/v1/models", _models, methods=["GET"], dependencies=guarded)
    app.add_api_route("/v1/load_lora_adapter", _load, methods=["POST"], dependencies=guarded)
    app.add_api_route("/v1/unload_lora_adapter", _unload, methods=["POST"],
                      dependencies=guarded)
    app.add_api_route("/v1/completions", _completions, methods=["POST"], dependencies=guarded)
    return app


class _Unauthorised(LoraRouterError):
    """The engine API wants an API key and the request had none, or another."""

    status_code = 401
    code = "unauthorized"


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _health(request: Request) -> Response:
    _engine(request)  # the lifespan has set it: the engine serves
    return Response(status_code=200)


async def _models(request: Request) -> Response:
    engine = _engine(request)
    base, created = engine.base, int(time.time())
    cards: list[dict[str, Any]] = [{
        "id": base.name, "object": "model", "created": created, "owned_by": "lora-router",
        "root": request.app.state.base_root or base.name, "parent": None,
        "max_model_len": base.max_context, "sha256": base.sha256,
    }]
    for adapter_id, info in sorted(engine.resident_adapters().items()):
        cards.append({"id": adapter_id, "object": "model", "created": created,
                      "owned_by": "lora-router", "root": str(info.path), "parent": base.name})
    return _json({"object": "list", "data": cards})


async def _load(request: Request) -> Response:
    body = await _body(request, LoadBody)
    await _engine(request).load_adapter(body.lora_name, Path(body.lora_path))
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


async def _unload(request: Request) -> Response:
    body = await _body(request, UnloadBody)
    engine = _engine(request)
    if body.lora_name not in engine.resident_adapters():
        raise AdapterNotFound(f"The lora adapter '{body.lora_name}' cannot be found.",
                              param="lora_name")
    await engine.unload_adapter(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def _request(body: CompletionBody, request: Request, engine: Engine) -> GenerationRequest:
    if body.model == engine.base.name:
        adapter_id = None
    elif body.model in engine.resident_adapters():
        adapter_id = body.model
    else:
        raise ModelNotFound(f"The model `{body.model}` does not exist.", param="model")
    rid = request.headers.get("x-request-id") or f"cmpl-{os.urandom(16).hex()}"
    params = body.params()
    if isinstance(body.prompt, str):
        return GenerationRequest(rid, body.prompt, adapter_id, params)
    return GenerationRequest(rid, "", adapter_id, params, prompt_ids=tuple(body.prompt))


def _usage(result: GenerationResult) -> dict[str, Any]:
    return {"prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "engine_s": result.engine_s}


def _head(req: GenerationRequest, model: str) -> dict[str, Any]:
    return {"id": req.request_id, "object": "text_completion", "created": int(time.time()),
            "model": model}


async def _completions(request: Request) -> Response:
    body = await _body(request, CompletionBody)
    engine = _engine(request)
    req = _request(body, request, engine)
    if body.stream:
        # admitted and first piece awaited here, so that admission errors keep their status
        it = aiter(engine.stream(req))
        try:
            first = await anext(it)
        except StopAsyncIteration:
            raise EngineError("the engine's stream ended before its first chunk") from None
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_events(req, body.model, first, it, usage),
                                 media_type="text/event-stream")
    result = await engine.generate(req)
    choice = {"index": 0, "text": result.text, "logprobs": None,
              "finish_reason": result.finish_reason, "stop_reason": None,
              "confidence": result.confidence}
    return _json({**_head(req, body.model), "choices": [choice], "usage": _usage(result)})


async def _events(req: GenerationRequest, model: str, chunk: StreamChunk,
                  it: AsyncIterator[StreamChunk], include_usage: bool) -> AsyncIterator[bytes]:
    head = _head(req, model)
    try:
        while True:
            result = chunk.result
            choice: dict[str, Any] = {"index": 0, "text": chunk.text, "logprobs": None,
                                      "finish_reason": None, "stop_reason": None}
            if result is not None:
                choice.update(finish_reason=result.finish_reason, confidence=result.confidence)
            yield _event({**head, "choices": [choice]})
            if result is not None:
                if include_usage:
                    yield _event({**head, "choices": [], "usage": _usage(result)})
                break
            chunk = await anext(it)
    except StopAsyncIteration:
        yield _event(error_body(EngineError("the engine's stream ended without a result")))
    except Exception as exc:  # after the head was sent: the error goes in the stream
        if not isinstance(exc, LoraRouterError):
            log.exception("engine failed on streamed request %s", req.request_id)
            exc = EngineError(f"engine failed: {type(exc).__name__}")
        yield _event(error_body(exc))
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
    yield f"data: {DONE}\n\n".encode()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + to_json(payload) + b"\n\n"
