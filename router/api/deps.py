"""Dependencies built in the app's lifespan and injected into endpoints.

The lifespan stores one :class:`Components` on ``app.state.components``; endpoints receive
its parts through the typed ``Annotated`` aliases below (all ``async def``, so FastAPI does
not hop to a thread pool to resolve them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from adapters.engine import Engine
from adapters.residency import Residency
from registry.home import Home
from router.api.openapi import inline_schema
from router.flags.runtime import FlagsRuntime
from router.flags.store import RouteStore
from router.schemas import ChatCompletionRequest, CompletionRequest
from router.service import CompletionService
from router.settings import Settings


@dataclass(slots=True)
class Components:
    """Everything a running gateway holds; built and closed by the lifespan."""

    settings: Settings
    home: Home
    engine: Engine
    store: RouteStore
    residency: Residency
    service: CompletionService
    base_verified: bool
    flags: FlagsRuntime | None = None  # replica membership and the reconciler


async def get_components(request: Request) -> Components:
    # uvicorn accepts connections only after the lifespan built these, so they are set
    components: Components = request.app.state.components
    return components


async def get_service(request: Request) -> CompletionService:
    service: CompletionService = request.app.state.components.service
    return service


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency parsing the body as ``model`` in one pass (``model_validate_json``).

    Cheaper than FastAPI's own body handling (content-type parsing, ``json.loads``, then
    validation); errors become the same ``RequestValidationError`` (422 naming the field).
    """

    async def parse(request: Request) -> M:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None

    return parse


def body_openapi(
    model: type[BaseModel], examples: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` documenting a ``json_body`` (nested models inlined)."""
    media: dict[str, Any] = {"schema": inline_schema(model)}
    if examples:
        media["examples"] = {f"example{i}": {"value": v} for i, v in enumerate(examples, 1)}
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


ComponentsDep = Annotated[Components, Depends(get_components)]
ServiceDep = Annotated[CompletionService, Depends(get_service)]
CompletionBody = Annotated[CompletionRequest, Depends(json_body(CompletionRequest))]
ChatBody = Annotated[ChatCompletionRequest, Depends(json_body(ChatCompletionRequest))]
