"""A gateway with ``engine=remote`` in front of two engine servers (``lora-router serve
--engine-api``), on real Redis, under concurrent load; every piece a real process.

1. A flip to v2 and a rollback to v1 under load fail no request, and every response was
   served by the adapter its flag version names (``x-flag-version`` -> ``x-model-id``); while
   v2 is live, v1 (its rollback target) is loaded on both backends; after the rollback v2 is
   unloaded from both.
2. ``kill -9`` of one backend under load: the requests in flight there are retried on the
   other (nothing had been sent to their clients), so at most that many fail (the number is
   printed); after a restart the backend is re-synced with the resident adapters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from lora_router.ground.home import Home
from tests.conftest import REDIS_URL, require
from tests.harness.engine_servers import (
    EngineServer,
    RemoteGateway,
    copy_home,
    spawn_gateway,
    start_servers,
)
from tests.harness.loadgen import PROMPT, ROUTE, LoadGen, Record

V1, V2 = "support-triage@v1", "support-triage@v2"
CONCURRENCY = 4


@dataclass
class Deployment:
    gateway: RemoteGateway
    backends: list[EngineServer]
    work: Path


@pytest.fixture(scope="module")
def deployment(demo_home: Home, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    work = tmp_path_factory.mktemp("remote-backends")
    homes = [copy_home(demo_home.root, work / f"backend-{i}") for i in range(2)]
    backends = start_servers(homes, work)
    gateway = spawn_gateway(
        copy_home(demo_home.root, work / "gateway-home"), [b.url for b in backends], work,
        env={"REDIS_URL": REDIS_URL, "LORA_ROUTER_REPLICA_ID": "gw-remote",
             "LORA_ROUTER_DRIFT_ENABLED": "false"},
    )
    try:
        gateway.wait_ready()
        yield Deployment(gateway, backends, work)
    finally:
        gateway.stop()
        for b in backends:
            b.stop()
        client.flushdb()
        client.close()


def _until(cond: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ask(gw: RemoteGateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/completions", timeout=30,
                      json={"model": ROUTE, "prompt": PROMPT, "max_tokens": 5})


def _served_under(gw: RemoteGateway, version: int, n: int = 10) -> None:
    """Wait until the gateway serves ``version``, then for ``n`` more of our requests (the
    load generator's run meanwhile)."""
    _until(lambda: _ask(gw).headers.get("x-flag-version") == str(version),
           f"version {version} served")
    for _ in range(n):
        assert _ask(gw).status_code == 200


def _admin(gw: RemoteGateway, action: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{gw.url}/admin/routes/{ROUTE}/{action}", timeout=120,
                   json={"reason": "remote-engine e2e", **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _wrong(records: list[Record], live_of: dict[int, str]) -> list[Record]:
    return [r for r in records
            if not r.ok or r.version is None or live_of.get(r.version) != r.model_id]


def test_a_flip_and_a_rollback_under_load_fail_nothing_and_serve_the_flag_s_adapter(
    deployment: Deployment,
) -> None:
    gw, (a, b) = deployment.gateway, deployment.backends
    start = httpx.get(f"{gw.url}/admin/routes/{ROUTE}", timeout=10).json()
    assert start["live"] == V1
    live_of = {start["version"]: V1}
    load = LoadGen([gw.url], deployment.work, concurrency=CONCURRENCY)
    try:
        _served_under(gw, start["version"])
        flipped = _admin(gw, "set-live", adapter=V2)["state"]
        live_of[flipped["version"]] = V2
        assert flipped["rollback_target"] == V1
        assert a.adapters() == b.adapters() == {V1, V2}  # the rollback target stays warm
        _served_under(gw, flipped["version"])
        rolled = _admin(gw, "rollback")["state"]
        live_of[rolled["version"]] = V1
        _served_under(gw, rolled["version"])
    finally:
        records = load.stop()
    assert _wrong(records, live_of) == []
    served = {r.version for r in records}
    assert set(live_of) <= served, f"load did not span every version: {served}"
    _until(lambda: a.adapters() == b.adapters() == {V1}, "v2 unloaded from both backends")


def test_kill_9_of_a_backend_under_load_fails_at_most_its_in_flight_requests(
    deployment: Deployment,
) -> None:
    gw, (a, b) = deployment.gateway, deployment.backends
    version = httpx.get(f"{gw.url}/admin/routes/{ROUTE}", timeout=10).json()["version"]
    load = LoadGen([gw.url], deployment.work, concurrency=CONCURRENCY)
    try:
        _served_under(gw, version, n=5)
        a.kill()
        killed_at = time.monotonic()
        for _ in range(20):  # served by b meanwhile
            assert _ask(gw).status_code == 200
    finally:
        records = load.stop()
    failed = [r for r in records if not r.ok]
    after = [r for r in records if r.sent > killed_at]
    print(f"\nkill -9 of one backend under load ({CONCURRENCY} clients): {len(failed)} of "
          f"{len(records)} requests failed; {len(after)} sent after the kill")
    # A closed loop of CONCURRENCY clients has at most that many requests in flight, on the
    # killed backend or anywhere; retried ones do not fail at all.
    assert len(failed) <= CONCURRENCY, failed
    assert after, "no load after the kill"
    taken_out = [line for line in gw.log_path.read_text().splitlines()
                 if f"backend {a.url} taken out of service" in line]
    assert taken_out, gw.log_tail()
    print(taken_out[-1])
    status, ready = gw.readiness()  # still ready on b; /readyz says which backend is out
    out = {x["url"]: x for x in ready["engine"]["backends"]}
    assert status == 200 and out[b.url]["up"] and not out[a.url]["up"], ready["engine"]
    assert out[a.url]["reason"], ready["engine"]

    a.start()
    a.wait_ready()
    resident = set(gw.readiness()[1]["adapters"]["resident"])
    _until(lambda: a.adapters() == resident, "the restarted backend re-synced")
    assert b.adapters() == resident

    # with no backend in service nothing can be served: /readyz says so (503), and is 200
    # again once one is back
    a.kill()
    b.kill()
    _until(lambda: gw.readiness()[0] == 503, "unready with no backend")
    assert gw.readiness()[1]["engine"]["no_backend"] is True
    b.start()
    b.wait_ready()
    _until(lambda: gw.readiness()[0] == 200, "ready again with a backend back")
    a.start()
    a.wait_ready()
    _until(lambda: a.adapters() == resident, "the second restart re-synced")
