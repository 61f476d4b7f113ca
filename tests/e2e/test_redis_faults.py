"""Two real gateways on a private redis-server, over real HTTP, through Redis faults.

Both serve route ``support-triage`` (live v1) under load from a background thread; ``gw-b``
holds a copy of the demo home in which v2's weights can be made not to match their model
card (so it cannot load v2 until they are repaired). The tests run in order and share the
gateways:

1. Redis down for longer than the replica TTL: ``/readyz`` stays 200 on both (``connected:
   false``, the snapshot's age shown, ``registered: false``) and every request succeeds;
2. a change that reaches a replica before it has loaded its adapter (written to Redis
   without the gate, v2 unloadable on gw-b) is served there as its last fully-resident
   version meanwhile: no ``503 adapter_not_resident``; once v2 loads, v2 serves;
3. Redis restarts empty and a set-live is sent at once: it waits for the registry to
   re-form and every replica loads v2 before the commit (or it is a 503 naming why); no
   request fails meanwhile;
4. Redis answers ``READONLY`` (made a replica of a dead master, as during a failover) and
   malformed messages arrive on the changes and load-request channels: the listener,
   heartbeat and load responder survive, and once Redis is writable again a later change
   reaches both replicas, which heartbeat and answer load requests;
5. a loop that does stop (here: cancelled) makes ``/readyz`` 503 naming it.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from lora_router.router.flags import keys
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaRegistry
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway, write_routes
from tests.conftest import free_port, require
from tests.flags.conftest import RedisServer

ROUTE = "support-triage"
PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")
WEIGHTS = "adapter_model.safetensors"
TTL_S = 1.0


@dataclass
class Cluster:
    a: Gateway
    b: Gateway
    v1: str
    v2: str
    b_weights: Path
    server: RedisServer

    def both(self) -> tuple[Gateway, Gateway]:
        return self.a, self.b

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=2)


@dataclass
class Served:
    gateway: int
    status: int
    code: str | None
    model: str | None
    version: int | None
    at: float


@dataclass
class Load:
    """Requests to both gateways from a thread, until stopped; every answer recorded."""

    cluster: Cluster
    served: list[Served] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    async def _worker(self, index: int, gw: Gateway, worker: int) -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            i = 0
            while not self.stop_event.is_set():
                r = await http.post("/v1/completions", headers={"x-route-key": f"{worker}-{i}"},
                                    json={"model": ROUTE, "prompt": PROMPT, "max_tokens": 4})
                code = None if r.is_success else r.json()["error"]["code"]
                version = r.headers.get("x-flag-version")
                self.served.append(Served(index, r.status_code, code,
                                          r.headers.get("x-model-id"),
                                          int(version) if version else None, time.monotonic()))
                i += 1

    def __enter__(self) -> Load:
        async def main() -> None:
            await asyncio.gather(*(self._worker(i, gw, w) for i, gw in
                                   enumerate(self.cluster.both()) for w in range(2)))

        self.thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self.thread.start()
        self.wait_for_more(8)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(60)

    def wait_for_more(self, n: int, gateway: int | None = None) -> None:
        def count() -> int:
            return sum(1 for s in self.served if gateway is None or s.gateway == gateway)

        start = count()
        wait_for(lambda: count() >= start + n, 60, f"{n} more answers")

    def failed(self) -> list[Served]:
        return [s for s in self.served if s.status != 200]


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def readyz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{gw.url}/readyz", timeout=10)
    return r.status_code, r.json()


def resident(gw: Gateway) -> set[str]:
    return set(gw.components.engine.resident_adapters())


def registered(gw: Gateway) -> bool:
    return bool(gw.components.flags.member.registered)


def live_replicas(cluster: Cluster) -> list[str]:
    async def read() -> list[str]:
        import redis.asyncio as aredis

        client = aredis.Redis.from_url(cluster.server.url, socket_timeout=2)
        try:
            return await ReplicaRegistry(client).live()
        except Exception:  # Redis still coming back
            return []
        finally:
            await client.aclose()

    return asyncio.run(read())


def all_back(cluster: Cluster) -> bool:
    """Both gateways resynced and registered with Redis again."""
    return all(readyz(gw)[1]["routes"]["connected"] and registered(gw)
               for gw in cluster.both()) and live_replicas(cluster) == ["gw-a", "gw-b"]


def flip(cluster: Cluster, reason: str) -> httpx.Response:
    """Roll back when the route has a target, else make the other adapter live."""
    state = cluster.a.components.store.get(ROUTE)
    url = f"{cluster.a.url}/admin/routes/{ROUTE}"
    if state.rollback_target:
        return httpx.post(f"{url}/rollback", json={"reason": reason}, timeout=60)
    other = cluster.v2 if state.live == cluster.v1 else cluster.v1
    return httpx.post(f"{url}/set-live", json={"adapter": other, "reason": reason}, timeout=60)


@pytest.fixture(scope="module")
def cluster(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        require("redis-server binary not on PATH")
    server = RedisServer(free_port())
    server.start()
    root = tmp_path_factory.mktemp("redis-faults")
    homes = {}
    for name in ("a", "b"):
        shutil.copytree(demo_home.root, root / name, ignore=shutil.ignore_patterns("log"))
        homes[name] = Home.at(root / name)
    v1, v2 = adapter_ids(demo_home)
    routes = write_routes(root / "routes.yaml", {ROUTE: {"live": v1}})
    common: dict[str, Any] = dict(
        routes_file=routes, redis_url=server.url, torch_threads=1, flags_ack_timeout_s=5,
        flags_load_grace_s=1.0, replica_ttl_s=TTL_S, replica_heartbeat_s=0.2,
        flags_resync_s=0.5, drift_enabled=False,
    )
    gateways: list[Gateway] = []
    try:
        for name in ("a", "b"):
            gateways.append(start_gateway(Settings(
                home=homes[name].root, port=free_port(), replica_id=f"gw-{name}", **common
            )))
        yield Cluster(gateways[0], gateways[1], v1, v2,
                      homes["b"].adapter_dir(v2) / WEIGHTS, server)
    finally:
        for gw in reversed(gateways):
            gw.stop()
        server.stop()


def test_readyz_stays_200_through_a_redis_outage_longer_than_the_ttl(cluster: Cluster) -> None:
    with Load(cluster) as load:
        cluster.server.stop()
        try:
            for gw in cluster.both():  # the heartbeat's key has expired in Redis by now
                wait_for(lambda gw=gw: not registered(gw), 20, "the heartbeat to expire")
            load.wait_for_more(8)
            for gw in cluster.both():
                status, detail = readyz(gw)
                assert status == 200, detail
                assert detail["ready"] is True and detail["routes"]["connected"] is False
                assert detail["routes"]["snapshot_age_s"] > 0
                assert detail["replica"]["registered"] is False
                assert all(loop["alive"] for loop in detail["loops"].values()), detail
        finally:
            cluster.server.start()  # empty: Redis keeps nothing on disk
        wait_for(lambda: all_back(cluster), 30, "both gateways back")
        load.wait_for_more(4)
    assert load.failed() == []


def test_a_replica_serves_its_last_resident_version_while_it_loads(cluster: Cluster) -> None:
    """gw-b cannot load v2 (its bytes do not match the card) when a change written without
    the gate makes v2 live: it keeps serving v1 at the version before, never a 503."""
    flip_byte(cluster.b_weights)
    before = cluster.a.components.store.get(ROUTE)
    with Load(cluster) as load:

        async def write_directly() -> int:
            store = RedisRouteStore(cluster.server.url)
            await store.start()
            try:
                cur = store.get(ROUTE)
                assert cur is not None
                new = cur.model_copy(update={"live": cluster.v2, "rollback_target": cur.live,
                                             "updated_by": "test", "reason": "no gate"})
                return (await store.put(new, cur.version, "set-live")).version
            finally:
                await store.close()

        version = asyncio.run(write_directly())
        wait_for(lambda: cluster.v2 in resident(cluster.a), 20, "v2 loaded on gw-a")
        wait_for(lambda: cluster.b.components.store.get(ROUTE).version == version, 10,
                 "gw-b to apply the change")
        load.wait_for_more(10, gateway=1)
        status, detail = readyz(cluster.b)  # it does not hold what the route references
        assert status == 503 and detail["adapters"]["missing"] == [cluster.v2]
        flip_byte(cluster.b_weights)  # repaired: the reconciler's next pass loads it
        wait_for(lambda: cluster.v2 in resident(cluster.b), 20, "v2 loaded on gw-b")
        load.wait_for_more(6, gateway=1)
    assert load.failed() == []
    on_b = [s for s in load.served if s.gateway == 1]
    assert {(s.model, s.version) for s in on_b} == {(cluster.v1, before.version),
                                                    (cluster.v2, version)}
    assert on_b[-1].model == cluster.v2
    assert readyz(cluster.b)[0] == 200


def test_a_flip_right_after_redis_restarts_empty_waits_for_every_replica(
    cluster: Cluster,
) -> None:
    if cluster.a.components.store.get(ROUTE).live == cluster.v2:
        assert flip(cluster, "back to v1").status_code == 200
    for gw in cluster.both():  # v2 is no longer referenced: unloaded after its grace
        wait_for(lambda gw=gw: resident(gw) == {cluster.v1}, 20, "v2 unloaded")
    with Load(cluster) as load:
        cluster.server.stop()
        cluster.server.start()  # empty; the replicas have not re-registered yet
        r = httpx.post(f"{cluster.a.url}/admin/routes/{ROUTE}/set-live",
                       json={"adapter": cluster.v2, "reason": "right after the restart"},
                       timeout=60)
        load.wait_for_more(8)
    assert load.failed() == []  # above all: no 503 adapter_not_resident
    if r.status_code == 503:  # refused, saying why
        assert r.json()["error"]["code"] == "replica_registry_settling", r.text
        return
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["applied"]["replicas"] == ["gw-a", "gw-b"] and out["applied"]["pending"] == []
    for gw in cluster.both():
        assert cluster.v2 in resident(gw)
        assert gw.components.store.get(ROUTE).live == cluster.v2


def test_readonly_redis_and_malformed_messages_leave_every_loop_running(
    cluster: Cluster,
) -> None:
    wait_for(lambda: all_back(cluster), 30, "both gateways registered")
    client = cluster.redis()
    dead_master = free_port()
    try:
        client.replicaof("127.0.0.1", dead_master)  # writes now answer READONLY
        # a state published meanwhile (by a writer on the new master): applied, but its
        # applied report cannot be written
        cur = cluster.a.components.store.get(ROUTE)
        published = cur.model_copy(update={"version": cur.version + 1, "reason": "failover"})
        client.publish(keys.channel(keys.CHANGES_CHANNEL, client), published.model_dump_json())
        for junk in (b"not json", b"[]", b'{"id": "x"}', b"\xff\xfe"):
            client.publish(keys.channel(keys.CHANGES_CHANNEL, client), junk)
            client.publish(keys.channel(keys.LOAD_REQUEST_CHANNEL, client), junk)
        for gw in cluster.both():
            wait_for(lambda gw=gw: gw.components.store.get(ROUTE).version == published.version,
                     10, "the published state applied")

            def errors(gw: Gateway = gw) -> dict[str, int]:
                return {n: loop["errors"] for n, loop in readyz(gw)[1]["loops"].items()}

            wait_for(lambda e=errors: e()["heartbeat"] > 0 and e()["flags_listener"] > 0
                     and e()["load_responder"] > 0, 20, "READONLY and junk seen by the loops")
    finally:
        client.replicaof("NO", "ONE")
        client.close()
    wait_for(lambda: all_back(cluster), 30, "both gateways heartbeating again")
    with cluster.redis() as c:  # the listeners wrote back the state Redis never stored
        wait_for(lambda: int(c.hget(keys.VERSIONS, ROUTE) or 0) == published.version, 10,
                 "the published state restored")
    r = flip(cluster, "after the failover")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["applied"]["replicas"] == ["gw-a", "gw-b"] and out["applied"]["pending"] == []
    for gw in cluster.both():
        assert gw.components.store.get(ROUTE).version == out["state"]["version"]
        status, detail = readyz(gw)
        assert status == 200 and detail["loops_stopped"] == [], detail
    metrics = httpx.get(f"{cluster.a.url}/metrics", timeout=10).text
    assert 'lora_router_loop_errors_total{kind="redis",loop="heartbeat"}' in metrics
    assert 'lora_router_loop_errors_total{kind="malformed",loop="load_responder"}' in metrics

    async def ask_load() -> bool:
        import redis.asyncio as aredis

        c = aredis.Redis.from_url(cluster.server.url, socket_timeout=6)
        try:
            outcome = await ReplicaRegistry(c, settle_s=TTL_S).request_load({cluster.v1}, 5)
            return outcome.ok and sorted(outcome.acks) == ["gw-a", "gw-b"]
        finally:
            await c.aclose()

    assert asyncio.run(ask_load())  # both load responders still answer


def test_a_stopped_loop_makes_readyz_503_naming_it(cluster: Cluster) -> None:
    gw = cluster.b

    async def cancel_responder() -> None:
        task = gw.components.flags.responder._task
        task.cancel()
        await asyncio.wait({task})

    gw.call(cancel_responder())
    status, detail = readyz(gw)
    assert status == 503 and detail["loops_stopped"] == ["load_responder"], detail
    assert detail["loops"]["load_responder"]["alive"] is False
    metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
    assert 'lora_router_loop_alive{loop="load_responder"} 0.0' in metrics
    assert readyz(cluster.a)[0] == 200
