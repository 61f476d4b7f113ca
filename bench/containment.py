"""Detection to containment: from the feedback that makes the drift test alarm to the canary
dropped on every gateway replica, over real HTTP, Redis and PostgreSQL.

Starts a throwaway ``redis-server`` (or uses ``--redis-url``), a fresh PostgreSQL schema in
``--database-url`` (dropped at the end) and ``--replicas`` ``lora-router serve`` processes in
Redis mode sharing that inference log (:mod:`tests.harness.cluster`; each on a private copy of
``--home``, so nothing is written into it). Each replica runs the drift runtime; one holds
the Redis lease and runs the monitor and the guard, every ``--interval`` seconds
(``LORA_ROUTER_DRIFT_INTERVAL_S``; the gateway's default is 1.0).

Each trial has a route of its own (``triage-t<k>``: live ``support-triage@v1``, so the
monitor's test state of one trial never carries into the next). Through the admin API of
the first replica: a guard policy (auto-rollback, ``language=es`` protected), then
``support-triage@v2`` as a canary at ``--percent`` %. Then held-out tickets of the demo, one
at a time, round-robin over the replicas, each answer followed by its ground truth
(``POST /v1/feedback`` to the replica that served it), until a response shows the route
changed and every replica's ``GET /v1/models/<route>`` shows no canary.

Measured per trial, all on this host's wall clock:

- **t0**: when the ``POST /v1/feedback`` of the alarming label was answered (the label is
  written): the last request of the evidence window of the incident's first alert (the
  test crossed its threshold on that label);
- **detect**: the alert's ``created_at`` (the monitor's round that read the label);
- **commit**: the guard's route change in the audit trail (``at``, actor ``guard``);
- **applied**: each replica's own stamp in its "applied" report on Redis (taken just after
  it switched to the new version); the latest over replicas.

``containment_ms`` = applied (latest replica) - t0; also ``label_to_alert_ms``,
``alert_to_commit_ms``, ``commit_to_applied_ms``, and ``labels`` (the alert's ``n``).
Percentiles are nearest-rank. Target: containment p95 <= 2000 ms. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.cluster import AppliedRecorder, Cluster

V1, V2 = "support-triage@v1", "support-triage@v2"
SOURCE = "support-triage"
HOME_PARTS = ("base", "base.lock.json", "adapters", "registry", "data", "routes.yaml")
TARGET_P95_MS = 2000.0


@dataclass
class Trial:
    route: str
    requests: int
    labels: int | None = None  # the alert's n
    signal: str | None = None
    t0: float | None = None  # feedback answered (wall)
    detect: float | None = None
    commit: float | None = None
    applied: float | None = None
    error: str | None = None

    def ms(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1e3, 1)

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "requests": self.requests, "labels": self.labels,
                "signal": self.signal, "error": self.error,
                "containment_ms": self.ms(self.t0, self.applied),
                "label_to_alert_ms": self.ms(self.t0, self.detect),
                "alert_to_commit_ms": self.ms(self.detect, self.commit),
                "commit_to_applied_ms": self.ms(self.commit, self.applied)}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    return round(xs[max(0, math.ceil(q / 100 * len(xs)) - 1)], 1)


# -- set-up ---------------------------------------------------------------------------------

def source_home(demo: Path, dst: Path, trials: int) -> Path:
    """A copy of the demo home whose routes file has one route per trial."""
    dst.mkdir(parents=True)
    for part in HOME_PARTS:
        src = demo / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst / part)
    routes = yaml.safe_load((dst / "routes.yaml").read_text())["routes"]
    entry = {**routes[SOURCE], "live": V1, "canary": None, "shadow": None,
             "rollback_target": None}
    routes.update({f"triage-t{k}": dict(entry) for k in range(trials)})
    (dst / "routes.yaml").write_text(yaml.safe_dump({"routes": routes}, sort_keys=False))
    return dst


@contextmanager
def pg_schema(base_url: str) -> Any:
    """A fresh schema in ``base_url``'s database (dropped on exit); yields its URL."""
    import psycopg

    schema = f"bench_containment_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(base_url, autocommit=True)
    conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


