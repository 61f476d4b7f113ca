"""``/readyz`` shows the inference-log writer; a log database outage does not make it 503."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from lora_router.ground.home import Home
from lora_router.router.settings import Settings
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, live_gateway, prompt_for, write_routes


async def test_readyz_shows_the_log_sink_down_and_the_spool_growing_but_stays_ready(
    copy_home: Home, tmp_path: Path
) -> None:
    v1, _ = adapter_ids(copy_home)
    routes = write_routes(tmp_path / "routes.yaml", {"triage": {"live": v1}})
    # nothing listens on this port: the PostgreSQL log database is down from the start
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    settings = Settings(home=copy_home.root, port=free_port(), routes_file=routes,
                        database_url=dead, log_flush_ms=20)
    async with live_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url,
                                                               timeout=60) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        log = r.json()["log"]
        assert log["sink"] == "postgres" and log["healthy"] is False
        assert log["spool_pending"] == 0
        done = await client.post("/v1/completions", json={
            "model": "triage", "prompt": prompt_for(0), "max_tokens": 2})
        assert done.status_code == 200, done.text
        deadline = time.monotonic() + 10
        detail: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = await client.get("/readyz")
            detail = r.json()
            if detail["log"]["spool_pending"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and detail["ready"] is True
        assert detail["log"]["spool_pending"] == 1 and detail["log"]["healthy"] is False
        assert detail["log"]["queued"] == 0
