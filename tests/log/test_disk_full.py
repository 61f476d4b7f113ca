"""A full disk while the log database is down too: requests are served, nothing is lost, and
``/readyz`` and the metrics say so (a tiny tmpfs mounted over the home's ``log/`` folder)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lora_router.ground.home import Home
from lora_router.router.settings import Settings
from tests.conftest import free_port, require
from tests.log.conftest import PgCluster
from tests.log.gateway import adapter_ids, live_gateway, prompt_for, write_routes

N = 30


@pytest.fixture
def tiny_log_disk(copy_home: Home) -> Iterator[Path]:
    """``<home>/log`` on a 256 KiB tmpfs (needs root: mount)."""
    target = copy_home.log_dir
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        require("a tiny tmpfs for the disk-full test needs root (mount)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs",
                           str(target)], capture_output=True, timeout=30)
    if done.returncode != 0:
        require(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def _wait_log(
    client: httpx.AsyncClient, pred: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get("/readyz")
        detail: dict[str, Any] = r.json()
        if pred(detail["log"]):
            assert r.status_code == 200 and detail["ready"] is True, detail
            return detail
        assert time.monotonic() < deadline, (detail["log"]["problems"], detail["log"])
        await asyncio.sleep(0.1)


async def test_disk_full_and_database_down_serves_keeps_every_record_and_says_so(
    copy_home: Home, tiny_log_disk: Path, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    v1, _ = adapter_ids(copy_home)
    routes = write_routes(tmp_path / "routes.yaml", {"triage": {"live": v1}})
    settings = Settings(home=copy_home.root, port=free_port(), routes_file=routes,
                        database_url=pg_cluster.url, log_flush_ms=20)
    async with live_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url,
                                                               timeout=60) as client:
        before = _samples((await client.get("/metrics")).text)
        await asyncio.to_thread(pg_cluster.stop)
        filler = _fill(tiny_log_disk)
        ids = []
        for i in range(N):
            r = await client.post("/v1/completions", json={
                "model": "triage", "prompt": prompt_for(i), "max_tokens": 2})
            assert r.status_code == 200, r.text  # served, whatever the log's state
            ids.append(r.headers["x-request-id"])

        # nowhere to write: the records are held in memory, and that is said, not hidden
        detail = await _wait_log(client, lambda log: log["held"] == N)
        log = detail["log"]
        assert log["degraded"] is True and log["dropped"] == 0 and log["healthy"] is False
        assert log["journal"]["ok"] is False and log["journal"]["error"].startswith("ENOSPC")
        assert log["journal"]["unjournaled"] >= 1
        problems = " | ".join(log["problems"])
        assert "ENOSPC" in problems and "a crash would lose them" in problems
        after = _samples((await client.get("/metrics")).text)

        def grew(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert grew("lora_router_log_disk_errors_total", file="journal", error="ENOSPC") > 0
        assert grew("lora_router_log_disk_errors_total", file="spool", error="ENOSPC") > 0
        assert after[("lora_router_log_held", ())] == N
        assert after[("lora_router_log_journal_ok", ())] == 0
        assert after[("lora_router_log_degraded", ())] == 1

        # the database is back (the disk still full): every held record reaches it
        await asyncio.to_thread(pg_cluster.start)
        await _wait_log(client, lambda log: log["held"] == 0 and log["healthy"], timeout=60)
        assert pg_cluster.count() == (N, N)
        # space again: the next record is journaled, nothing is left to report
        filler.unlink()
        r = await client.post("/v1/completions", json={
            "model": "triage", "prompt": prompt_for(N), "max_tokens": 2})
        assert r.status_code == 200
        detail = await _wait_log(client, lambda log: not log["degraded"])
        assert detail["log"]["journal"]["unjournaled"] == 0
    with contextlib.suppress(FileNotFoundError):
        assert not list((tiny_log_disk / "journal").glob("j-*.jsonl"))
    assert pg_cluster.count() == (N + 1, N + 1)
