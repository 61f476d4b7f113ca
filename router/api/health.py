"""Liveness and readiness.

``GET /healthz``: the process answers. ``GET /readyz``: the base is loaded and its hash
verified, and every adapter some route references is resident; 503 with the same JSON
detail otherwise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic_core import to_json
from starlette.responses import Response

from router.api.deps import Components
from router.api.errors import JSON

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


def readiness(c: Components) -> dict[str, Any]:
    """The readiness detail: base, adapters (referenced, resident, missing), route store."""
    referenced = c.residency.referenced(c.store.all())
    resident = set(c.engine.resident_adapters())
    missing = sorted(referenced - resident)
    health = c.store.health()
    base = c.engine.base
    return {
        "ready": c.base_verified and not missing,
        "base": {"name": base.name, "sha256": base.sha256, "verified": c.base_verified,
                 "device": base.device},
        "adapters": {"referenced": sorted(referenced), "resident": sorted(resident),
                     "missing": missing},
        "routes": {"count": len(c.store.all()), "backend": health.backend,
                   "connected": health.connected, "snapshot_age_s": health.age_s()},
    }


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    components: Components | None = getattr(request.app.state, "components", None)
    if components is None:
        detail: dict[str, Any] = {"ready": False, "reason": "starting"}
    else:
        detail = readiness(components)
    return Response(to_json(detail), status_code=200 if detail["ready"] else 503,
                    media_type=JSON)
