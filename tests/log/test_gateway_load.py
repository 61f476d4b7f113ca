"""Load over real HTTP through the gateway's DEFAULT log writer (SQLite, and PostgreSQL via
``DATABASE_URL``): N admitted requests give exactly N rows, and each shadow copy one more row,
each with the model_id, arm, route and flag version its response announced."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from lora_router.ground.home import Home
from lora_router.router.flags.state import load_routes_file
from lora_router.router.log.factory import build_sink
from lora_router.router.routing import choose
from lora_router.router.settings import Settings
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, live_gateway, prompt_for, shadow_factory, write_routes

N = 60  # requests, of which every 20th names an unknown model (a failed, recorded request)
CANARY, SHADOW = "triage-canary", "triage-shadow"


Result = tuple[int, int, dict[str, str]]  # request index, HTTP status, response headers


async def _one(client: httpx.AsyncClient, i: int) -> Result:
    """Request ``i``: alternating routes, every 5th streamed, every 20th a bad model."""
    model = "no-such-route" if i % 20 == 19 else (CANARY, SHADOW)[i % 2]
    body: dict[str, Any] = {"model": model, "prompt": prompt_for(i), "max_tokens": 3}
    headers = {"x-route-key": f"user-{i}"}
    if i % 5 == 0:
        async with client.stream(
            "POST", "/v1/completions", json={**body, "stream": True}, headers=headers
        ) as r:
            lines = [line async for line in r.aiter_lines() if line]
            if r.status_code == 200:
                assert lines[-1] == "data: [DONE]", lines
                assert not any('"error"' in line for line in lines), lines
            return i, r.status_code, dict(r.headers)
    r = await client.post("/v1/completions", json=body, headers=headers)
    return i, r.status_code, dict(r.headers)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_n_requests_make_n_rows_and_one_per_shadow_copy(
    copy_home: Home, tmp_path: Path, request: pytest.FixtureRequest, db: str
) -> None:
    v1, v2 = adapter_ids(copy_home)
    routes = write_routes(
        tmp_path / "routes.yaml",
        {
            CANARY: {"live": v1, "canary": {"adapter": v2, "percent": 30}},
            SHADOW: {"live": v1, "shadow": {"adapter": v2, "percent": 50}},
        },
    )
    database_url = request.getfixturevalue("pg_url") if db == "postgres" else None
    # batches wider than the load can fill: the engine is never saturated, so no copy drops
    settings = Settings(
        home=copy_home.root,
        port=free_port(),
        routes_file=routes,
        database_url=database_url,
        max_batch_size=128,
        log_batch_size=16,
        log_flush_ms=50,
    )
    results: list[Result] = []
    async with live_gateway(settings, shadow=shadow_factory(max_inflight=N)) as gw:
        assert gw.app.state.components.log_writer.sink.name == db
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            todo = iter(range(N))

            async def worker() -> None:
                for i in todo:
                    results.append(await _one(client, i))

            await asyncio.gather(*(worker() for _ in range(8)))
        assert gw.shadow is not None
        assert gw.shadow.dropped == {}, gw.shadow.dropped
        submitted = gw.shadow.submitted
    # the lifespan's exit drained the writer

    sink = build_sink(settings, copy_home)
    await sink.open()
    try:
        rows = await sink.tail(10 * N)
    finally:
        await sink.close()

    by_id = {r["request_id"]: r for r in rows}
    assert len(by_id) == len(rows), "duplicate request ids"
    primaries = [r for r in rows if r["parent_request_id"] is None]
    copies = [r for r in rows if r["parent_request_id"] is not None]
    assert len(results) == N and len(primaries) == N, (len(results), len(primaries))
    assert len(copies) == submitted

    states = load_routes_file(routes)
    expected_copies = set()
    for i, status, h in results:
        row = by_id[h["x-request-id"]]
        if status != 200:
            assert status == 404 and row["status"] == "error" and row["arm"] is None
            assert row["model_id"] == "no-such-route" and row["error"]
            continue
        assert row["status"] == "ok" and row["output"] is not None
        assert row["model_id"] == h["x-model-id"]
        assert row["arm"] == h["x-route-arm"]
        assert row["route"] == h["x-route"]
        assert row["flag_version"] == int(h["x-flag-version"])
        decision = choose(states[h["x-route"]], f"user-{i}")
        assert (decision.adapter_id, decision.arm) == (h["x-model-id"], h["x-route-arm"])
        if decision.shadow_adapter is not None:
            expected_copies.add(h["x-request-id"])
    arms = {(h.get("x-route"), h.get("x-route-arm")) for _, s, h in results if s == 200}
    assert (CANARY, "canary") in arms and (CANARY, "live") in arms, "the split was not exercised"

    assert {c["parent_request_id"] for c in copies} == expected_copies and expected_copies
    for c in copies:
        parent = by_id[c["parent_request_id"]]
        assert c["request_id"] == f"{parent['request_id']}-shadow"
        assert (c["model_id"], c["arm"], c["status"]) == (v2, "shadow", "ok")
        assert (c["route"], c["flag_version"]) == (SHADOW, parent["flag_version"])
        assert c["input_hash"] == parent["input_hash"]
