"""Scale-out: three ``lora-router serve`` processes, one Redis, one PostgreSQL inference log.

The deployment of docs/deployment.md on one machine: three gateway replicas (real uvicorn
subprocesses, each on a free port with its own copy of the demo home), a real Redis (a
private ``redis-server``: pub/sub channels are server-wide, not per database number, so a
shared server would carry other test runs' route changes to these gateways) and the real
PostgreSQL ``test`` database with a schema of its own as every replica's ``DATABASE_URL``.
The tests run in order and share the replicas:

1. requests spread over the three are served, and every replica is registered;
2. a flip sent to one replica's admin API is answered only once all three apply it: each
   serves the new version right after the answer, and so does every request sent after it;
3. a rollback sent to another replica, likewise;
4. every request of all three lands in the one PostgreSQL log with the model id and flag
   version its response named;
5. one replica killed with SIGKILL: the other two keep serving (no request fails), a flip
   right away is answered with the two survivors and nothing pending, the dead replica
   leaves the registry once its heartbeat expires (``LORA_ROUTER_REPLICA_TTL_S``), a later
   rollback is applied by the two alone, and their requests land in the log too.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import redis

from lora_router.ground.home import Home
from lora_router.router.flags import keys
from tests.conftest import PG_URL, require
from tests.harness.cluster import PROMPT, Cluster, Gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
REPLICAS = 3
TTL_S = 2.0  # heartbeat expiry: how long a killed replica stays in the registry
ENV = {
    "LORA_ROUTER_REPLICA_TTL_S": str(TTL_S),
    "LORA_ROUTER_REPLICA_HEARTBEAT_S": "0.5",
    # a change waits this long for every live replica to apply it: longer than the TTL, so a
    # replica killed just before a flip is dropped (its heartbeat expired), not timed out
    "LORA_ROUTER_FLAGS_APPLY_TIMEOUT_S": "30",
}


@dataclass(frozen=True)
class Sent:
    """One request and what its response said (``status`` 0: no response)."""

    gateway: int
    sent: float  # monotonic
    status: int
    request_id: str | None
    model_id: str | None
    version: int | None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Ledger:
    """Every request sent to the replicas in this module, in order."""

    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, s: Sent) -> None:
        with self.lock:
            self.sent.append(s)

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.sent)


def _record(index: int, sent: float, r: httpx.Response) -> Sent:
    version = r.headers.get("x-flag-version")
    return Sent(index, sent, r.status_code, r.headers.get("x-request-id"),
                r.headers.get("x-model-id"), int(version) if version else None)


def _complete(gw: Gateway, ledger: Ledger, key: str) -> Sent:
    sent = time.monotonic()
    r = httpx.post(f"{gw.url}/v1/completions", timeout=60, headers={"x-route-key": key},
                   json={"model": ROUTE, "prompt": PROMPT, "max_tokens": 4})
    s = _record(gw.index, sent, r)
    ledger.add(s)
    return s


class Load:
    """One closed-loop client per target replica, from a thread, until the block ends."""

    def __init__(self, gateways: list[Gateway], ledger: Ledger) -> None:
        self.gateways, self.ledger = gateways, ledger
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.mine: list[Sent] = []

    async def _worker(self, gw: Gateway) -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            i = 0
            while not self.stop_event.is_set():
                sent = time.monotonic()
                try:
                    r = await http.post("/v1/completions", headers={"x-route-key": f"l{i}"},
                                        json={"model": ROUTE, "prompt": PROMPT, "max_tokens": 4})
                    s = _record(gw.index, sent, r)
                except httpx.HTTPError:
                    s = Sent(gw.index, sent, 0, None, None, None)
                self.ledger.add(s)
                self.mine.append(s)
                i += 1

    async def _main(self) -> None:
        await asyncio.gather(*(self._worker(gw) for gw in self.gateways))

    def __enter__(self) -> Load:
        self.thread.start()
        for gw in self.gateways:  # each client has been served before the block goes on
            _wait_for(f"load on {gw.replica_id}",
                      lambda gw=gw: any(s.gateway == gw.index for s in self.mine), 60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the load thread did not stop"


def _wait_for(what: str, check: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_log() -> Iterator[str]:
    """The one log database of the deployment: ``test``, in a schema for this module."""
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        require(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    schema = f"scale_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@pytest.fixture(scope="module")
def cluster(
    demo_home: Home, pg_log: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    import shutil

    if shutil.which("redis-server") is None:
        require("redis-server is not installed (the scale-out test starts its own)")
    work = tmp_path_factory.mktemp("scale-out")
    with Cluster.start(demo_home.root, work, replicas=REPLICAS, torch_threads=1,
                       extra_env={"DATABASE_URL": pg_log, **ENV}) as c:
        yield c


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(scope="module")
def rdb(cluster: Cluster) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cluster.redis_url, socket_timeout=2)
    yield client
    client.close()


# -- helpers ----------------------------------------------------------------------------
def _registered(rdb: redis.Redis) -> list[str]:
    """Replica ids whose heartbeat key exists (what ``ReplicaRegistry.live`` counts)."""
    ids = sorted(m.decode() for m in rdb.smembers(keys.REPLICAS))
    return [r for r in ids if rdb.exists(keys.replica_key(r))]


def _change(gw: Gateway, action: str, **body: Any) -> dict[str, Any]:
    """A route change through ``gw``'s admin API (loopback: no token needed)."""
    r = httpx.post(f"{gw.url}/admin/routes/{ROUTE}/{action}", timeout=120,
                   json={"reason": f"scale-out test: {action}", **body})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _assert_applied_by(answer: dict[str, Any], replicas: list[str]) -> None:
    applied = answer["applied"]
    assert applied["pending"] == [], applied
    assert sorted(applied["replicas"]) == replicas, applied
    assert applied["version"] == answer["state"]["version"]
    assert applied["elapsed_ms"] is not None, applied


