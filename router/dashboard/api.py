"""The dashboard's HTTP surface.

- ``GET /dashboard``: the page (``dashboard.js``, ``dashboard.css`` beside it), static, no
  data in it. Only the ``Host`` check of the admin API applies (403 for another name: DNS
  rebinding); a strict Content-Security-Policy (this origin only, no inline script) and no
  framing (the page has a rollback button).
- ``GET /admin/dashboard/state``: what the page shows, as JSON (:class:`DashboardState`);
  the admin API's own dependency, role ``oncall`` (a key, the admin token, or loopback while
  no key exists). The page polls it every ``refresh_s`` with the person's key, and makes
  changes through the admin API itself (``POST /admin/routes/{route}/rollback``).

The router's lifespan (run inside the app's, once the route service exists) builds the
:class:`DashboardService` on ``app.state.dashboard`` and closes its database reader.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from registry.errors import LoraRouterError
from router.api.access import AdminAccess, Principal, require_oncall
from router.api.openapi import HTML_PAGE, error_responses
from router.dashboard.service import DashboardService
from router.dashboard.views import DashboardState, Viewer, Window

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


class DashboardUnavailable(LoraRouterError):
    """The dashboard's state was asked for before the gateway finished starting."""

    status_code = 503
    code = "dashboard_unavailable"


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    components = getattr(app.state, "components", None)
    routes = getattr(app.state, "route_service", None)
    dashboard = None
    if components is not None and routes is not None:
        dashboard = DashboardService.build(components.settings, components.home, routes)
        app.state.dashboard = dashboard
    try:
        yield
    finally:
        if dashboard is not None:
            app.state.dashboard = None
            await dashboard.close()


router = APIRouter(lifespan=lifespan)


async def check_host(request: Request) -> None:
    """The admin API's ``Host`` check (403 for a name that is not the gateway's)."""
    access: AdminAccess = getattr(request.app.state, "admin_access", None) or AdminAccess()
    access.check_host(request.headers.get("host"))


async def get_dashboard(request: Request) -> DashboardService:
    dashboard: DashboardService | None = getattr(request.app.state, "dashboard", None)
    if dashboard is None:
        raise DashboardUnavailable("the dashboard is not ready yet")
    return dashboard


@cache
def asset(name: str) -> bytes:
    return (resources.files("router.dashboard") / "static" / name).read_bytes()


@router.get(
    "/dashboard", tags=["dashboard"], response_class=HTMLResponse,
    dependencies=[Depends(check_host)],
    responses={**HTML_PAGE, **error_responses(403, 431)},
)
async def page() -> Response:
    """The on-call dashboard (HTML); its data comes from ``/admin/dashboard/state``."""
    return Response(asset("index.html"), media_type="text/html; charset=utf-8",
                    headers=_HEADERS)


def _asset_route(name: str) -> None:
    async def serve() -> Response:
        return Response(asset(name), media_type=_ASSETS[name], headers=_HEADERS)

    router.add_api_route(f"/dashboard/{name}", serve, methods=["GET"], include_in_schema=False,
                         dependencies=[Depends(check_host)], name=f"dashboard_{name}")


for _name in _ASSETS:
    _asset_route(_name)


@router.get(
    "/admin/dashboard/state", tags=["admin"],
    responses=error_responses(401, 403, 422, 431, 503),
)
async def dashboard_state(
    principal: Annotated[Principal, Depends(require_oncall)],
    dashboard: Annotated[DashboardService, Depends(get_dashboard)],
    window: Annotated[Window, Query(description="The traffic window: 15m or 1h.")] = "15m",
) -> DashboardState:
    """Routes with their audit, traffic per adapter and slice, open alerts and incidents."""
    viewer = Viewer(principal=principal.name, role=principal.role.value)
    return await dashboard.state(viewer, window)
