"""OpenAI-compatible endpoints: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``
and ``/v1/models/{id}``.

Each completion names who served it: ``model`` is the concrete adapter id (or the base's
name), also in ``x-model-id``; ``id`` is the request id, also in ``x-request-id``;
``x-route-arm`` says how ``model`` was resolved: ``live`` or ``canary`` for a route, which
also adds ``x-route`` and ``x-flag-version`` (and ``x-policy-version``, e.g.
``support-triage/policy@3``, while the route has a policy text:
:mod:`router.flags.policy_text`); ``pinned`` for an adapter id; ``base`` for the base's name
(neither of the last two has a route or flag version, so those headers are absent). Error
answers carry ``x-request-id`` only. Streams are server-sent
events in OpenAI's chunk format, ending with ``data: [DONE]``. Responses are plain dicts
serialised by ``pydantic_core.to_json`` (no response models on the hot path), and bodies
are parsed in one pass by ``model_validate_json`` (``router.api.deps.json_body``).

Refused before any work (400/413 naming the field or limit): an unsupported OpenAI field
with a value other than "not used" (:data:`router.schemas.UNSUPPORTED`), ``n`` other than 1,
a ``user`` or ``x-route-key`` longer than ``max_user_chars``; the service bounds the prompt.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request
from pydantic_core import to_json
from starlette.responses import Response, StreamingResponse

from lora_router.adapters.engine import GenerationResult, SamplingParams, StreamChunk
from lora_router.ground.errors import InvalidRequest, LoraRouterError
from lora_router.router.api.deps import ChatBody, CompletionBody, ServiceDep, body_openapi
from lora_router.router.api.errors import JSON, project_error_object
from lora_router.router.api.openapi import (
    CHAT_ANSWERS,
    COMPLETION_ANSWERS,
    MODEL_ANSWER,
    MODELS_ANSWER,
    error_responses,
)
from lora_router.router.completions import Call, Served
from lora_router.router.limits import Limits
from lora_router.router.schemas import (
    DEFAULT_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
)

router = APIRouter(prefix="/v1", tags=["openai"])

ROUTE_KEY_HEADER = "x-route-key"
_ERRORS = error_responses(400, 404, 413, 422, 431, 503, 504)
_EXAMPLE_PROMPT = "Ticket: I was charged twice for the same invoice.\nCategory:"
_COMPLETION_EXAMPLES = [
    {"model": "support-triage", "prompt": _EXAMPLE_PROMPT, "max_tokens": 3},
    {"model": "support-triage", "prompt": _EXAMPLE_PROMPT, "max_tokens": 3, "stream": True,
     "stream_options": {"include_usage": True}},
]
_CHAT_EXAMPLES = [
    {"model": "support-triage", "max_tokens": 3,
     "messages": [{"role": "user", "content": "I was charged twice for the same invoice."}]},
    {"model": "support-triage", "max_tokens": 3, "stream": True,
     "messages": [{"role": "user", "content": "Where is my parcel?"}]},
]

_DONE = b"data: [DONE]\n\n"
# a render turns one engine chunk into the SSE payloads to send
Render = Callable[[StreamChunk], Iterable[dict[str, Any]]]


def _headers(served: Served) -> dict[str, str]:
    d = served.decision
    headers = {"x-request-id": served.request_id, "x-model-id": served.model_id}
    if d.route is None:  # pinned adapter id, or the base's name: no route, no flag version
        headers["x-route-arm"] = "pinned" if d.adapter_id is not None else "base"
        return headers
    headers["x-route"] = d.route
    headers["x-route-arm"] = d.arm
    if d.flag_version is not None:
        headers["x-flag-version"] = str(d.flag_version)
    if d.policy_version is not None:  # the route's policy text (router.flags.policy_text)
        headers["x-policy-version"] = d.policy_version
    return headers


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _params(
    body: CompletionRequest | ChatCompletionRequest, max_tokens: int | None
) -> SamplingParams:
    if body.n != 1:
        raise InvalidRequest(f"n={body.n} is not supported: only n=1", param="n")
    field = body.unsupported_field()
    if field is not None:
        raise InvalidRequest(
            f"{field} is not supported by this gateway (send null or omit it)", param=field
        )
    return SamplingParams(
        max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_tuple(),
    )


def _request_id(request: Request, prefix: str) -> str:
    rid = f"{prefix}-{os.urandom(16).hex()}"  # a uuid4's worth of randomness, 4x cheaper
    request.state.request_id = rid  # error responses carry it too
    return rid


def _call(
    request: Request, rid: str, body: CompletionRequest | ChatCompletionRequest,
    prompt: str, max_tokens: int | None, limits: Limits,
    messages: list[dict[str, str]] | None = None,
) -> Call:
    header_key = request.headers.get(ROUTE_KEY_HEADER)
    limits.check_text("max_user_chars", "user", body.user, param="user")
    limits.check_text("max_user_chars", f"header {ROUTE_KEY_HEADER}", header_key,
                      param=ROUTE_KEY_HEADER)
    route_key = body.user or header_key
    return Call(rid, body.model, prompt, _params(body, max_tokens), route_key, body.user,
                None if messages is None else tuple(messages))


@router.post("/completions",
             openapi_extra=body_openapi(CompletionRequest, _COMPLETION_EXAMPLES),
             responses={**COMPLETION_ANSWERS, **_ERRORS})
async def completions(body: CompletionBody, request: Request, service: ServiceDep) -> Response:
    """Text completion for a route, a pinned adapter id or the base."""
    prompt = body.prompt_text()
    rid = _request_id(request, "cmpl")
    call = _call(request, rid, body, prompt or "", body.max_tokens, service.limits)
    if prompt is None:
        raise InvalidRequest("only one prompt per request is supported", param="prompt")
    if body.stream:
        served, chunks = await service.open_stream(call)
        render = _completion_chunks(served, int(time.time()), body.include_usage)
        return _sse(served, chunks, render)
    done = await service.complete(call)
    r = done.result
    payload = {
        "id": call.request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": done.served.model_id,
        "choices": [
            {"index": 0, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
        ],
        "usage": _usage(r),
    }
    return Response(to_json(payload), media_type=JSON, headers=_headers(done.served))


@router.post("/chat/completions",
             openapi_extra=body_openapi(ChatCompletionRequest, _CHAT_EXAMPLES),
             responses={**CHAT_ANSWERS, **_ERRORS})
async def chat_completions(body: ChatBody, request: Request, service: ServiceDep) -> Response:
    """Chat completion: messages rendered with the base's chat template."""
    rid = _request_id(request, "chatcmpl")
    messages = body.message_dicts()
    prompt = service.chat_prompt(messages)  # bounded before it is rendered
    # the messages too: a route's policy text goes first as a system message
    call = _call(request, rid, body, prompt, body.token_limit(), service.limits, messages)
    if body.stream:
        served, chunks = await service.open_stream(call)
        render = _chat_chunks(served, int(time.time()), body.include_usage)
        return _sse(served, chunks, render)
    done = await service.complete(call)
    r = done.result
    payload = {
        "id": call.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": done.served.model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
        ],
        "usage": _usage(r),
    }
    return Response(to_json(payload), media_type=JSON, headers=_headers(done.served))


