"""The dashboard's HTTP surface.

- ``GET /dashboard``: the page (``dashboard.js``, ``dashboard.css`` beside it), static, no
  data in it. Only the ``Host`` check of the admin API applies (403 for another name: DNS
  rebinding); a strict Content-Security-Policy (this origin only, no inline script) and no
  framing (the page has a rollback button).
- ``GET /admin/dashboard/state``: what the page shows, as JSON (:class:`DashboardState`);
  the admin API's own dependency, role ``oncall`` (a key, the admin token, or loopback while
  no key exists). The page polls it every ``refresh_s`` with the person's key, and makes
  changes through the admin API itself (``POST /admin/routes/{route}/rollback``).

The :class:`DashboardService` is one of the gateway's components
(``router.components.build_components`` builds it and closes its database reader), injected
through ``router.api.deps.dashboard``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from lora_router.router.api.access import Principal, require_oncall
from lora_router.router.api.deps import AdminAccessDep, DashboardDep
from lora_router.router.api.openapi import HTML_PAGE, error_responses
from lora_router.router.dashboard.views import DashboardState, Viewer, Window

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


router = APIRouter()


async def check_host(request: Request, access: AdminAccessDep) -> None:
    """The admin API's ``Host`` check (403 for a name that is not the gateway's)."""
    access.check_host(request.headers.get("host"))


@cache
def asset(name: str) -> bytes:
    return (resources.files("lora_router.router.dashboard") / "static" / name).read_bytes()


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
    dashboard: DashboardDep,
    window: Annotated[Window, Query(description="The traffic window: 15m or 1h.")] = "15m",
) -> DashboardState:
    """Routes with their audit, traffic per adapter and slice, open alerts and incidents."""
    viewer = Viewer(principal=principal.name, role=principal.role.value)
    return await dashboard.state(viewer, window)
