"""Two real gateways on one real Redis (a private redis-server): gated residency across
replicas, over real HTTP.

Gateway ``gw-a`` serves a clean copy of the demo home (admin token set), ``gw-b`` a copy in
which one byte of v2's weights differs from its model card. Both start with route
``support-triage`` live on v1 only. The tests run in order and share the two gateways:

1. both are ready and registered; /readyz names the replica, the resident adapters and the
   flag store's staleness;
2. the admin API wants the token on gw-a (the CLI sends it from the environment);
3. a canary to v2 is refused because gw-b cannot load it (its reason in the answer), the
   route stays on v1 everywhere, and gw-a's gate-loaded v2 is dropped after its grace;
4. with gw-b's file repaired, the canary commits only after both loaded v2;
5. a rollback under load: no request fails, and v2 is unloaded on both afterwards;
6. a change that reaches the replicas without the gate (written to Redis directly) is made
   resident by each replica's reconciler;
7. a third replica started with a routes file naming an unknown adapter is refused (by
   ``lora-router serve`` in one line, and by the gateway's own start) before anything
   reaches Redis: the running replicas stay ready.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from typer.testing import CliRunner

from lora_router.demo.task import format_prompt
from lora_router.ground.errors import ConfigError
from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.cli.main import app
from lora_router.router.flags import keys
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway, write_routes
from tests.conftest import free_port, require
from tests.flags.conftest import RedisServer

PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")
WEIGHTS = "adapter_model.safetensors"
TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GRACE_S = 1.5


@dataclass
class Cluster:
    a: Gateway
    b: Gateway
    v1: str
    v2: str
    b_weights: Path
    redis: redis.Redis
    redis_url: str

    def both(self) -> tuple[Gateway, Gateway]:
        return self.a, self.b


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resident(gw: Gateway) -> set[str]:
    return set(gw.components.engine.resident_adapters())


def complete(gw: Gateway, key: str = "user-1") -> tuple[str, str]:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0,
                           timeout=60)
    raw = client.completions.with_raw_response.create(
        model="support-triage", prompt=PROMPT, max_tokens=3, extra_headers={"x-route-key": key}
    )
    return raw.headers["x-model-id"], raw.headers["x-route-arm"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this module: replicas of other test runs on the shared
    Redis would otherwise take part in the load handshake."""
    if shutil.which("redis-server") is None:
        require("redis-server binary not on PATH")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    demo_home: Home, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    redis_url = redis_server.url
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    root = tmp_path_factory.mktemp("gating")
    homes = {}
    for name in ("a", "b"):
        shutil.copytree(demo_home.root, root / name, ignore=shutil.ignore_patterns("log"))
        homes[name] = Home.at(root / name)
    v1, v2 = adapter_ids(demo_home)
    b_weights = homes["b"].adapter_dir(v2) / WEIGHTS
    flip_byte(b_weights)
    routes = write_routes(root / "routes.yaml", {"support-triage": {"live": v1}})
    common: dict[str, Any] = dict(
        routes_file=routes, redis_url=redis_url, torch_threads=1, flags_ack_timeout_s=5,
        flags_load_grace_s=GRACE_S, replica_ttl_s=2, replica_heartbeat_s=0.2,
        flags_resync_s=0.5,
    )
    a = start_gateway(Settings(home=homes["a"].root, port=free_port(), replica_id="gw-a",
                               admin_token=TOKEN, **common))
    try:
        b = start_gateway(Settings(home=homes["b"].root, port=free_port(), replica_id="gw-b",
                                   **common))
    except BaseException:
        a.stop()
        raise
    try:
        yield Cluster(a, b, v1, v2, b_weights, client, redis_url)
    finally:
        b.stop()
        a.stop()
        client.close()


def test_both_replicas_are_ready_and_registered(cluster: Cluster) -> None:
    for gw, rid in ((cluster.a, "gw-a"), (cluster.b, "gw-b")):
        r = httpx.get(f"{gw.url}/readyz", timeout=10)
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["replica"]["id"] == rid and d["replica"]["registered"] is True
        assert d["replica"]["mode"] == "redis"
        assert d["adapters"]["resident"] == [cluster.v1] and d["adapters"]["missing"] == []
        assert d["routes"]["backend"] == "redis" and d["routes"]["connected"] is True
        assert 0 <= d["routes"]["snapshot_age_s"] < 5
        # the resident set is published for the other replicas and the operators
        assert cluster.redis.smembers(f"lr:replica:{rid}:resident") == {cluster.v1.encode()}
    assert cluster.redis.smembers("lr:replicas") == {b"gw-a", b"gw-b"}
    metrics = httpx.get(f"{cluster.a.url}/metrics", timeout=10).text
    assert "lora_router_replica_registered 1.0" in metrics
    assert 'lora_router_adapter_loads_total{outcome="ok"}' in metrics


