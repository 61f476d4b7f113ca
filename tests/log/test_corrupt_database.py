"""A corrupt or truncated ``inference.db`` never stops the gateway; SQLite calls are bounded."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.ground.home import Home
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.settings import Settings
from tests.conftest import free_port
from tests.log.conftest import make_row
from tests.log.gateway import adapter_ids, live_gateway, prompt_for, write_routes


async def _damage(db: Path, how: str) -> None:
    sink = SqliteSink(db)
    await sink.open()
    await sink.write([make_row() for _ in range(200)])
    await sink.close()
    data = db.read_bytes()
    db.write_bytes(data[:100] if how == "truncated" else b"\x00garbage" * 64)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
async def test_a_corrupt_inference_db_starts_the_gateway_spooling_and_readyz_says_why(
    copy_home: Home, tmp_path: Path, how: str
) -> None:
    await _damage(copy_home.log_dir / "inference.db", how)
    v1, _ = adapter_ids(copy_home)
    routes = write_routes(tmp_path / "routes.yaml", {"triage": {"live": v1}})
    settings = Settings(home=copy_home.root, port=free_port(), routes_file=routes,
                        log_flush_ms=20)
    async with live_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url,
                                                               timeout=60) as client:
        r = await client.post("/v1/completions", json={
            "model": "triage", "prompt": prompt_for(0), "max_tokens": 2})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while True:
            r = await client.get("/readyz")
            log: dict[str, Any] = r.json()["log"]
            if log["spool_pending"] >= 1:
                break
            assert time.monotonic() < deadline, log
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and r.json()["ready"] is True
        assert log["sink"] == "sqlite" and log["healthy"] is False and log["degraded"] is True
        assert "inference.db" in log["sink_error"]
        assert "database" in log["sink_error"]  # "file is not a database" / "malformed"
        assert any(p.startswith("sink sqlite unavailable") for p in log["problems"])


async def test_a_sqlite_call_stuck_on_a_lock_gives_up_within_its_bound(tmp_path: Path) -> None:
    db = tmp_path / "inference.db"
    sink = SqliteSink(db, busy_timeout_ms=120_000, timeout_s=0.2)
    await sink.open()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with pytest.raises(LogStoreUnavailable, match="no answer within"):
            # the guard only stops a hang from hanging the test run
            await asyncio.wait_for(sink.write([make_row(request_id="w1")]), 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # the lock is gone: the sink answers again (the first write may have landed: idempotent)
    await sink.write([make_row(request_id="w1"), make_row(request_id="w2")])
    assert {r["request_id"] for r in await sink.tail(10)} == {"w1", "w2"}
    await sink.close()
