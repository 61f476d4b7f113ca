"""Liveness, readiness and metrics.

``GET /healthz``: the process answers. ``GET /readyz`` ("can serve"): the base is loaded
and its hash verified, every adapter some route references is resident, and every
long-lived loop (flag listener, heartbeat, load responder, reconciler) is running; 503 with
the same JSON detail otherwise. The detail shows the replica (id, registered with the other
replicas: informational), the adapters (referenced, resident, missing), the route store's
connection and snapshot staleness, and each loop (alive, errors survived, the last one).
A Redis outage alone never makes the gateway unready, however long: it serves its
last-known routes (fail-static), shows ``connected: false`` and how stale they are, and
its heartbeat, once expired, shows ``registered: false`` (writers stop counting it; it
re-registers when Redis is back).
``log`` shows the inference-log writer (sink name and health, queue depth, spool backlog), or
null when the app records through a custom recorder; a log database outage does not make the
gateway unready either: records go to the local spool and are replayed when it is back.
``engine.backends`` lists a remote engine's backends (url, up, the reason one is out, requests
in flight, adapters held; null for the embedded engine); with none in service the gateway
is unready (503), since no request could be served.
``drift`` shows the drift monitor of this replica (whether it holds the lease, its loop, its
last tick: :meth:`router.drift.runtime.DriftRuntime.status`), or null when it is off; it
never makes the gateway unready (it guards quality, not serving).
``GET /metrics``: Prometheus text format (default registry); the per-route flag gauges and
the log's queue and spool gauges are refreshed from in-process state on each scrape
(:mod:`router.metrics` lists the request series).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import to_json
from starlette.responses import PlainTextResponse, Response

from lora_router.router import metrics as request_metrics
from lora_router.router.api.deps import ComponentsDep
from lora_router.router.api.errors import JSON
from lora_router.router.components import Components

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


def readiness(c: Components) -> dict[str, Any]:
    """The readiness detail: base, replica, adapters, route store."""
    states = c.store.all()
    referenced = c.residency.referenced(states)
    resident = set(c.engine.resident_adapters())
    missing = sorted(referenced - resident)
    health = c.store.health()
    base = c.engine.base
    replica = c.flags.status()
    loops = c.flags.loops()
    dead = [loop.name for loop in loops if not loop.alive]
    backends = c.engine.backends()  # a remote engine: unready while none is in service
    no_backend = backends is not None and not any(b["up"] for b in backends)
    return {
        "ready": c.base_verified and not missing and not dead and not no_backend,
        "base": {"name": base.name, "sha256": base.sha256, "verified": c.base_verified,
                 "device": base.device},
        "replica": replica,
        "adapters": {"referenced": sorted(referenced), "resident": sorted(resident),
                     "missing": missing},
        "routes": {"count": len(states), "backend": health.backend,
                   "connected": health.connected, "snapshot_age_s": health.age_s(),
                   "last_sync_at": health.last_sync_at.isoformat()
                   if health.last_sync_at else None},
        "loops": {loop.name: loop.as_dict() for loop in loops},
        "loops_stopped": dead,
        "engine": {"backends": backends, "no_backend": no_backend},
    }


@router.get("/readyz", responses={503: {
    "description": "Not ready: the same detail as the 200 answer, with ready false.",
    "content": {JSON: {"schema": {"type": "object"}}},
}})
async def readyz(c: ComponentsDep) -> Response:
    detail = readiness(c)
    detail["log"] = c.log_writer.status() if c.log_writer is not None else None
    detail["drift"] = c.drift.status() if c.drift is not None else None
    return Response(to_json(detail), status_code=200 if detail["ready"] else 503,
                    media_type=JSON)


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus text
async def metrics(c: ComponentsDep) -> Response:
    _refresh_gauges(c)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _refresh_gauges(c: Components) -> None:
    """The gauges read from in-process state at scrape time (:mod:`router.metrics`)."""
    request_metrics.observe_routes(c.store.all(), c.store.health())
    if c.log_writer is not None:
        request_metrics.observe_log(c.log_writer.status())
