"""One row of ``inference_log``: the seed chapter's columns plus what the product needs.

Built on the request path with what is already at hand: no I/O and no hashing. The writer,
off the request path, derives ``input_hash`` from ``prompt``, ``route_key_hash`` from
``route_key`` and ``input_features``; ``prompt`` and ``route_key`` are transient and never
written to ``inference_log``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["ok", "error"]


@dataclass(slots=True)
class InferenceRecord:
    # the seed chapter's columns
    request_id: str
    model_id: str  # the adapter that served it (or the base's name)
    output: str
    served_at: datetime
    input_hash: str | None = None  # None: derived from ``prompt`` by the writer
    input_features: dict[str, Any] | None = None
    confidence: float | None = None
    was_correct: bool | None = None
    failure_cluster: str | None = None
    # product columns
    route: str | None = None
    arm: str | None = None  # live | canary | shadow
    flag_version: int | None = None
    parent_request_id: str | None = None  # the primary request of a shadow copy
    base_model_id: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    route_key_hash: str | None = None  # None: derived from ``route_key`` by the writer
    policy_version: str | None = None
    status: Status = "ok"
    error: str | None = None
    engine_ms: float | None = None  # its share of the engine's forward passes (cost)
    # the end user / data subject (e.g. the OpenAI ``user`` field); only the optional input
    # store keeps it, so that its rows can be deleted by subject
    subject: str | None = None
    # transient: used to compute input_features off the request path, never stored
    prompt: str | None = field(default=None, repr=False)
    # transient: the routing key (OpenAI ``user``, ``x-route-key`` or the request id); only
    # its hash is stored
    route_key: str | None = field(default=None, repr=False)


def hash_input(prompt: str) -> str:
    """``input_hash``: the prompt's sha256."""
    return hashlib.sha256(prompt.encode()).hexdigest()


def hash_route_key(key: str) -> str:
    """``route_key_hash``: a short sha256 of the routing key, never the raw user id."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]