def test_the_admin_api_requires_the_token_when_one_is_set(cluster: Cluster) -> None:
    url = f"{cluster.a.url}/admin/routes/support-triage"
    missing = httpx.get(url, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    wrong = httpx.post(f"{url}/rollback", json={"reason": "x"}, timeout=10,
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid admin token"
    assert httpx.get(url, headers=AUTH, timeout=10).json()["version"] == 1
    assert httpx.get(f"{cluster.b.url}/admin/routes/support-triage", timeout=10).is_success

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    cmd = [sys.executable, "-m", "lora_router.router.cli.main", "route", "show", "support-triage",
           "--url", cluster.a.url]
    ok = subprocess.run(cmd, env={**env, "LORA_ROUTER_ADMIN_TOKEN": TOKEN, "COLUMNS": "200"},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert cluster.v1 in ok.stdout
    denied = subprocess.run(cmd, env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                            timeout=120)
    assert denied.returncode == 2 and "Authorization: Bearer" in denied.stderr
    assert "Traceback" not in denied.stderr


def test_a_replica_that_cannot_load_refuses_the_change_for_everyone(cluster: Cluster) -> None:
    r = httpx.post(f"{cluster.a.url}/admin/routes/support-triage/canary", headers=AUTH,
                   json={"adapter": cluster.v2, "percent": 50, "reason": "try v2"}, timeout=60)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "route_change_refused"
    assert "gw-b: adapter_integrity_error" in err["message"] and WEIGHTS in err["message"]
    assert "gw-a" not in err["message"]  # gw-a could load it
    for gw in cluster.both():
        state = gw.components.store.get("support-triage")
        assert (state.version, state.canary) == (1, None)
        assert [complete(gw, f"k{i}")[0] for i in range(4)] == [cluster.v1] * 4
    assert cluster.v2 not in resident(cluster.b)
    # gw-a loaded v2 for a change that never committed: kept for its grace, then dropped
    assert cluster.v2 in resident(cluster.a)
    wait_for(lambda: cluster.v2 not in resident(cluster.a), GRACE_S + 5, "v2 unloaded on gw-a")


def test_a_canary_commits_only_after_every_replica_loaded_it(cluster: Cluster) -> None:
    flip_byte(cluster.b_weights)  # repaired: the bytes match the model card again
    seen_at_apply: dict[str, set[str]] = {}
    for name, gw in (("a", cluster.a), ("b", cluster.b)):
        def on_apply(state: RouteState, gw: Gateway = gw, name: str = name) -> None:
            if state.canary is not None and name not in seen_at_apply:
                seen_at_apply[name] = resident(gw)
        gw.components.store.subscribe(on_apply)

    r = httpx.post(f"{cluster.b.url}/admin/routes/support-triage/canary",
                   json={"adapter": cluster.v2, "percent": 100, "reason": "try v2"}, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["state"]["version"] == 2 and out["prepare_ms"] > 0
    assert out["applied"]["replicas"] == ["gw-a", "gw-b"] and out["applied"]["pending"] == []
    # each replica already held v2 when the new state reached it
    assert seen_at_apply == {"a": {cluster.v1, cluster.v2}, "b": {cluster.v1, cluster.v2}}
    for gw in cluster.both():
        assert complete(gw) == (cluster.v2, "canary")


def test_rollback_under_load_fails_nothing_and_unloads_the_dropped_adapter(
    cluster: Cluster,
) -> None:
    served: list[tuple[int, str]] = []
    done_at: list[float] = []
    stop = threading.Event()

    async def load(gw: Gateway, worker: int) -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            i = 0
            while not stop.is_set():
                r = await http.post("/v1/completions", headers={"x-route-key": f"{worker}-{i}"},
                                    json={"model": "support-triage", "prompt": PROMPT,
                                          "max_tokens": 8})
                served.append((r.status_code, r.headers.get("x-model-id", r.text)))
                done_at.append(time.monotonic())
                i += 1

    def run_load() -> None:
        async def main() -> None:
            await asyncio.gather(*(load(gw, w) for gw in cluster.both() for w in range(3)))
        asyncio.run(main())

    loader = threading.Thread(target=run_load)
    loader.start()
    try:
        wait_for(lambda: sum(1 for _, m in served if m == cluster.v2) >= 6, 30, "v2 traffic")
        flip_at = time.monotonic()
        r = httpx.post(f"{cluster.a.url}/admin/routes/support-triage/rollback", headers=AUTH,
                       json={"reason": "v2 misroutes Spanish tickets"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["state"]["canary"] is None and r.json()["applied"]["pending"] == []
        n = len(served)
        wait_for(lambda: len(served) >= n + 12, 30, "traffic after the rollback")
    finally:
        stop.set()
        loader.join(60)
    assert [s for s in served if s[0] != 200] == []
    models = [m for _, m in served]
    assert cluster.v2 in models and models[-1] == cluster.v1
    # requests routed to v2 before the flip were still running when it happened: they
    # completed (the unload drains them), none failed
    late_v2 = [m for m, t in zip(models, done_at, strict=True) if t > flip_at and m == cluster.v2]
    assert late_v2
    for gw in cluster.both():
        wait_for(lambda gw=gw: resident(gw) == {cluster.v1}, 15, f"v2 unloaded on {gw.url}")
        assert complete(gw) == (cluster.v1, "live")


def test_a_change_that_skipped_the_gate_is_loaded_by_each_reconciler(cluster: Cluster) -> None:
    async def write_directly() -> None:
        store = RedisRouteStore(cluster.redis_url)
        await store.start()
        try:
            cur = store.get("support-triage")
            assert cur is not None
            new = cur.model_copy(update={"shadow": Split(adapter=cluster.v2, percent=10),
                                         "updated_by": "test", "reason": "no gate"})
            await store.put(new, cur.version, "shadow")
        finally:
            await store.close()

    asyncio.run(write_directly())
    for gw in cluster.both():
        wait_for(lambda gw=gw: cluster.v2 in resident(gw), 15, f"v2 loaded on {gw.url}")
        # counted (and ready) again once everything the routes reference is resident
        wait_for(lambda gw=gw: httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200,
                 5, f"{gw.url} ready")
        assert gw.components.flags.member.registered
    for rid in ("gw-a", "gw-b"):
        published = cluster.redis.smembers(f"lr:replica:{rid}:resident")
        assert published == {cluster.v1.encode(), cluster.v2.encode()}


def _flags_in_redis(client: redis.Redis) -> dict[str, Any]:
    return {
        "keys": sorted(client.keys("lr:flags:*")),
        "routes": client.hgetall(keys.ROUTES),
        "versions": client.hgetall(keys.VERSIONS),
    }


def test_a_bad_routes_file_is_refused_before_it_reaches_redis(
    cluster: Cluster, demo_home: Home, tmp_path: Path
) -> None:
    shutil.copytree(demo_home.root, tmp_path / "c", ignore=shutil.ignore_patterns("log"))
    unknown = cluster.v1.split("@")[0] + "@v9"
    bad = write_routes(tmp_path / "bad-routes.yaml",
                       {"support-triage": {"live": cluster.v1}, "r1": {"live": unknown}})
    before = _flags_in_redis(cluster.redis)
    assert b"r1" not in before["routes"]

    # `lora-router serve`: one clean line naming the file, the route and the adapter
    runner = CliRunner()
    env = {"REDIS_URL": cluster.redis_url, "LORA_ROUTER_HOME": str(tmp_path / "c"),
           "COLUMNS": "300"}
    r = runner.invoke(app, ["serve", "--routes", str(bad), "--port", str(free_port()),
                            "--replica-id", "gw-c"], env=env)
    assert r.exit_code == 2, r.output
    assert str(bad) in r.stderr and "route 'r1'" in r.stderr and unknown in r.stderr
    assert "Traceback" not in r.output

    # the gateway's own start (what a deployment without the CLI runs) refuses it too
    settings = Settings(home=tmp_path / "c", port=free_port(), replica_id="gw-c",
                        routes_file=bad, redis_url=cluster.redis_url, torch_threads=1,
                        replica_ttl_s=2, replica_heartbeat_s=0.2)
    gateway = create_app(settings, recorder=lambda record: None)

    async def start() -> None:
        async with gateway.router.lifespan_context(gateway):
            pytest.fail("the gateway started with a routes file naming an unknown adapter")

    with pytest.raises(ConfigError, match=f"route 'r1' names .*{unknown}"):
        asyncio.run(start())
    assert _flags_in_redis(cluster.redis) == before  # nothing was written
    assert cluster.redis.smembers("lr:replicas") == {b"gw-a", b"gw-b"}
    for gw in cluster.both():
        assert gw.components.store.get("r1") is None
        ready = httpx.get(f"{gw.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["adapters"]["missing"] == []