def _assert_each_serves(gateways: list[Gateway], ledger: Ledger, model: str,
                        version: int) -> None:
    """Right after the answer: every replica serves the change."""
    for gw in gateways:
        s = _complete(gw, ledger, f"after-{version}-{gw.index}")
        assert (s.status, s.model_id, s.version) == (200, model, version), gw.replica_id


def _assert_none_stale(load: Load, answered_at: float, model: str, version: int) -> None:
    """Requests sent after the answer arrived are all served under the change."""
    after = [s for s in load.mine if s.sent > answered_at]
    stale = [s for s in after if (s.model_id, s.version) != (model, version)]
    assert stale == [], f"{len(stale)} of {len(after)} served stale, e.g. {stale[:3]}"


def _logged(pg_log: str, ids: list[str]) -> dict[str, tuple[str, int | None]]:
    with psycopg.connect(pg_log, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT request_id, model_id, flag_version FROM inference_log"
            " WHERE request_id = ANY(%s)", (ids,)
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _assert_logged(pg_log: str, sent: list[Sent]) -> None:
    """Each answered request has its row, with the model id and version it was served by."""
    ok = [s for s in sent if s.ok]
    ids = [s.request_id for s in ok if s.request_id]
    assert len(ids) == len(ok), "a response without x-request-id"
    _wait_for(f"{len(ids)} rows in the PostgreSQL log",
              lambda: len(_logged(pg_log, ids)) == len(ids), 60)
    rows = _logged(pg_log, ids)
    wrong = [(s.request_id, s.model_id, s.version, rows[s.request_id])
             for s in ok if rows[s.request_id] != (s.model_id, s.version)]
    assert wrong == []


# -- the tests --------------------------------------------------------------------------
def test_requests_spread_over_three_replicas_are_served(
    cluster: Cluster, ledger: Ledger, rdb: redis.Redis
) -> None:
    assert _registered(rdb) == cluster.replica_ids
    for round_ in range(3):
        for gw in cluster.gateways:
            s = _complete(gw, ledger, f"spread-{round_}-{gw.index}")
            assert (s.status, s.model_id) == (200, V1), gw.log_tail()
    for gw in cluster.gateways:
        status, detail = gw.readiness()
        assert status == 200, detail
        assert detail["replica"]["registered"] is True
        assert detail["log"]["sink"] == "postgres"
    assert {s.gateway for s in ledger.snapshot()} == {0, 1, 2}


def test_a_flip_through_one_replica_is_answered_once_all_three_serve_it(
    cluster: Cluster, ledger: Ledger
) -> None:
    with Load(cluster.gateways, ledger) as load:
        answer = _change(cluster.gateways[0], "set-live", adapter=V2)
        answered_at = time.monotonic()
        version = answer["state"]["version"]
        _assert_applied_by(answer, cluster.replica_ids)
        _assert_each_serves(cluster.gateways, ledger, V2, version)
        load_ok_after = len(load.mine)
        _wait_for("more load after the flip", lambda: len(load.mine) > load_ok_after + 3, 60)
    assert [s for s in load.mine if not s.ok] == []
    _assert_none_stale(load, answered_at, V2, version)


def test_a_rollback_through_another_replica_is_answered_once_all_three_serve_it(
    cluster: Cluster, ledger: Ledger
) -> None:
    with Load(cluster.gateways, ledger) as load:
        answer = _change(cluster.gateways[1], "rollback")
        answered_at = time.monotonic()
        version = answer["state"]["version"]
        assert answer["state"]["live"] == V1
        _assert_applied_by(answer, cluster.replica_ids)
        _assert_each_serves(cluster.gateways, ledger, V1, version)
        seen = len(load.mine)
        _wait_for("more load after the rollback", lambda: len(load.mine) > seen + 3, 60)
    assert [s for s in load.mine if not s.ok] == []
    _assert_none_stale(load, answered_at, V1, version)


def test_every_request_of_all_three_lands_in_the_one_postgres_log(
    cluster: Cluster, ledger: Ledger, pg_log: str
) -> None:
    sent = ledger.snapshot()
    assert {s.gateway for s in sent if s.ok} == {0, 1, 2}
    assert {s.model_id for s in sent if s.ok} == {V1, V2}
    _assert_logged(pg_log, sent)


def test_a_killed_replica_leaves_two_serving_and_the_flip_path_working(
    cluster: Cluster, ledger: Ledger, rdb: redis.Redis, pg_log: str
) -> None:
    survivors, dead = cluster.gateways[:2], cluster.gateways[2]
    alive_ids = [g.replica_id for g in survivors]
    with Load(survivors, ledger) as load:
        dead.proc.kill()  # SIGKILL: no deregistration, its heartbeat key just expires
        dead.proc.wait(30)
        flip = _change(survivors[0], "set-live", adapter=V2)
        flipped_at = time.monotonic()
        _assert_applied_by(flip, alive_ids)
        _assert_each_serves(survivors, ledger, V2, flip["state"]["version"])
        _wait_for(f"{dead.replica_id} to leave the registry",
                  lambda: _registered(rdb) == alive_ids, 10 * TTL_S)
        assert not rdb.exists(keys.replica_key(dead.replica_id))
        back = _change(survivors[1], "rollback")
        assert back["state"]["live"] == V1
        _assert_applied_by(back, alive_ids)
        assert back["applied"]["dropped"] == []  # the dead replica is no longer waited for
        _assert_each_serves(survivors, ledger, V1, back["state"]["version"])
        seen = len(load.mine)
        _wait_for("more load after the rollback", lambda: len(load.mine) > seen + 3, 60)
    assert [s for s in load.mine if not s.ok] == []
    flip_v, back_v = flip["state"]["version"], back["state"]["version"]
    between = [s for s in load.mine if flipped_at < s.sent and s.version != back_v]
    assert {(s.model_id, s.version) for s in between} <= {(V2, flip_v)}
    for gw in survivors:
        assert gw.readiness()[0] == 200
    _assert_logged(pg_log, load.mine)
