"""SIGKILL (an OOM kill, a crash) of `lora-router serve` under load: every response has a row.

A record reaches the journal (one ``write(2)``: in the OS page cache) before its response is
sent, so killing the process loses none of them: the next start on the same home replays
the dead process's journal segments (idempotent on ``request_id``). Load runs from 8
clients; the gateway is killed after ``KILL_AFTER`` responses, while requests are in flight
and records wait in the writer's queue (``LORA_ROUTER_LOG_FLUSH_MS=1000``: a batch is
written once a second at this rate, so the last second of records is only in the queue and
the journal). Then:

    responses without a row == 0, no row twice, and at most one row per client for a
    request that was in flight when the process died (recorded, answer never received)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from lora_router.ground.home import Home
from lora_router.router.log.spool import Spool
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, prompt_for, serve_process, wait_ready, write_routes

KILL_AFTER = 80  # responses received before the SIGKILL
CLIENTS = 8
COLUMNS = "request_id, model_id, arm, flag_version, status, parent_request_id"


@dataclass
class Load:
    responses: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    ambiguous: int = 0  # sent, then the connection died: recorded or not, unknown
    refused: int = 0


async def _load_until_killed(url: str, route: str, pid: int) -> Load:
    load = Load()
    counter = iter(range(10**6))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            body = {"model": route, "prompt": prompt_for(i), "max_tokens": 4}
            try:
                r = await client.post(
                    "/v1/completions", json=body, headers={"x-route-key": f"user-{i}"}
                )
            except httpx.ConnectError:
                load.refused += 1
                return
            except httpx.TransportError:
                load.ambiguous += 1
                continue
            load.responses[r.headers["x-request-id"]] = (r.status_code, dict(r.headers))
            if len(load.responses) == KILL_AFTER:
                os.kill(pid, signal.SIGKILL)

    clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(CLIENTS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(client_loop(c) for c in clients)), 120)
    finally:
        for c in clients:
            await c.aclose()
    return load


def _rows(home: Home, database_url: str | None) -> list[tuple[Any, ...]]:
    sql = f"SELECT {COLUMNS} FROM inference_log"
    if database_url:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    with sqlite3.connect(home.log_dir / "inference.db") as db:
        return db.execute(sql).fetchall()


def _journal(home: Home) -> list[Path]:
    return sorted((home.log_dir / "journal").glob("j-*.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_sigkill_under_load_then_restart_every_response_has_exactly_one_row(
    copy_home: Home, tmp_path: Path, request: pytest.FixtureRequest, db: str
) -> None:
    database_url = request.getfixturevalue("pg_url") if db == "postgres" else None
    v1, v2 = adapter_ids(copy_home)
    routes = write_routes(
        tmp_path / "routes.yaml", {"triage": {"live": v1, "canary": {"adapter": v2,
                                                                       "percent": 50}}}
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LORA_ROUTER_LOG_FLUSH_MS": "1000"}
    proc = serve_process(copy_home, routes, port, database_url, env)
    try:
        await asyncio.to_thread(wait_ready, proc, url)
        load = await _load_until_killed(url, "triage", proc.pid)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(load.responses) >= KILL_AFTER and load.refused >= 1
    before = {r[0] for r in _rows(copy_home, database_url)}
    missing_before = [rid for rid in load.responses if rid not in before]
    left = _journal(copy_home)

    proc = serve_process(copy_home, routes, port, database_url, env)
    try:
        await asyncio.to_thread(wait_ready, proc, url)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 90) in (0, -signal.SIGTERM)
    rows = _rows(copy_home, database_url)
    by_id = {r[0]: r for r in rows}
    missing = [rid for rid in load.responses if rid not in by_id]
    print(f"\nSIGKILL [{db}]: {len(load.responses)} responses, {len(rows)} rows after restart, "
          f"{len(missing_before)} responses without a row before the restart, "
          f"{len(missing)} after; {load.ambiguous} requests in flight at the kill")
    assert missing == [], f"{len(missing)} of {len(load.responses)} responses have no row"
    assert left, "the killed process left no journal segment"  # what the restart replayed
    assert len(by_id) == len(rows), "a request recorded twice"
    assert len(rows) - len(load.responses) <= load.ambiguous
    for rid, (status, h) in load.responses.items():
        _, model_id, arm, flag_version, row_status, _ = by_id[rid]
        assert row_status == ("ok" if status == 200 else "error"), (rid, status, row_status)
        if status == 200:
            assert (model_id, arm, flag_version) == (
                h["x-model-id"], h["x-route-arm"], int(h["x-flag-version"]))
    assert _journal(copy_home) == [], "journal segments left after the replay"
    assert not Spool(copy_home.log_dir / "spool").has_work()
