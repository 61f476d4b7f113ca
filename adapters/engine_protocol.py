"""The wire format of vLLM's OpenAI-compatible server, as both sides of it use it here.

Read from vLLM's source (``vllm/entrypoints/openai/models/serving.py``,
``vllm/entrypoints/serve/lora/{api_router,protocol}.py``, ``docs/features/lora.md``; main
branch, 2026, the line of the 0.33 wheel) and kept to what the remote engine relies on:

- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``: 200 with a plain-text
  "Success: ..." body; an error answers ``{"error": {"message", "type", "param", "code"}}``
  with ``code`` the HTTP status (400 ``InvalidUserInput`` for a name already loaded,
  404 ``NotFoundError`` for a path with no adapter, 500 for a load the engine refused).
  The routes exist only when the server runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.
- ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: 200, or 404 for an unknown name.
- ``GET /v1/models``: ``{"object": "list", "data": [card, ...]}``; the base's card has
  ``parent`` null, ``root`` its path and ``max_model_len``; an adapter's card has ``id``
  its name, ``root`` its path and ``parent`` the base's name. The embedded engine's server
  adds ``sha256`` (the pinned hash) to the base's card.
- ``POST /v1/completions`` with ``model`` the adapter's name (or the base's): OpenAI's
  answer, whose ``model`` echoes the name; ``stream`` gives server-sent events ending with
  ``data: [DONE]``, usage in a last chunk when ``stream_options.include_usage``; an error
  after the stream began is one ``data: {"error": ...}`` event. ``prompt`` may be token ids.
  The embedded engine's server adds ``confidence`` to the choice and ``engine_s`` to usage;
  from vLLM the confidence comes from ``logprobs`` (the chosen tokens' log-probabilities).
- ``GET /health``: 200 once the engine serves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from lora_router.adapters.engine import FinishReason, GenerationRequest
from lora_router.ground import errors
from lora_router.ground.errors import LoraRouterError

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"
MODELS_PATH = "/v1/models"
COMPLETIONS_PATH = "/v1/completions"
HEALTH_PATH = "/health"
DONE = "[DONE]"


def _codes() -> dict[str, type[LoraRouterError]]:
    """Every project error class by its ``code`` (the ``type`` our engine server sends)."""
    found: dict[str, type[LoraRouterError]] = {}
    todo: list[type[LoraRouterError]] = [LoraRouterError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__ == errors.__name__)
    return found


_BY_CODE = _codes()


def error_body(exc: LoraRouterError) -> dict[str, Any]:
    """vLLM's error shape, with our error's code as ``type``."""
    param = exc.detail.get("param")
    return {"error": {"message": exc.message, "type": exc.code,
                      "param": param if isinstance(param, str) else None,
                      "code": exc.status_code}}


def error_of(status: int, body: bytes | str, fallback: dict[int, type[LoraRouterError]],
             where: str) -> LoraRouterError:
    """The project error for an error answer: by its ``type`` when it is one of our codes
    (our engine server), else by HTTP status through ``fallback``, else ``EngineError``."""
    message, kind = _message_and_type(body)
    cls = _BY_CODE.get(kind or "") or fallback.get(status) or errors.EngineError
    return cls(f"{where}: {message}", backend_status=status, backend_type=kind)


def _message_and_type(body: bytes | str) -> tuple[str, str | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return text.strip()[:500] or "no detail", None
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        kind = err.get("type")
        return str(err.get("message", "")), kind if isinstance(kind, str) else None
    if isinstance(err, str):  # vLLM's 401: {"error": "Unauthorized"}
        return err, None
    return str(payload)[:500], None


def completion_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """``/v1/completions`` for ``request`` on ``model`` (the adapter's name or the base's)."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(request.prompt_ids) if request.prompt_ids is not None else request.prompt,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "logprobs": 1,  # vLLM: the chosen tokens' log-probabilities give the confidence
        "stream": stream,
    }
    if p.seed is not None:
        body["seed"] = p.seed
    if p.stop:
        body["stop"] = list(p.stop)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass(slots=True)
class Tally:
    """What a completion answer (or the events of a stream) said, accumulated."""

    model: str | None = None
    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    confidence: float | None = None
    engine_s: float = 0.0
    logprob_sum: float = 0.0
    logprob_count: int = 0

    def add(self, payload: dict[str, Any]) -> str:
        """Fold one answer or stream event in; returns the text it added."""
        self.model = payload.get("model", self.model)
        piece = ""
        for choice in payload.get("choices") or ():
            piece += str(choice.get("text") or "")
            if choice.get("finish_reason") is not None:
                self.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
            if isinstance(choice.get("confidence"), int | float):
                self.confidence = float(choice["confidence"])
            self._logprobs(choice.get("logprobs"))
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
            self.engine_s = float(usage.get("engine_s") or 0.0)
        self.text += piece
        return piece

    def _logprobs(self, logprobs: Any) -> None:
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        for lp in values or ():
            if isinstance(lp, int | float) and math.isfinite(lp):
                self.logprob_sum += math.exp(lp)
                self.logprob_count += 1

    def mean_confidence(self) -> float:
        if self.confidence is not None:
            return self.confidence
        return self.logprob_sum / self.logprob_count if self.logprob_count else 0.0


def sse_data(line: str) -> str | None:
    """The payload of one server-sent-event line (``data: ...``), else None."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def model_cards(payload: Any) -> list[dict[str, Any]]:
    """The cards of a ``/v1/models`` answer (malformed entries dropped)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    return [c for c in data or () if isinstance(c, dict) and isinstance(c.get("id"), str)]


def base_card(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c for c in cards if c.get("parent") is None), None)


def adapter_names(cards: list[dict[str, Any]]) -> set[str]:
    return {c["id"] for c in cards if c.get("parent") is not None}
