"""What the OpenAPI document declares beyond the routes' own types.

Every error answer (``{"error": {...}}``, OpenAI's shape plus the request id) is declared
per operation with :func:`error_responses`; the completion endpoints declare their JSON and
server-sent-event answers (:data:`COMPLETION_ANSWERS`, :data:`CHAT_ANSWERS`). The models
here document answers the endpoints build as plain dicts (no response model on the hot
path). Schemas are inlined, so a declaration is the same whatever the route's response class.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JSON = "application/json"
SSE = "text/event-stream"


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models inlined (no ``$ref``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


# -- errors ------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error (5xx)")
    param: str | None = Field(description="The request field or header at fault, if any.")
    code: str = Field(description="Machine-readable cause, e.g. model_not_found.")
    request_id: str
    valid_models: list[str] | None = Field(
        default=None, description="With model_not_found: every valid model."
    )


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: a value that cannot be served, an unsupported OpenAI field, or a "
    "body that cannot be decoded.",
    401: "The admin API requires a bearer token (LORA_ROUTER_ADMIN_TOKEN).",
    403: "Refused: without an admin token the admin API answers loopback clients only; the "
    "Host header must be one of the gateway's names.",
    404: "Unknown model, route, adapter or request id.",
    409: "Conflict: a stale expected_version, or a refused route change.",
    413: "Too large: the body (max_body_bytes), the prompt (max_prompt_chars) or a field "
    "(user, x-route-key, reason, actor) is over its limit; the message names it.",
    422: "The body or a parameter does not match the schema.",
    431: "The request target and headers are over max_header_bytes.",
    503: "Unavailable: adapter not resident, engine overloaded, or a store down.",
    504: "The engine did not answer within the request timeout.",
}
_ERROR_CONTENT = {JSON: {"schema": inline_schema(ErrorBody)}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: the error answers it can give."""
    return {s: {"description": ERROR_DESCRIPTIONS[s], "content": _ERROR_CONTENT}
            for s in statuses}


# -- completions -------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    """``POST /v1/completions``; ``model`` is the adapter that served it (or the base)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    """``POST /v1/chat/completions``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


def _answers(model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    stream = {  # the schema of one event; each carries a chunk as JSON, the last [DONE]
        "type": "object",
        "description": f"Server-sent events: {what} chunks as `data: {{json}}` lines "
        "(an error after the first chunk as `data: {\"error\": ...}`), then `data: [DONE]`.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }
    return {200: {"description": f"The {what}; with stream true, server-sent events.",
                  "content": {JSON: {"schema": inline_schema(model)},
                              SSE: {"schema": stream}}}}


COMPLETION_ANSWERS = _answers(Completion, "completion")
CHAT_ANSWERS = _answers(ChatCompletion, "chat completion")


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["route", "adapter", "base"]


class ModelList(BaseModel):
    """``GET /v1/models``: every valid ``model``."""

    object: Literal["list"]
    data: list[ModelEntry]


MODELS_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"description": "Routes, resident adapters and the base.",
          "content": {JSON: {"schema": inline_schema(ModelList)}}}
}