@router.get("/models", responses={**MODELS_ANSWER, **error_responses(431)})
async def models(service: ServiceDep) -> Response:
    """Every valid ``model``: routes, registered adapters (resident or not) and the base."""
    data = await service.catalog.list_models()
    return Response(to_json({"object": "list", "data": data}), media_type=JSON)


# ``:path``: an id with "/" (sent encoded as %2F) reaches the endpoint and is answered 404
# model_not_found like any other unknown id, not with the router's bare 404
@router.get("/models/{model_id:path}",
            responses={**MODEL_ANSWER, **error_responses(404, 422, 431)})
async def retrieve_model(model_id: str, service: ServiceDep) -> Response:
    """One valid ``model`` (OpenAI's retrieve model): a route, an adapter id or the base."""
    return Response(to_json(await service.catalog.retrieve(model_id)), media_type=JSON)


# -- streaming ------------------------------------------------------------------------
def _sse(served: Served, chunks: AsyncGenerator[StreamChunk, None], render: Render) -> Response:
    return StreamingResponse(
        _events(served, chunks, render),
        media_type="text/event-stream",
        headers={**_headers(served), "cache-control": "no-cache"},
    )


async def _events(
    served: Served, chunks: AsyncGenerator[StreamChunk, None], render: Render
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            for payload in render(chunk):
                yield b"data: " + to_json(payload) + b"\n\n"
        yield _DONE
    except LoraRouterError as exc:  # headers are sent: report in-band, as OpenAI does
        yield b"data: " + to_json({"error": project_error_object(exc, served.request_id)}) + b"\n\n"
    finally:
        await chunks.aclose()


def _completion_chunks(served: Served, created: int, include_usage: bool) -> Render:
    base = {"id": served.request_id, "object": "text_completion", "created": created,
            "model": served.model_id}

    def render(chunk: StreamChunk) -> Iterable[dict[str, Any]]:
        r = chunk.result
        if chunk.text or r is not None:
            choice = {"index": 0, "text": chunk.text, "logprobs": None,
                      "finish_reason": r.finish_reason if r else None}
            yield {**base, "choices": [choice]}
        if r is not None and include_usage:
            yield {**base, "choices": [], "usage": _usage(r)}

    return render


def _chat_chunks(served: Served, created: int, include_usage: bool) -> Render:
    base = {"id": served.request_id, "object": "chat.completion.chunk", "created": created,
            "model": served.model_id}
    first = True

    def render(chunk: StreamChunk) -> Iterable[dict[str, Any]]:
        nonlocal first
        r = chunk.result
        if first or chunk.text:
            delta = {"role": "assistant", "content": chunk.text} if first else {
                "content": chunk.text}
            first = False
            yield {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": None}]}
        if r is not None:
            yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": r.finish_reason}]}
            if include_usage:
                yield {**base, "choices": [], "usage": _usage(r)}

    return render
