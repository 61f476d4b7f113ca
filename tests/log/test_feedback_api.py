"""``POST /v1/feedback`` over real HTTP (uvicorn on a free port), on both sinks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from lora_router.router.api.errors import install_error_handlers
from lora_router.router.api.feedback import router as feedback_router
from lora_router.router.log.sink import LogSink
from lora_router.router.log.writer import LogWriter
from tests.api.partial import provide
from tests.conftest import free_port
from tests.log.conftest import make_record, make_writer


def _app(writer: LogWriter) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await writer.start()
        yield
        await writer.close()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(feedback_router)
    return provide(app, log_writer=writer)


@pytest.fixture
async def served(sink: LogSink, tmp_path: Path) -> AsyncIterator[tuple[str, LogWriter]]:
    writer = make_writer(sink, tmp_path, batch_size=1000, flush_ms=60_000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(writer), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", writer
    server.should_exit = True
    await task


async def test_feedback_sets_the_outcome_of_a_just_served_request(
    served: tuple[str, LogWriter], sink: LogSink
) -> None:
    url, writer = served
    writer.record(make_record("req-1"))  # still queued: the writer flushes before answering
    body = {"request_id": "req-1", "was_correct": False, "failure_cluster": "wrong-team"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = await client.post("/v1/feedback", json=body)
        again = await client.post("/v1/feedback", json=body)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() == body
        row = await sink.get("req-1")
        assert row is not None and row["was_correct"] is False
        assert row["failure_cluster"] == "wrong-team"

        cleared = await client.post("/v1/feedback", json={"request_id": "req-1",
                                                           "was_correct": True})
        assert cleared.status_code == 200
        row = await sink.get("req-1")
        assert row is not None and row["was_correct"] is True and row["failure_cluster"] is None


async def test_feedback_for_an_unknown_request_is_404_and_a_bad_body_422(
    served: tuple[str, LogWriter],
) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        missing = await client.post("/v1/feedback", json={"request_id": "nope",
                                                          "was_correct": True})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "request_not_found"
        bad = await client.post("/v1/feedback", json={"request_id": "x", "was_correct": "maybe"})
        assert bad.status_code == 422
        extra = await client.post("/v1/feedback", json={"request_id": "x", "was_correct": True,
                                                        "label": "y"})
        assert extra.status_code == 422
