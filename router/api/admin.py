"""Admin HTTP API over the route operations (the same service as the CLI's).

``GET /admin/routes``, ``GET /admin/routes/{route}``, ``GET /admin/routes/{route}/audit``,
``POST /admin/routes/{route}/{rollback,canary,shadow,promote,set-live}``, and
``POST /admin/routes/{route}/guard`` (the route's drift guard policy, versioned and audited
like any change: :mod:`router.drift.policy`). Every change
takes a ``reason`` (at most ``max_reason_chars``); the audit records the authenticated
principal: ``key:<owner>`` for an API key (any name the caller sends is ignored), else
``token``, ``loopback`` or ``open`` and, marked as a claim, the name the caller gives in the
body's ``actor`` or the ``x-lora-router-actor`` header (at most ``max_actor_chars``):
``"token (claimed: alice)"``. Errors go through the app's
``LoraRouterError`` handler (409 for a version conflict or a refused change, 404 for an
unknown route or adapter, 413 for a reason or actor over its limit).

The app provides the service on ``app.state.route_service`` (built in its lifespan).

Access (:mod:`router.api.access`): every endpoint here, reads included, needs the
``oncall`` role (an oncall or admin key; or the admin token; or, while no key and no token
exist, a loopback client). Reads are protected too: the audit names people and their
reasons, and one rule is easier to reason about than two. Always, the ``Host`` header must
be one of the gateway's names (403 otherwise: DNS rebinding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from router.api.access import AdminUnauthorized, Principal, actor_label, require_oncall
from router.api.openapi import GUARD_EXAMPLES, error_responses
from router.drift.policy import GuardPolicy
from router.flags.service import RouteService
from router.flags.state import RouteState
from router.flags.views import AuditOut, ChangeOut, RoutesOut, StoreOut
from router.limits import Limits

__all__ = ["ACTOR_HEADER", "AdminUnauthorized", "Caller", "router"]

ACTOR_HEADER = "x-lora-router-actor"
_DEFAULT_LIMITS = Limits()

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
    claimed: Annotated[str | None, Header(alias=ACTOR_HEADER)] = None,
) -> Caller:
    """The caller of a change, once its ``reason`` and ``actor`` are within their limits."""
    limits: Limits = getattr(request.app.state, "limits", None) or _DEFAULT_LIMITS
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


async def get_route_service(request: Request) -> RouteService:
    service: RouteService = request.app.state.route_service
    return service


RouteServiceDep = Annotated[RouteService, Depends(get_route_service)]
CallerDep = Annotated[Caller, Depends(get_caller)]


class ChangeIn(BaseModel):
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


class SplitIn(ChangeIn):
    adapter: str
    percent: float = Field(ge=0, le=100)


class AdapterIn(ChangeIn):
    adapter: str


class GuardIn(ChangeIn):
    guard: GuardPolicy | None = Field(
        description="The route's whole drift guard policy (it replaces the one in force); "
        "null removes it (alerts only, never an automatic change)."
    )


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


@router.post("/routes/{route}/rollback")
async def rollback(
    route: str, body: ChangeIn, service: RouteServiceDep, actor: CallerDep
) -> ChangeOut:
    result = await service.rollback(
        route, actor=body.who(actor), reason=body.reason, expected_version=body.expected_version
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/canary")
async def canary(
    route: str, body: SplitIn, service: RouteServiceDep, actor: CallerDep
) -> ChangeOut:
    result = await service.canary(
        route, body.adapter, body.percent,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/shadow")
async def shadow(
    route: str, body: SplitIn, service: RouteServiceDep, actor: CallerDep
) -> ChangeOut:
    result = await service.shadow(
        route, body.adapter, body.percent,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/promote")
async def promote(
    route: str, body: ChangeIn, service: RouteServiceDep, actor: CallerDep
) -> ChangeOut:
    result = await service.promote(
        route, actor=body.who(actor), reason=body.reason, expected_version=body.expected_version
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/set-live")
async def set_live(
    route: str, body: AdapterIn, service: RouteServiceDep, actor: CallerDep
) -> ChangeOut:
    result = await service.set_live(
        route, body.adapter,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/guard")
async def set_guard(
    route: str, body: Annotated[GuardIn, Body(openapi_examples=GUARD_EXAMPLES)],
    service: RouteServiceDep, actor: CallerDep,
) -> ChangeOut:
    result = await service.set_guard(
        route, body.guard,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)
