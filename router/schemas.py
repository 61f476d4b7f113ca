"""Request bodies of the OpenAI-compatible API (validated once, at the boundary).

Responses are built as plain dicts and serialised with ``pydantic_core.to_json`` in
:mod:`router.api.openai`: the shapes are fixed by OpenAI's API and a response model per
request would only add CPU on the hot path.

Differences from OpenAI, on purpose: ``temperature`` defaults to 0 (greedy), so a route's
answers are reproducible and canary/shadow comparisons are meaningful; ``n`` must be 1.
OpenAI fields this gateway does not implement (``logprobs``, ``echo``, ``best_of``,
``suffix``, ``logit_bias``, ``tools``, ...) are refused with 400 naming the field unless they
carry the value that means "not used" (null, false, 1, empty); see :data:`UNSUPPORTED`.
Other unknown fields are ignored, as OpenAI-compatible servers commonly do (the body size
limit bounds them).

Sampling values outside their documented bounds (:data:`SAMPLING_BOUNDS`), NaN, Infinity,
booleans and strings included, are refused with 400 naming the field and its bound; null
means the field's default.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lora_router.ground.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 16
MAX_STOP_SEQUENCES = 4

# OpenAI request fields not implemented here, with the values that mean "not used" (SDKs may
# send them); any other value is refused rather than silently ignored.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "logit_bias": ({},),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
}


def _not_used(value: Any, neutral: tuple[Any, ...]) -> bool:
    # bool is an int in Python: logprobs=0 asks for logprobs, logprobs=false does not
    return value is None or any(
        value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral
    )


SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes a 64-bit seed


@dataclass(frozen=True)
class Bound:
    """A sampling field's range: a JSON number (a whole one if ``integer``) in [low, high]."""

    integer: bool
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    high_text: str = ""  # how ``high`` reads in messages, when ``:g`` would not do

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if math.isinf(self.high):
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind} in {lo}{self.low:g}, {self.high_text or f'{self.high:g}'}{hi}"

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and not (
            math.isfinite(value) and (value.is_integer() or not self.integer)
        ):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


# The documented bounds. A temperature or top_p that is valid but tiny (1e-30) decodes
# greedily, as its limit does; max_tokens is also bounded by the context window (400 too).
SAMPLING_BOUNDS: dict[str, Bound] = {
    "max_tokens": Bound(integer=True, low=1),
    "max_completion_tokens": Bound(integer=True, low=1),
    "n": Bound(integer=True, low=1),
    "temperature": Bound(integer=False, low=0, high=2),
    "top_p": Bound(integer=False, low=0, high=1, low_open=True),
    "seed": Bound(integer=True, low=0, high=SEED_LIMIT, high_open=True, high_text="2**63"),
}


def check_sampling(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``value`` if within its field's :data:`SAMPLING_BOUNDS`, else ``InvalidRequest``.

    Used as a "before" validator: it runs ahead of pydantic's parsing and raises an error
    pydantic does not collect, so the API answers 400 naming the field and its bound (as
    the engine does for bad values) rather than 422. null means the field's default.
    """
    name = info.field_name
    assert name is not None
    if value is None:
        return model.model_fields[name].default
    bound = SAMPLING_BOUNDS[name]
    if not bound.admits(value):
        raise InvalidRequest(f"{name} must be {bound}, got {reprlib.repr(value)}", param=name)
    return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by both completion endpoints."""

    # unknown fields are kept (not validated) so that unsupported OpenAI ones can be refused
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    seed: Annotated[int | None, Field(ge=0, lt=SEED_LIMIT)] = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    user: str | None = None  # bounded by max_user_chars (413), checked by the service
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("max_tokens", "temperature", "top_p", "seed", "n", mode="before")
    @classmethod
    def _bounded(cls, v: Any, info: ValidationInfo) -> Any:
        return check_sampling(cls, v, info)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
            if any(s == "" for s in v):
                raise ValueError("stop sequences must not be empty")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None or self.stop == "":
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def unsupported_field(self) -> str | None:
        """The first unsupported OpenAI field given a value other than "not used"."""
        extra = self.model_extra
        if not extra:
            return None
        for name, value in extra.items():
            neutral = UNSUPPORTED.get(name)
            if neutral is not None and not _not_used(value, neutral):
                return name
        return None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``. ``prompt`` is a string (or a list holding one string)."""

    prompt: str | Annotated[list[str], Field(min_length=1)]

    def prompt_text(self) -> str | None:
        """The single prompt, or None when several were sent (unsupported, like n > 1)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``; ``max_completion_tokens`` wins over ``max_tokens``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None

    @field_validator("max_completion_tokens", mode="before")
    @classmethod
    def _bounded_limit(cls, v: Any, info: ValidationInfo) -> Any:
        return check_sampling(cls, v, info)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]
