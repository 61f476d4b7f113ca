"""The typed dependencies of the API: the parts a running gateway holds, injected.

``create_app``'s lifespan builds one :class:`~router.components.Components`
(:func:`router.components.build_components`) and keeps it on the app; this module is the one
place that reads it there. Endpoints take its parts through the functions and ``Annotated``
aliases below (all ``async def``, so FastAPI does not hop to a thread pool to resolve them):

- :func:`components` (``ComponentsDep``): everything;
- :func:`completion_service` (``ServiceDep``), :func:`route_service` (``RouteServiceDep``);
- :func:`log_writer` (``LogWriterDep``: 503 when the app records through a recorder of its
  own), :func:`drift` (``DriftDep``: None when drift monitoring is off);
- :func:`limits` (``LimitsDep``), :func:`dashboard` (``DashboardDep``);
- :func:`access` (``AccessDep``: the access rules), and its parts :func:`admin_access`
  (``AdminAccessDep``), :func:`key_ring` (``KeyRingDep``), :func:`app_key_rule`.

The two on every ``/v1`` request (:func:`completion_service`, :func:`access`) read the
components directly rather than through :func:`components`: each level of dependencies
costs FastAPI tens of microseconds per request. An app built around some routers alone (a
test of the admin rule, say) provides what they use with ``app.dependency_overrides``
(``deps.access``, ``deps.route_service``, ``deps.limits``, ``deps.log_writer``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from lora_router.ground.errors import LogStoreUnavailable, LoraRouterError
from lora_router.router.api.access_rules import AccessRules, AdminAccess
from lora_router.router.api.openapi import inline_schema
from lora_router.router.auth.ring import KeyRing
from lora_router.router.completions import CompletionService
from lora_router.router.components import Components
from lora_router.router.dashboard.state import DashboardService
from lora_router.router.drift.runtime import DriftRuntime
from lora_router.router.flags.route_service import RouteService
from lora_router.router.limits import Limits
from lora_router.router.log.writer import LogWriter
from lora_router.router.schemas import ChatCompletionRequest, CompletionRequest

__all__ = ["Components"]


class GatewayNotStarted(LoraRouterError):
    """A request reached an app whose lifespan has not built the gateway's components."""

    status_code = 503
    code = "gateway_not_started"


def _built(request: Request) -> Components:
    # uvicorn accepts connections only after the lifespan built these, so a served gateway
    # has them; an app that never ran the lifespan says so instead of answering 500
    try:
        built: Components = request.app.state.components
    except AttributeError:
        raise GatewayNotStarted("the gateway has not started: no components") from None
    return built


async def components(request: Request) -> Components:
    return _built(request)


async def completion_service(request: Request) -> CompletionService:
    return _built(request).service


async def access(request: Request) -> AccessRules:
    return _built(request).access


ComponentsDep = Annotated[Components, Depends(components)]
AccessDep = Annotated[AccessRules, Depends(access)]


async def route_service(c: ComponentsDep) -> RouteService:
    """The route operations (admin API, dashboard, drift guard: one service)."""
    return c.route_service


async def log_writer(c: ComponentsDep) -> LogWriter:
    """The inference log writer; 503 when the app records through a recorder of its own."""
    if c.log_writer is None:
        raise LogStoreUnavailable("the inference log is not enabled on this gateway")
    return c.log_writer


async def drift(c: ComponentsDep) -> DriftRuntime | None:
    return c.drift


async def limits(c: ComponentsDep) -> Limits:
    return c.limits


async def dashboard(c: ComponentsDep) -> DashboardService:
    return c.dashboard


async def admin_access(a: AccessDep) -> AdminAccess:
    return a.admin


async def key_ring(a: AccessDep) -> KeyRing | None:
    """The API keys; None only in an app built without a key store."""
    return a.key_ring


async def app_key_rule(a: AccessDep) -> bool | None:
    """Whether ``/v1`` needs a key: the setting, else ``access.yaml``; None: once any key
    exists (:func:`router.auth.policy.require_app_key`)."""
    return a.require_app_key


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


ServiceDep = Annotated[CompletionService, Depends(completion_service)]
RouteServiceDep = Annotated[RouteService, Depends(route_service)]
LogWriterDep = Annotated[LogWriter, Depends(log_writer)]
DriftDep = Annotated[DriftRuntime | None, Depends(drift)]
LimitsDep = Annotated[Limits, Depends(limits)]
DashboardDep = Annotated[DashboardService, Depends(dashboard)]
AdminAccessDep = Annotated[AdminAccess, Depends(admin_access)]
KeyRingDep = Annotated[KeyRing | None, Depends(key_ring)]
AppKeyRuleDep = Annotated[bool | None, Depends(app_key_rule)]
CompletionBody = Annotated[CompletionRequest, Depends(json_body(CompletionRequest))]
ChatBody = Annotated[ChatCompletionRequest, Depends(json_body(ChatCompletionRequest))]
