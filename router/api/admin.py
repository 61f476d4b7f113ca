"""Admin HTTP API over the route operations (the same service as the CLI's).

``GET /admin/routes``, ``GET /admin/routes/{route}``, ``GET /admin/routes/{route}/audit``,
and one ``POST /admin/routes/{route}/<action>`` per route action of
:data:`router.flags.actions.ACTIONS` (its body: :class:`ChangeIn` plus the action's own
parameters): ``rollback``, ``canary``, ``shadow``, ``promote``, ``set-live``, ``guard``
(the route's drift guard policy: :mod:`router.drift.policy`), ``set-policy`` and
``clear-policy`` (the route's policy text: :mod:`router.flags.policy_text`; 413 over its
size limit). Every change takes a ``reason`` (at most ``max_reason_chars``); the audit
records the authenticated principal: ``key:<owner>`` for an API key (any name the caller
sends is ignored), else ``token``, ``loopback`` or ``open`` and, marked as a claim, the name
the caller gives in the body's ``actor`` or the ``x-lora-router-actor`` header (at most
``max_actor_chars``): ``"token (claimed: alice)"``. Errors go through the app's
``LoraRouterError`` handler (409 for a version conflict or a refused change, 404 for an
unknown route or adapter, 413 for a reason, actor or policy text over its limit).

The route service and the limits are injected (``router.api.deps.route_service``,
``router.api.deps.limits``: the gateway's components, built in its lifespan).

Access (:mod:`router.api.access`): every endpoint here, reads included, needs the
``oncall`` role (an oncall or admin key; or the admin token; or, while no key and no token
exist, a loopback client). Reads are protected too: the audit names people and their
reasons, and one rule is easier to reason about than two. Always, the ``Host`` header must
be one of the gateway's names (403 otherwise: DNS rebinding).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, create_model

from lora_router.router.api.access import AdminUnauthorized, Principal, actor_label, require_oncall
from lora_router.router.api.deps import LimitsDep, RouteServiceDep
from lora_router.router.api.openapi import GUARD_EXAMPLES, error_responses
from lora_router.router.flags.actions import ACTIONS, ActionSpec
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import AuditOut, ChangeOut, RoutesOut, StoreOut

__all__ = ["ACTOR_HEADER", "AdminUnauthorized", "Caller", "body_model", "router"]

ACTOR_HEADER = "x-lora-router-actor"

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_oncall)],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 431, 503),
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An admin change's caller: the authenticated principal and the name it claims (a
    key's caller claims nothing: the key names its owner)."""

    principal: str
    claimed: str | None = None
    verified: bool = False


async def get_caller(
    request: Request,
    principal: Annotated[Principal, Depends(require_oncall)],
    limits: LimitsDep,
    claimed: Annotated[str | None, Header(alias=ACTOR_HEADER)] = None,
) -> Caller:
    """The caller of a change, once its ``reason`` and ``actor`` are within their limits."""
    limits.check_text("max_actor_chars", f"header {ACTOR_HEADER}", claimed, param=ACTOR_HEADER)
    body = await _json_or_none(request)  # parsed already by FastAPI (cached): bounded, cheap
    if isinstance(body, dict):
        for name, field in (("reason", "max_reason_chars"), ("actor", "max_actor_chars")):
            value = body.get(name)
            if isinstance(value, str):
                limits.check_text(field, name, value, param=name)
    if principal.verified:
        return Caller(principal.name, verified=True)
    return Caller(principal.name, claimed or None)


async def _json_or_none(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:  # not JSON: the body's own validation answers 422
        return None


CallerDep = Annotated[Caller, Depends(get_caller)]


class ChangeIn(BaseModel):
    """What every route change takes; each action adds its own parameters."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, description="Why (recorded in the audit trail).")
    actor: str | None = Field(default=None, min_length=1)
    expected_version: int | None = Field(
        default=None, ge=1, description="Refuse (409) unless the route is at this version."
    )

    def who(self, caller: Caller) -> str:
        """The audit's ``by``: the principal, and the claimed name (body, else header)."""
        if caller.verified:
            return caller.principal
        return actor_label(caller.principal, self.actor or caller.claimed)


_BODIES: dict[str, type[ChangeIn]] = {"ChangeIn": ChangeIn}
_BODY_EXAMPLES: dict[str, dict[str, Any]] = {"set-guard": GUARD_EXAMPLES}


def body_model(spec: ActionSpec) -> type[ChangeIn]:
    """The request body of ``spec``: :class:`ChangeIn` plus its parameters, one model per
    ``spec.body`` name (``canary`` and ``shadow`` share ``SplitIn``)."""
    model = _BODIES.get(spec.body)
    if model is None:
        fields: dict[str, Any] = {
            p.name: (p.type, Field(ge=p.ge, le=p.le, description=p.help)) for p in spec.params
        }
        model = create_model(spec.body, __base__=ChangeIn, __module__=__name__, **fields)
        _BODIES[spec.body] = model
    return model


@router.get("/routes")
async def list_routes(service: RouteServiceDep) -> RoutesOut:
    return RoutesOut(routes=service.routes(), store=StoreOut.of(service.store.health()))


@router.get("/routes/{route}")
async def show_route(route: str, service: RouteServiceDep) -> RouteState:
    return service.show(route)


@router.get("/routes/{route}/audit")
async def route_audit(
    route: str, service: RouteServiceDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> AuditOut:
    return AuditOut(route=route, entries=await service.audit(route, limit))


def _endpoint(spec: ActionSpec) -> Callable[..., Awaitable[ChangeOut]]:
    """``POST /admin/routes/{route}/<spec.api_path>``: ``RouteService.apply`` of ``spec``."""

    async def change(
        route: str, body: ChangeIn, service: RouteServiceDep, caller: CallerDep
    ) -> ChangeOut:
        params = {p.name: getattr(body, p.name) for p in spec.params}
        result = await service.apply(
            spec.name, route, actor=body.who(caller), reason=body.reason,
            expected_version=body.expected_version, **params,
        )
        return ChangeOut.of(result)

    model: Any = body_model(spec)
    examples = _BODY_EXAMPLES.get(spec.name)
    # the body's type is the action's own model (FastAPI reads it from the annotations)
    change.__annotations__ = {
        **change.__annotations__,
        "body": model if examples is None else Annotated[model, Body(openapi_examples=examples)],
    }
    change.__name__ = change.__qualname__ = spec.method  # the operation id, as it always was
    return change


for _spec in ACTIONS.values():
    router.post(f"/routes/{{route}}/{_spec.api_path}", description=_spec.help)(_endpoint(_spec))
