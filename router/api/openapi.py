"""What the OpenAPI document declares beyond the routes' own types.

Every error answer (``{"error": {...}}``, OpenAI's shape plus the request id) is declared
per operation with :func:`error_responses`; the completion endpoints declare their JSON and
server-sent-event answers (:data:`COMPLETION_ANSWERS`, :data:`CHAT_ANSWERS`). The models
here document answers the endpoints build as plain dicts (no response model on the hot
path). Schemas are inlined, so a declaration is the same whatever the route's response class.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

JSON = "application/json"
SSE = "text/event-stream"
HTML = "text/html"


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
    401: "No API key, or a malformed, unknown or revoked one (Authorization: Bearer <key>); "
    "or not the admin token (LORA_ROUTER_ADMIN_TOKEN).",
    403: "Refused: the key's role is below what the endpoint needs (app < oncall < admin); "
    "with no key and no admin token the admin API answers loopback clients only; the "
    "Host header must be one of the gateway's names.",
    404: "Unknown model, route, adapter or request id.",
    409: "Conflict: a stale expected_version, or a refused route change.",
    413: "Too large: the body (max_body_bytes), the prompt (max_prompt_chars) or a field "
    "(user, x-route-key, reason, actor) is over its limit; the message names it.",
    422: "The body or a parameter does not match the schema; or a pinned adapter cannot be "
    "loaded: its files fail the registry's check, it does not fit the base, or every "
    "adapter slot holds an adapter a route references (code no_free_slot).",
    431: "The request target and headers are over max_header_bytes.",
    503: "Unavailable: engine overloaded, a route's adapter still loading, or a store down "
    "(the key store included, when the gateway has no key list yet).",
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


def _header(description: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_STR = {"type": "string"}
# Who served a completion (router.api.openai._headers); error answers carry x-request-id only.
SERVED_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": _header("The request id, also the response's id.", _STR, True),
    "x-model-id": _header("The adapter that served it, or the base's name.", _STR, True),
    "x-route-arm": _header(
        "How model was resolved: live or canary (a route), pinned (an adapter id), base "
        "(the base's name).",
        {"type": "string", "enum": ["live", "canary", "pinned", "base"]}, True),
    "x-route": _header("The route (route requests only).", _STR, False),
    "x-flag-version": _header("The route's flag version that served it (route requests "
                              "only).", {"type": "integer"}, False),
    "x-policy-version": _header("The route's policy text in front of the prompt, e.g. "
                                "support-triage/policy@3 (route requests while the route "
                                "has one).", _STR, False),
}


def _answers(model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    stream = {  # the schema of one event; each carries a chunk as JSON, the last [DONE]
        "type": "object",
        "description": f"Server-sent events: {what} chunks as `data: {{json}}` lines "
        "(an error after the first chunk as `data: {\"error\": ...}`), then `data: [DONE]`.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }
    return {200: {"description": f"The {what}; with stream true, server-sent events.",
                  "headers": SERVED_HEADERS,
                  "content": {JSON: {"schema": inline_schema(model)},
                              SSE: {"schema": stream}}}}


COMPLETION_ANSWERS = _answers(Completion, "completion")
CHAT_ANSWERS = _answers(ChatCompletion, "chat completion")


class SplitInfo(BaseModel):
    adapter: str
    percent: float


class _ModelBase(BaseModel):
    id: str
    object: Literal["model"]
    created: int = Field(description="Unix seconds: a route's last change, an adapter "
                         "card's creation, the base's pin.")
    owned_by: str


class RouteModel(_ModelBase):
    """A route: the state its requests are served by now."""

    kind: Literal["route"]
    live: str
    canary: SplitInfo | None
    shadow: SplitInfo | None
    rollback_target: str | None
    flag_version: int = Field(description="The version served, as in x-flag-version.")


class AdapterBase(BaseModel):
    name: str
    version: str
    sha256: str


class AdapterModel(_ModelBase):
    """An adapter id (``name@version``); one that is not resident is loaded on demand."""

    kind: Literal["adapter"]
    resident: bool
    status: str | None = Field(description="The model card's lifecycle status.")
    base: AdapterBase | None = Field(description="The base it was trained on (its card).")
    routes: list[str] = Field(description="The routes that reference it.")


class BaseModelInfo(_ModelBase):
    """The pinned base, served by its name."""

    kind: Literal["base"]
    sha256: str
    max_context: int


class ModelObject(RootModel[RouteModel | AdapterModel | BaseModelInfo]):
    """``GET /v1/models/{model_id}``: OpenAI's Model object plus what the gateway knows."""


class ModelList(BaseModel):
    """``GET /v1/models``: every valid ``model``."""

    object: Literal["list"]
    data: list[RouteModel | AdapterModel | BaseModelInfo]


MODELS_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"description": "Routes, registered adapters (resident or not) and the base.",
          "content": {JSON: {"schema": inline_schema(ModelList)}}}
}
MODEL_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"description": "The model: a route, an adapter or the base.",
          "content": {JSON: {"schema": inline_schema(ModelObject)}}}
}

# the on-call dashboard's page (router.dashboard.api); its data: /admin/dashboard/state
HTML_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The dashboard page (static HTML; it polls /admin/dashboard/state "
          "with the person's key).", "content": {HTML: {"schema": {"type": "string"}}}}
}

# POST /admin/routes/{route}/guard (router.api.admin): the drift guard policy's body
GUARD_EXAMPLES: dict[str, Any] = {
    "protect_spanish": {
        "summary": "Roll back on its own when the Spanish slice regresses",
        "value": {"reason": "guard the es slice of the v2 canary",
                  "guard": {"auto_rollback": True, "protect": ["language=es"],
                            "min_labels": 15}},
    },
    "remove": {"summary": "Remove the policy (alerts only)",
               "value": {"reason": "guard off for the migration", "guard": None}},
}