def tickets(demo: Path) -> list[dict[str, str]]:
    from lora_router.ground.home import Home
    from lora_router.registry.store import RegistryStore

    home = Home.at(demo)
    path = home.dataset_dir(RegistryStore(home).get_model_card(V1).trained_on) / "test.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# -- one trial ------------------------------------------------------------------------------

async def start_canary(http: httpx.AsyncClient, route: str, args: argparse.Namespace) -> int:
    guard = {"auto_rollback": True, "protect": ["language=es"], "min_labels": args.min_labels}
    r = await http.post(f"/admin/routes/{route}/guard",
                        json={"reason": "bench: guard es", "guard": guard})
    r.raise_for_status()
    r = await http.post(f"/admin/routes/{route}/canary", json={
        "reason": "bench: canary v2", "adapter": V2, "percent": args.percent})
    r.raise_for_status()
    return int(r.json()["state"]["version"])


async def serve_one(http: httpx.AsyncClient, route: str, ticket: dict[str, str],
                    key: str) -> tuple[str, int, float]:
    """One request and its ground truth; (request id, flag version, feedback answered)."""
    from lora_router.demo.task import format_prompt, parse_label

    r = await http.post("/v1/completions", json={
        "model": route, "prompt": format_prompt(ticket["text"]), "max_tokens": 5,
        "temperature": 0}, headers={"x-route-key": key})
    r.raise_for_status()
    body = r.json()
    correct = parse_label(body["choices"][0]["text"]) == ticket["label"]
    fb = await http.post("/v1/feedback", json={"request_id": body["id"], "was_correct": correct})
    fb.raise_for_status()
    return body["id"], int(r.headers["x-flag-version"]), time.time()


async def canary_gone(clients: list[httpx.AsyncClient], route: str) -> bool:
    for c in clients:
        r = await c.get(f"/v1/models/{route}")
        if r.json().get("canary") is not None:
            return False
    return True


async def drive(clients: list[httpx.AsyncClient], route: str, pool: list[dict[str, str]],
                args: argparse.Namespace, rng: random.Random) -> tuple[dict[str, float], int]:
    """Traffic until the canary is gone everywhere; feedback answer times by request id."""
    version = await start_canary(clients[0], route, args)
    answered: dict[str, float] = {}
    for i in range(args.max_requests):
        rid, seen, at = await serve_one(clients[i % len(clients)], route, rng.choice(pool),
                                        f"{route}-{i}")
        answered[rid] = at
        if seen > version and await canary_gone(clients, route):
            return answered, i + 1
    raise RuntimeError(f"{route}: the guard did not act within {args.max_requests} requests")


