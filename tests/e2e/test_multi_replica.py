"""Three ``lora-router serve`` processes on one throwaway Redis, under concurrent load.

A flip and then a rollback (through the CLI, as on-call would run it) fail no request, and
every request a replica admits after it reported applying the rollback is served under it
by the rollback target. Then Redis is killed mid-load: no request fails (fail-static), and
``/readyz`` shows each gateway disconnected; Redis comes back empty on the same port, the
gateways restore the routes and re-register, and a new flip (which makes every replica load
an adapter first) reaches all of them; a gateway's admin API, whose pooled Redis connections
died with the restart, accepts a flip at once too.

The harness (Redis, gateways, load generator in its own process, applied-report recorder)
is ``tests/harness/cluster.py``, shared with ``bench/rollback.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aredis

from lora_router.ground.home import Home
from lora_router.router.flags.replicas import ApplyReport, ReplicaRegistry
from tests.conftest import require
from tests.harness.cluster import (
    ROOT,
    AppliedRecorder,
    Cluster,
    LoadGen,
    Record,
    open_writer,
    violations,
)

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
REPLICAS = 3
CONCURRENCY = 6


@pytest.fixture(scope="module")
def cluster(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        require("redis-server is not installed (fault tests start their own)")
    work = tmp_path_factory.mktemp("cluster")
    with Cluster.start(demo_home.root, work, replicas=REPLICAS, torch_threads=1) as c:
        yield c


def _cli(cluster: Cluster, *args: str) -> str:
    env = {**os.environ, "REDIS_URL": cluster.redis_url, "COLUMNS": "200",
           "LORA_ROUTER_HOME": str(cluster.writer_home)}
    out = subprocess.run(
        [sys.executable, "-m", "lora_router.router.cli.main", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _assert_applied_by_all(report: ApplyReport | None, cluster: Cluster) -> None:
    assert report is not None
    assert report.pending == []
    assert sorted(report.replicas) == cluster.replica_ids
    assert report.elapsed_ms is not None


def _applied_at(recorder: AppliedRecorder, cluster: Cluster, version: int) -> dict[int, float]:
    """When each gateway's report of ``version`` reached us (each one must have)."""
    at = {g.index: recorder.applied_at(g.replica_id, ROUTE, version) for g in cluster.gateways}
    assert None not in at.values(), f"not every replica reported v{version}: {at}"
    return {i: t for i, t in at.items() if t is not None}


def _failed(records: list[Record]) -> list[Record]:
    return [r for r in records if not r.ok]


def _after(records: list[Record], at: dict[int, float], gateway: int) -> list[Record]:
    return [r for r in records if r.gateway == gateway and r.sent > at[gateway]]


