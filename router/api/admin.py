"""Admin HTTP API over the route operations (the same service as the CLI's).

``GET /admin/routes``, ``GET /admin/routes/{route}``, ``GET /admin/routes/{route}/audit``,
``POST /admin/routes/{route}/{rollback,canary,shadow,promote,set-live}``. Every change
takes a ``reason``; the actor is the body's ``actor``, else the ``x-lora-router-actor``
header, else ``"api"``. Errors go through the app's ``LoraRouterError`` handler (409 for a
version conflict or a refused change, 404 for an unknown route or adapter).

The app provides the service on ``app.state.route_service`` (built in its lifespan).

Authentication: when the app has an admin token (``LORA_ROUTER_ADMIN_TOKEN``, kept on
``app.state.admin_token``), every ``/admin`` endpoint, reads included, requires
``Authorization: Bearer <token>`` (401 ``unauthorized`` otherwise). Reads are protected too:
the audit names people and their reasons, and one rule is easier to reason about than two.
Without a token the admin API is open (bind it to a private interface).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from registry.errors import LoraRouterError
from router.flags.service import RouteService
from router.flags.state import RouteState
from router.flags.views import AuditOut, ChangeOut, RoutesOut, StoreOut

ACTOR_HEADER = "x-lora-router-actor"


class AdminUnauthorized(LoraRouterError):
    """An /admin call without the right bearer token, while the gateway has one set."""

    status_code = 401
    code = "unauthorized"


async def require_admin(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    token: SecretStr | None = getattr(request.app.state, "admin_token", None)
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AdminUnauthorized(
            "the admin API requires 'Authorization: Bearer <token>' "
            "(the gateway's LORA_ROUTER_ADMIN_TOKEN)"
        )
    if not secrets.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise AdminUnauthorized("invalid admin token")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


async def get_route_service(request: Request) -> RouteService:
    service: RouteService = request.app.state.route_service
    return service


RouteServiceDep = Annotated[RouteService, Depends(get_route_service)]
ActorHeader = Annotated[str | None, Header(alias=ACTOR_HEADER)]


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, description="Why (recorded in the audit trail).")
    actor: str | None = Field(default=None, min_length=1)
    expected_version: int | None = Field(
        default=None, ge=1, description="Refuse (409) unless the route is at this version."
    )

    def who(self, header: str | None) -> str:
        return self.actor or header or "api"


class SplitIn(ChangeIn):
    adapter: str
    percent: float = Field(ge=0, le=100)


class AdapterIn(ChangeIn):
    adapter: str


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
    route: str, body: ChangeIn, service: RouteServiceDep, actor: ActorHeader = None
) -> ChangeOut:
    result = await service.rollback(
        route, actor=body.who(actor), reason=body.reason, expected_version=body.expected_version
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/canary")
async def canary(
    route: str, body: SplitIn, service: RouteServiceDep, actor: ActorHeader = None
) -> ChangeOut:
    result = await service.canary(
        route, body.adapter, body.percent,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/shadow")
async def shadow(
    route: str, body: SplitIn, service: RouteServiceDep, actor: ActorHeader = None
) -> ChangeOut:
    result = await service.shadow(
        route, body.adapter, body.percent,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/promote")
async def promote(
    route: str, body: ChangeIn, service: RouteServiceDep, actor: ActorHeader = None
) -> ChangeOut:
    result = await service.promote(
        route, actor=body.who(actor), reason=body.reason, expected_version=body.expected_version
    )
    return ChangeOut.of(result)


@router.post("/routes/{route}/set-live")
async def set_live(
    route: str, body: AdapterIn, service: RouteServiceDep, actor: ActorHeader = None
) -> ChangeOut:
    result = await service.set_live(
        route, body.adapter,
        actor=body.who(actor), reason=body.reason, expected_version=body.expected_version,
    )
    return ChangeOut.of(result)
