"""SIGTERM to `lora-router serve` under concurrent load: every admitted request has its row.

Admitted means the gateway gave the request an id (it reached the completion handler); from
then on it is recorded exactly once, ok or error, whatever happens to the process. The client
sees admission for every request that got a response (its ``x-request-id``). An attempt that
died on a transport error after it was sent may or may not have been admitted (the server
may close an idle keep-alive connection just as a request arrives on it), and a refused
connection was not. So, after SIGTERM, a clean exit, and a restart on the same home:

    responses  <=  rows of primaries  <=  responses + ambiguous transport failures

with every response's row matching it (status, model_id, arm, flag version), no row twice,
and the spool empty. Shadow copies (rows with a parent) are counted apart and each names a
primary row.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
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

SIGTERM_AFTER = 40  # responses received before the signal
CLIENTS = 8
CLEAN_EXIT = (0, -signal.SIGTERM)
COLUMNS = "request_id, model_id, arm, flag_version, status, parent_request_id"


@dataclass
class Load:
    responses: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    ambiguous: int = 0  # sent, then a transport error: admitted or not, unknown
    refused: int = 0  # connection refused: not admitted


async def _load(url: str, route: str, proc: subprocess.Popen[bytes]) -> Load:
    """Clients loop until the gateway refuses connections; SIGTERM after SIGTERM_AFTER."""
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
            if len(load.responses) == SIGTERM_AFTER:
                proc.send_signal(signal.SIGTERM)

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


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_sigterm_under_load_every_admitted_request_has_its_row(
    copy_home: Home, tmp_path: Path, request: pytest.FixtureRequest, db: str
) -> None:
    database_url = request.getfixturevalue("pg_url") if db == "postgres" else None
    v1, v2 = adapter_ids(copy_home)
    routes = write_routes(
        tmp_path / "routes.yaml",
        {
            "triage": {
                "live": v1,
                "canary": {"adapter": v2, "percent": 50},
                "shadow": {"adapter": v2, "percent": 100},
            },
        },
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(copy_home, routes, port, database_url)
    try:
        wait_ready(proc, url)
        load = await _load(url, "triage", proc)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -15 is clean
        assert await asyncio.to_thread(proc.wait, 90) in CLEAN_EXIT
    finally:
        _stop(proc)

    assert len(load.responses) >= SIGTERM_AFTER and load.refused >= 1
    first = _rows(copy_home, database_url)

    # restart on the same home: replays anything spooled, then a clean stop again
    proc = serve_process(copy_home, routes, port, database_url)
    try:
        wait_ready(proc, url)
    finally:
        assert _stop(proc) in CLEAN_EXIT
    rows = _rows(copy_home, database_url)
    assert not Spool(copy_home.log_dir / "spool").has_work()

    by_id = {r[0]: r for r in rows}
    assert len(by_id) == len(rows), "a request recorded twice"
    primaries = {rid for rid, *_, parent in rows if parent is None}
    copies = [r for r in rows if r[5] is not None]
    assert set(load.responses) <= primaries, "a served request has no row"
    assert len(primaries) - len(load.responses) <= load.ambiguous, (
        f"{len(primaries)} rows for {len(load.responses)} responses "
        f"and {load.ambiguous} ambiguous attempts"
    )
    # the drain at SIGTERM already wrote every primary (the restart adds nothing to them)
    assert {r[0] for r in first if r[5] is None} == primaries
    for rid, (status, h) in load.responses.items():
        _, model_id, arm, flag_version, row_status, _ = by_id[rid]
        assert row_status == ("ok" if status == 200 else "error"), (rid, status, row_status)
        if status == 200:
            assert (model_id, arm, flag_version) == (
                h["x-model-id"],
                h["x-route-arm"],
                int(h["x-flag-version"]),
            )
    for c in copies:
        assert c[5] in primaries and c[2] == "shadow" and c[1] == v2