async def _wait_for(what: str, check: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _connected(cluster: Cluster) -> list[bool]:
    out = []
    for gw in cluster.gateways:
        status, detail = gw.readiness()
        assert status == 200, f"{gw.replica_id} not ready: {detail}"
        out.append(bool(detail["routes"]["connected"]))
    return out


async def test_rollback_under_load_fails_nothing_and_every_replica_serves_the_target(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.writer_home is not None
    async with open_writer(cluster.writer_home, cluster.redis_url) as service:
        start = service.show(ROUTE)
        assert start.live == V1
        with AppliedRecorder(cluster.redis_url) as recorder:
            load = LoadGen([g.url for g in cluster.gateways], tmp_path, concurrency=CONCURRENCY)
            try:
                await asyncio.sleep(1.0)
                flip = await service.set_live(ROUTE, V2, actor="e2e", reason="new adapter")
                _assert_applied_by_all(flip.applied, cluster)
                await asyncio.sleep(1.0)
                out = await asyncio.to_thread(
                    _cli, cluster, "rollback", ROUTE, "--reason", "v2 misroutes billing"
                )
                await asyncio.sleep(1.0)
            finally:
                records = load.stop()
            v_set, v_back = flip.state.version, flip.state.version + 1
            assert f"version {v_back}" in out, out
            assert re.search(rf"applied by all {REPLICAS} replicas [\d.]+ ms after commit", out)
            at_set = _applied_at(recorder, cluster, v_set)
            at_back = _applied_at(recorder, cluster, v_back)

    assert not _failed(records), f"{len(_failed(records))} failed, e.g. {_failed(records)[:3]}"
    live_of = {start.version: V1, v_set: V2, v_back: V1}
    assert service.show(ROUTE).live == V1
    assert any(r.version == v_set and r.model_id == V2 for r in records), "v2 never served"
    assert not violations(records, version=v_set, applied_at=at_set, live_of=live_of)
    assert not violations(records, version=v_back, applied_at=at_back, live_of=live_of)
    for gw in cluster.gateways:
        after = _after(records, at_back, gw.index)
        assert len(after) >= 5, f"too few requests to {gw.replica_id} after the rollback"
        assert {(r.model_id, r.version, r.arm) for r in after} == {(V1, v_back, "live")}


async def test_redis_loss_mid_load_fails_nothing_and_a_later_flip_reaches_every_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.redis is not None and cluster.writer_home is not None
    client = aredis.Redis.from_url(cluster.redis_url, socket_timeout=2, socket_connect_timeout=1)
    registry = ReplicaRegistry(client)

    async def all_registered() -> bool:
        try:
            return await registry.live() == cluster.replica_ids
        except Exception:  # Redis still coming back
            return False

    try:
        async with open_writer(cluster.writer_home, cluster.redis_url) as service:
            before = service.show(ROUTE)
            target = V2 if before.live == V1 else V1
            with AppliedRecorder(cluster.redis_url) as recorder:
                load = LoadGen([g.url for g in cluster.gateways], tmp_path,
                               concurrency=CONCURRENCY)
                try:
                    await asyncio.sleep(1.0)
                    cluster.redis.stop(kill=True)
                    down_at = time.monotonic()
                    await _wait_for("every gateway to see Redis gone",
                                    lambda: not any(_connected(cluster)), 10)
                    await asyncio.sleep(1.5)
                    up_at = time.monotonic()
                    cluster.redis.start()
                    await _wait_for("every gateway to resync",
                                    lambda: all(_connected(cluster)), 15)
                    deadline = time.monotonic() + 10
                    while not await all_registered():
                        assert time.monotonic() < deadline, "replicas did not re-register"
                        await asyncio.sleep(0.1)
                    # on-call's command: a fresh process, as after any outage
                    out = await asyncio.to_thread(
                        _cli, cluster, "set-live", ROUTE, target, "--reason", "after the outage"
                    )
                    await asyncio.sleep(1.0)
                finally:
                    records = load.stop()
                    if not await _redis_up(client):  # leave the module's Redis running
                        cluster.redis.start()
                version = before.version + 1  # versions keep rising across the data loss
                assert f"version {version}" in out, out
                assert re.search(
                    rf"applied by all {REPLICAS} replicas [\d.]+ ms after commit", out
                ), out
                at_flip = _applied_at(recorder, cluster, version)
    finally:
        await client.aclose()

    assert not _failed(records), f"{len(_failed(records))} failed, e.g. {_failed(records)[:3]}"
    live_of = {before.version: before.live, version: target}
    for gw in cluster.gateways:
        outage = [r for r in records if r.gateway == gw.index and down_at < r.sent < up_at]
        assert len(outage) >= 5, f"too few requests to {gw.replica_id} while Redis was down"
        assert {(r.model_id, r.version) for r in outage} == {(before.live, before.version)}
        after = _after(records, at_flip, gw.index)
        assert len(after) >= 5, f"too few requests to {gw.replica_id} after the flip"
        assert {(r.model_id, r.version) for r in after} == {(target, version)}
    assert not violations(records, version=version, applied_at=at_flip, live_of=live_of)


async def _redis_up(client: aredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


async def test_a_gateway_admin_flip_right_after_redis_returns_is_accepted(
    cluster: Cluster,
) -> None:
    """A long-lived writer (the gateway's admin API) holds pooled connections that a Redis
    restart killed: its first write afterwards must still go through."""
    assert cluster.redis is not None
    cluster.redis.stop(kill=True)
    cluster.redis.start()
    await _wait_for("every gateway to resync", lambda: all(_connected(cluster)), 15)
    client = aredis.Redis.from_url(cluster.redis_url, socket_timeout=2, socket_connect_timeout=1)
    try:
        registry = ReplicaRegistry(client)
        deadline = time.monotonic() + 10
        while await registry.live() != cluster.replica_ids:
            assert time.monotonic() < deadline, "replicas did not re-register"
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    async with httpx.AsyncClient(base_url=cluster.gateways[0].url, timeout=30) as http:
        state = (await http.get(f"/admin/routes/{ROUTE}")).json()
        if state["rollback_target"]:
            r = await http.post(f"/admin/routes/{ROUTE}/rollback", json={"reason": "e2e"})
        else:
            other = V2 if state["live"] == V1 else V1
            r = await http.post(f"/admin/routes/{ROUTE}/set-live",
                                json={"adapter": other, "reason": "e2e"})
    assert r.status_code == 200, r.text
    assert r.json()["applied"]["pending"] == []
