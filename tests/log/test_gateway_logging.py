"""Through the real gateway over HTTP: N requests give exactly N rows with what served them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import uvicorn

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.flags.state import load_routes_file
from lora_router.router.log.factory import build_log_writer
from lora_router.router.settings import Settings
from tests.api.partial import provide
from tests.conftest import free_port

N = 40


async def test_n_requests_make_n_rows_with_model_arm_and_flag_version(
    copy_home: Home, tmp_path: Path
) -> None:
    settings = Settings(home=copy_home.root, database_url=None)
    route = sorted(load_routes_file(settings.routes_path))[0]
    writer = build_log_writer(settings, copy_home)
    await writer.start()
    app = create_app(settings, recorder=writer.record)
    provide(app, log_writer=writer)  # the recorder's writer answers /v1/feedback
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    headers: list[httpx.Headers] = []
    try:
        while not server.started:
            assert not task.done(), "gateway did not start"
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

            async def one(i: int) -> None:
                r = await client.post(
                    "/v1/completions",
                    json={"model": route, "prompt": f"ticket {i}: my order ORD-{1000 + i} is late",
                          "max_tokens": 3, "temperature": 0},
                    headers={"x-route-key": f"user-{i}"},
                )
                assert r.status_code == 200, r.text
                headers.append(r.headers)

            for start in range(0, N, 4):
                await asyncio.gather(*(one(i) for i in range(start, start + 4)))
            fb = await client.post("/v1/feedback", json={
                "request_id": headers[0]["x-request-id"], "was_correct": True})
            assert fb.status_code == 200, fb.text
    finally:
        server.should_exit = True
        await task
        await writer.close()

    sink = writer.sink
    await sink.open()
    rows = {r["request_id"]: r for r in await sink.tail(10 * N)}
    await sink.close()
    assert len(rows) == N
    for h in headers:
        row = rows[h["x-request-id"]]
        assert row["model_id"] == h["x-model-id"]
        assert row["arm"] == h["x-route-arm"]
        assert row["route"] == route
        assert row["flag_version"] == int(h["x-flag-version"])
        assert row["status"] == "ok" and row["input_features"]["entities"]["order_id"] == 1
    assert rows[headers[0]["x-request-id"]]["was_correct"] is True