async def measure(trial: Trial, answered: dict[str, float], db_url: str,
                  admin: httpx.AsyncClient, recorder: AppliedRecorder,
                  replicas: list[str]) -> None:
    from lora_router.router.drift.pg_store import PostgresDriftStore

    store = PostgresDriftStore(db_url)
    await store.open()
    try:  # the guard records the incident just after its change: it may still be writing
        deadline = time.monotonic() + 10
        while not (found := await store.incidents(route=trial.route)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{trial.route}: no incident recorded")
            await asyncio.sleep(0.05)
        alerts = [a for i in found[-1].alert_ids if (a := await store.alert(i)) is not None]
    finally:
        await store.close()
    crossing = [(answered[rid], a) for a in alerts
                if (rid := (a.evidence.get("window") or {}).get("to_request")) in answered]
    trial.t0, first = min(crossing, key=lambda c: c[0])
    trial.labels, trial.signal = first.n, f"{first.signal} {first.detector}"
    trial.detect = first.created_at.timestamp()
    audit = (await admin.get(f"/admin/routes/{trial.route}/audit")).json()["entries"]
    [guard] = [e for e in audit if e["by"] == "guard"]
    trial.commit = _wall(guard["at"])
    deadline = time.monotonic() + 10
    while True:
        stamps = [recorder.report(r, trial.route, guard["version"]) for r in replicas]
        if all(s is not None for s in stamps) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    if all(s is not None for s in stamps):
        trial.applied = max(s[1] for s in stamps if s is not None)


def _wall(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# -- the run --------------------------------------------------------------------------------

async def run_trials(args: argparse.Namespace, cluster: Cluster, db_url: str,
                     pool: list[dict[str, str]]) -> list[Trial]:
    rng = random.Random(args.seed)
    out: list[Trial] = []
    clients = [httpx.AsyncClient(base_url=g.url, timeout=60) for g in cluster.gateways]
    try:
        with AppliedRecorder(cluster.redis_url) as recorder:
            for k in range(args.trials):
                route = f"triage-t{k}"
                trial = Trial(route, 0)
                try:
                    answered, trial.requests = await drive(clients, route, pool, args, rng)
                    await measure(trial, answered, db_url, clients[0], recorder,
                                  cluster.replica_ids)
                except (RuntimeError, httpx.HTTPError, ValueError) as exc:
                    trial.error = f"{type(exc).__name__}: {exc}"
                out.append(trial)
                print(json.dumps(trial.to_json()), file=sys.stderr, flush=True)
    finally:
        for c in clients:
            await c.aclose()
    return out


def summary(args: argparse.Namespace, trials: list[Trial]) -> dict[str, Any]:
    ok = [t.to_json() for t in trials if t.error is None and t.applied is not None]
    result: dict[str, Any] = {
        "bench": "containment", "replicas": args.replicas, "trials": len(trials),
        "measured": len(ok), "failed": len(trials) - len(ok),
        "drift_interval_s": args.interval, "percent": args.percent,
        "min_labels": args.min_labels, "flags": "redis", "log": "postgres",
        "target_p95_ms": TARGET_P95_MS,
    }
    for name in ("containment_ms", "label_to_alert_ms", "alert_to_commit_ms",
                 "commit_to_applied_ms"):
        values = [t[name] for t in ok if t[name] is not None]
        stem = name.removesuffix("_ms")
        result.update({f"{stem}_p50_ms": pct(values, 50), f"{stem}_p95_ms": pct(values, 95),
                       f"{stem}_max_ms": pct(values, 100)})
    labels = [t["labels"] for t in ok if t["labels"] is not None]
    result["labels_median"] = pct(labels, 50)
    p95 = result["containment_p95_ms"]
    result["target_met"] = p95 is not None and p95 <= TARGET_P95_MS and not result["failed"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--home", type=Path, required=True, help="a demo home (copied, not written)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--interval", type=float, default=1.0,
                   help="the monitor's round, drift_interval_s (gateway default 1.0)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--percent", type=float, default=50.0, help="canary share of traffic")
    p.add_argument("--min-labels", type=int, default=15, help="the guard's minimum evidence")
    p.add_argument("--max-requests", type=int, default=2000, help="per trial")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--redis-url", default=None, help="default: a throwaway redis-server")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test",
                   help="a fresh schema is made in it (and dropped)")
    p.add_argument("--torch-threads", type=int, default=1)
    args = p.parse_args()

    pool = tickets(args.home)
    with tempfile.TemporaryDirectory(prefix="bench-containment-") as tmp, \
            pg_schema(args.database_url) as db_url:
        work = Path(tmp)
        src = source_home(args.home, work / "source", args.trials)
        env = {"DATABASE_URL": db_url, "LORA_ROUTER_DRIFT_INTERVAL_S": str(args.interval)}
        with Cluster.start(src, work, replicas=args.replicas, redis_url=args.redis_url,
                           torch_threads=args.torch_threads, extra_env=env) as cluster:
            trials = asyncio.run(run_trials(args, cluster, db_url, pool))
    result = summary(args, trials)
    print(f"containment (feedback answered -> canary dropped on all {args.replicas} replicas):"
          f" p50 {result['containment_p50_ms']} ms, p95 {result['containment_p95_ms']} ms,"
          f" max {result['containment_max_ms']} ms over {result['measured']} trials"
          f" (drift_interval_s {args.interval})", flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
