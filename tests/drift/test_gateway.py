"""Through the real gateway over HTTP: feedback on a bad canary gets it dropped by the guard.

The gateway's lifespan starts the monitor (``drift_enabled``, on by default) next to the
log writer; requests are served by the real tiny model; outcomes arrive by
``POST /v1/feedback`` (the canary's Spanish answers are marked wrong); the guard clears
the canary through the route service and opens an incident.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import uvicorn
import yaml

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.settings import Settings
from tests.conftest import free_port

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
TICKETS = {
    "en": "Ticket: I was charged twice for the same invoice, please help\nCategory:",
    "es": "Ticket: Hola, me cobraron dos veces la misma factura, por favor ayuda\nCategory:",
}


def routes_file(home: Home, path: Path) -> Path:
    routes = yaml.safe_load(home.routes_file.read_text())["routes"]
    routes[ROUTE].update(
        live=V1, canary={"adapter": V2, "percent": 50},
        guard={"auto_rollback": True, "protect": ["language=es"], "min_labels": 10},
    )
    path.write_text(yaml.safe_dump({"routes": routes}))
    return path


async def test_the_gateway_monitor_drops_a_canary_that_fails_spanish(
        copy_home: Home, tmp_path: Path) -> None:
    settings = Settings(home=copy_home.root, database_url=None, redis_url=None,
                        routes_file=routes_file(copy_home, tmp_path / "routes.yaml"),
                        drift_interval_s=0.05)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "gateway did not start"
            await asyncio.sleep(0.05)
        assert app.state.components.drift.status()["leader"] is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            served = 0
            deadline = time.monotonic() + 120
            while app.state.components.route_service.show(ROUTE).canary is not None:
                assert time.monotonic() < deadline and served < 1200, "canary never dropped"
                lang = "es" if served % 2 else "en"
                r = await client.post(
                    "/v1/completions",
                    json={"model": ROUTE, "prompt": TICKETS[lang], "max_tokens": 3,
                          "temperature": 0},
                    headers={"x-route-key": f"user-{served}"})
                assert r.status_code == 200, r.text
                served += 1
                arm = r.headers["x-route-arm"]
                fb = await client.post("/v1/feedback", json={
                    "request_id": r.headers["x-request-id"],
                    "was_correct": not (arm == "canary" and lang == "es")})
                assert fb.status_code == 200, fb.text
            metrics = (await client.get("/metrics")).text
        assert any(line.startswith("lora_router_drift_alerts_total{") and 'arm="canary"' in line
                   for line in metrics.splitlines())
        state = app.state.components.route_service.show(ROUTE)
        assert state.live == V1 and state.updated_by == "guard"
        [incident] = await app.state.components.drift.store.incidents()
        assert incident.model_id == V2 and incident.arm == "canary"
        assert incident.status == "contained"
    finally:
        server.should_exit = True
        await task
