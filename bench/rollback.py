"""How fast a route flip reaches every gateway replica under load, and what it costs requests.

Starts a throwaway ``redis-server`` (or uses ``--redis-url``), ``--replicas`` ``lora-router
serve`` processes in Redis mode (each on a private copy of ``--home``, so nothing is written
into it), and closed-loop load over all of them from a separate process
(:mod:`tests.harness.cluster`). Then it performs ``--preflips`` unmeasured route changes back to
back (so the route's audit and the model cards' history are long, as after weeks of
changes), then ``--flips`` measured ones ``--interval-ms`` apart, either as the on-call
does (``--via admin``, the default: ``POST /admin/routes/...`` on the first gateway, which
runs the route service with the replica registry and the two-phase load gate, and keeps its
home's model cards in step) or through the CLI's direct mode in this process (``--via
writer``: ``RouteService`` over Redis), alternating:

- ``--mode rollback`` (default): ``set-live B`` (B goes live, A becomes the rollback
  target, every replica loads B first if it is not resident), then ``rollback`` (A live
  again; B is no longer referenced and is unloaded after its in-flight requests drain);
- ``--mode set-live``: ``set-live B`` / ``set-live A`` (both stay resident).

Figures, per flip:

- **the on-call's view** (``oncall_*``, ``--via admin``): from sending the admin request to
  its answer (``oncall_answer_*``; rollbacks alone: ``oncall_rollback_answer_*``), to the
  last replica's own applied stamp (``oncall_all_applied_*``), and to every replica
  *serving* the new version as seen by requests: the latest over replicas of the first
  response from that replica that carries the new ``x-flag-version`` (or a later one) and
  that version's ``x-model-id`` (``oncall_all_serving_*``; it includes one request's
  latency). Target: p99 <= 50 ms however many changes came before (``preflips``).
- **propagation** (``propagation_*``, the issue's definition): from the write's
  acknowledgement (the compare-and-set returned, wall clock) to the last replica applying
  the new version: the latest of the replicas' own wall-clock stamps in their applied
  reports (taken just after each applied it), all processes on this host's one clock.
  (``--via admin``: the acknowledgement is the answer's ``committed_at``.)
- **writer-observed** (``writer_observed_*``): the same interval as the writer learns of it
  (``ApplyReport.elapsed_ms``, what the CLI prints): it adds the last report's trip back to
  the writer and the writer's own wake-up, so it is the larger, conservative figure.
- **write**: the compare-and-set round trip (``commit_ms``); **prepare**: the two-phase load
  before it (only for flips that add an adapter).
- **first response**: from the ack to the first response served under the new version by
  its live adapter (this includes one request's latency).
- **failed requests**: any non-200 or transport error, over the whole run.
- **stale after propagation**: requests *sent* after a flip's propagation completed that
  were routed under an older version or served by another adapter than their version's
  live; the stricter per-replica count uses each replica's own applied report instead.

Percentiles are nearest-rank (with 50 flips, p99 is the maximum). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.cluster import (  # noqa: E402
    ROUTE,
    AppliedRecorder,
    Cluster,
    LoadGen,
    Record,
    open_writer,
    violations,
)


@dataclass
class Flip:
    action: str
    version: int
    live: str
    acked: float  # monotonic
    acked_wall: float  # time.time()
    done: float  # monotonic: ack + ApplyReport.elapsed (or when the wait gave up)
    prepare_ms: float
    commit_ms: float
    propagation_ms: float | None  # ApplyReport.elapsed_ms
    pending: list[str]
    replicas: int
    sent: float | None = None  # monotonic: the admin request was sent (--via admin)
    sent_wall: float | None = None
    answered: float | None = None  # monotonic: its answer arrived
    arrivals: dict[int, float] = field(default_factory=dict)  # gateway -> report seen here
    stamps: dict[int, float] = field(default_factory=dict)  # gateway -> its applied stamp

    def stamped_ms(self, n: int) -> float | None:
        if len(self.stamps) < n:
            return None
        return (max(self.stamps.values()) - self.acked_wall) * 1e3


    def answer_ms(self) -> float | None:
        if self.sent is None or self.answered is None:
            return None
        return (self.answered - self.sent) * 1e3

    def outside_ms(self) -> float | None:
        """The answer's time outside the service's own steps (prepare, write, apply wait):
        HTTP, the gateway's event loop, planning the change."""
        answer = self.answer_ms()
        if answer is None or self.propagation_ms is None:
            return None
        return answer - self.prepare_ms - self.commit_ms - self.propagation_ms

    def answer_after_applied_ms(self, n: int) -> float | None:
        """How long after the last replica applied it the answer arrived (the issue: a
        median 0.4 s, when the answer waited for the model cards)."""
        answer, applied = self.answer_ms(), self.all_applied_ms(n)
        return None if answer is None or applied is None else answer - applied

    def all_applied_ms(self, n: int) -> float | None:
        if self.sent_wall is None or len(self.stamps) < n:
            return None
        return (max(self.stamps.values()) - self.sent_wall) * 1e3


FlipFn = Callable[[int], Awaitable[Flip]]


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    xs = sorted(values)
    return round(xs[max(0, math.ceil(q / 100 * len(xs)) - 1)], 3)


def other_adapter(home: Path, route: str, live: str, wanted: str | None) -> str:
    from lora_router.ground.home import Home
    from lora_router.router.flags.factory import home_known_adapters

    if wanted:
        return wanted
    name = live.split("@", 1)[0]
    known = sorted(a for a in home_known_adapters(Home.at(home))()
                   if a.split("@", 1)[0] == name and a != live)
    if not known:
        raise SystemExit(f"no other registered adapter of {name} to flip {route} to")
    return known[0]


async def do_flip(service: Any, args: argparse.Namespace, i: int, a: str, b: str) -> Flip:
    reason = f"bench flip {i}"
    if i % 2 == 0:
        action, result = "set-live", await service.set_live(
            args.route, b, actor="bench", reason=reason)
    elif args.mode == "rollback":
        action, result = "rollback", await service.rollback(
            args.route, actor="bench", reason=reason)
    else:
        action, result = "set-live", await service.set_live(
            args.route, a, actor="bench", reason=reason)
    returned = time.monotonic()
    state, applied = result.state, result.applied
    acked = service.store.acked_at[(args.route, state.version)]
    acked_wall = service.store.acked_wall[(args.route, state.version)]
    # a flip counts as propagated only when every replica of the cluster applied it
    everyone = applied is not None and len(applied.replicas) >= args.replicas
    elapsed = applied.elapsed_ms if everyone and applied is not None else None
    return Flip(
        action=action, version=state.version, live=state.live, acked=acked,
        acked_wall=acked_wall,
        done=acked + elapsed / 1e3 if elapsed is not None else returned,
        prepare_ms=result.prepare_ms, commit_ms=result.commit_ms, propagation_ms=elapsed,
        pending=list(applied.pending) if applied else [],
        replicas=len(applied.replicas) if applied else 0,
    )


async def admin_flip(http: Any, args: argparse.Namespace, i: int, a: str, b: str) -> Flip:
    """One change as the on-call makes it: the admin API of the first gateway."""
    if i % 2 == 0:
        action, body = "set-live", {"adapter": b}
    elif args.mode == "rollback":
        action, body = "rollback", {}
    else:
        action, body = "set-live", {"adapter": a}
    body.update(reason=f"bench flip {i}", actor="bench")
    sent_wall, sent = time.time(), time.monotonic()
    r = await http.post(f"/admin/routes/{args.route}/{action}", json=body)
    answered = time.monotonic()
    if r.status_code != 200:
        raise RuntimeError(f"flip {i} ({action}): HTTP {r.status_code}: {r.text[:300]}")
    out = r.json()
    state, applied = out["state"], out["applied"]
    # older gateways do not say when they committed: count from the request then
    committed = out.get("committed_at")
    acked_wall = datetime.fromisoformat(committed).timestamp() if committed else sent_wall
    acked = sent + (acked_wall - sent_wall)  # the same moment on this process's monotonic
    everyone = applied is not None and len(applied["replicas"]) >= args.replicas
    elapsed = applied["elapsed_ms"] if everyone else None
    return Flip(
        action=action, version=state["version"], live=state["live"], acked=acked,
        acked_wall=acked_wall,
        done=acked + elapsed / 1e3 if elapsed is not None else answered,
        prepare_ms=out["prepare_ms"], commit_ms=out["commit_ms"], propagation_ms=elapsed,
        pending=list(applied["pending"]) if applied else [],
        replicas=len(applied["replicas"]) if applied else 0,
        sent=sent, sent_wall=sent_wall, answered=answered,
    )


@asynccontextmanager
async def flipper(args: argparse.Namespace, cluster: Cluster
                  ) -> AsyncIterator[tuple[FlipFn, str, str, int, Path]]:
    """``(flip(i), live adapter at start, the other one, the start's version, the home
    whose cards the changes move)``, over the admin API of gateway 0 or the CLI's direct
    mode here."""
    import httpx

    assert cluster.writer_home is not None
    async with open_writer(cluster.writer_home, cluster.redis_url) as service:
        start = service.show(args.route)
        a = start.live
        b = other_adapter(cluster.writer_home, args.route, a, args.to)
        if args.via == "writer":
            yield (lambda i: do_flip(service, args, i, a, b)), a, b, start.version, \
                cluster.writer_home
            return
        async with httpx.AsyncClient(base_url=cluster.gateways[0].url, timeout=60) as http:
            yield (lambda i: admin_flip(http, args, i, a, b)), a, b, start.version, \
                cluster.homes[0]


def card_moves(home: Path, route_live: str, other: str) -> int:
    """Status moves recorded in the two adapters' model cards (their history)."""
    from lora_router.ground.home import Home
    from lora_router.registry.store import RegistryStore

    store = RegistryStore(Home.at(home))
    return sum(len(store.get_model_card(x).history) for x in (route_live, other))


async def run_flips(args: argparse.Namespace, cluster: Cluster, work: Path
                    ) -> tuple[list[Flip], list[Record], dict[int, str], float]:
    async with flipper(args, cluster) as (flip_fn, a, b, version, cards_home):
        live_of = {version: a}
        with AppliedRecorder(cluster.redis_url) as recorder:
            load = LoadGen([g.url for g in cluster.gateways], work,
                           concurrency=args.concurrency, route=args.route,
                           max_tokens=args.max_tokens, rps=args.rps)
            flips: list[Flip] = []
            try:
                await asyncio.sleep(args.warmup_s)
                for i in range(args.preflips):  # history first: unmeasured, back to back
                    pre = await flip_fn(i)
                    live_of[pre.version] = pre.live
                t0 = time.monotonic()
                args.card_moves_before = card_moves(cards_home, a, b)
                for i in range(args.preflips, args.preflips + args.flips):
                    flip = await flip_fn(i)
                    live_of[flip.version] = flip.live
                    flips.append(flip)
                    await asyncio.sleep(args.interval_ms / 1e3)
                await asyncio.sleep(args.interval_ms / 1e3)
            finally:
                records = load.stop()
            wall = time.monotonic() - t0
            for flip in flips:
                for gw in cluster.gateways:
                    found = recorder.report(gw.replica_id, args.route, flip.version)
                    if found is not None:
                        flip.arrivals[gw.index], flip.stamps[gw.index] = found
    return flips, records, live_of, wall


def all_serving_ms(flip: Flip, records: list[Record], n: int,
                   live_of: dict[int, str]) -> float | None:
    """From the admin request to the last replica's first response under ``flip.version``
    (or later) by that version's live adapter; None if a replica never showed one."""
    if flip.sent is None:
        return None
    firsts: dict[int, float] = {}
    for r in records:
        if (r.ok and r.version is not None and r.version >= flip.version
                and live_of.get(r.version) == r.model_id):
            firsts[r.gateway] = min(firsts.get(r.gateway, r.received), r.received)
    if len(firsts) < n:
        return None
    return (max(firsts.values()) - flip.sent) * 1e3


def oncall(flips: list[Flip], records: list[Record], n: int,
           live_of: dict[int, str]) -> dict[str, Any]:
    answers = [x for f in flips if (x := f.answer_ms()) is not None]
    rollbacks = [x for f in flips if f.action == "rollback" and (x := f.answer_ms()) is not None]
    applied = [x for f in flips if (x := f.all_applied_ms(n)) is not None]
    serving = [x for f in flips if (x := all_serving_ms(f, records, n, live_of)) is not None]
    outside = [x for f in flips if (x := f.outside_ms()) is not None]
    after = [x for f in flips if (x := f.answer_after_applied_ms(n)) is not None]
    return {
        "oncall_answer_p50_ms": pct(answers, 50), "oncall_answer_p99_ms": pct(answers, 99),
        "oncall_answer_max_ms": pct(answers, 100),
        "oncall_rollback_answer_p50_ms": pct(rollbacks, 50),
        "oncall_rollback_answer_p99_ms": pct(rollbacks, 99),
        "oncall_all_applied_p50_ms": pct(applied, 50),
        "oncall_all_applied_p99_ms": pct(applied, 99),
        "oncall_all_serving_p50_ms": pct(serving, 50),
        "oncall_all_serving_p99_ms": pct(serving, 99),
        "oncall_all_serving_max_ms": pct(serving, 100),
        "flips_without_serving_evidence": len(flips) - len(serving) if answers else None,
        "oncall_answer_after_all_applied_p50_ms": pct(after, 50),
        "oncall_answer_after_all_applied_p99_ms": pct(after, 99),
        "oncall_outside_service_p50_ms": pct(outside, 50),
        "oncall_outside_service_p99_ms": pct(outside, 99),
        "target_oncall_p99_ms": 50.0,
    }


def first_response_ms(flip: Flip, records: list[Record]) -> float | None:
    times = [r.received for r in records
             if r.ok and r.version is not None and r.version >= flip.version
             and r.model_id == flip.live]
    return (min(times) - flip.acked) * 1e3 if times else None


def analyse(args: argparse.Namespace, flips: list[Flip], records: list[Record],
            live_of: dict[int, str], wall: float) -> dict[str, Any]:
    n = args.replicas
    stale: set[int] = set()
    stale_strict: set[int] = set()
    for f in flips:
        done = {i: f.done for i in range(n)}
        stale |= {id(r) for r in violations(records, version=f.version, applied_at=done,
                                            live_of=live_of)}
        stale_strict |= {id(r) for r in violations(records, version=f.version,
                                                   applied_at=f.arrivals, live_of=live_of)}
    ok = [r for r in records if r.ok]
    prop = [f.propagation_ms for f in flips if f.propagation_ms is not None]
    stamped = [x for f in flips if (x := f.stamped_ms(n)) is not None]
    firsts = [x for f in flips if (x := first_response_ms(f, records)) is not None]
    rollbacks = [f.propagation_ms for f in flips
                 if f.action == "rollback" and f.propagation_ms is not None]
    prepares = [f.prepare_ms for f in flips if f.prepare_ms >= 0.01]
    lat = [(r.received - r.sent) * 1e3 for r in ok]
    return {
        "bench": "rollback", "replicas": n, "flips": len(flips), "mode": args.mode,
        "via": args.via, "preflips": args.preflips,
        "card_moves_before": args.card_moves_before,
        **oncall(flips, records, n, live_of),
        "concurrency": args.concurrency, "target_rps": args.rps or None,
        "requests": len(records),
        "rps": round(len(records) / wall, 1),
        "request_p50_ms": pct(lat, 50), "request_p99_ms": pct(lat, 99),
        "propagation_p50_ms": pct(stamped, 50), "propagation_p99_ms": pct(stamped, 99),
        "propagation_max_ms": pct(stamped, 100),
        "flips_without_every_stamp": sum(1 for f in flips if f.stamped_ms(n) is None),
        "writer_observed_p50_ms": pct(prop, 50), "writer_observed_p99_ms": pct(prop, 99),
        "writer_observed_max_ms": pct(prop, 100),
        "flips_not_applied_by_all": sum(1 for f in flips if f.propagation_ms is None),
        "rollback_writer_observed_p50_ms": pct(rollbacks, 50),
        "rollback_writer_observed_max_ms": pct(rollbacks, 100),
        "write_p50_ms": pct([f.commit_ms for f in flips], 50),
        "write_p99_ms": pct([f.commit_ms for f in flips], 99),
        "prepare_p50_ms": pct(prepares, 50), "prepare_max_ms": pct(prepares, 100),
        "failed_requests": len(records) - len(ok),
        "stale_after_propagation": len(stale),
        "stale_after_replica_applied": len(stale_strict),
        "inconsistent_responses": sum(1 for r in ok if live_of.get(r.version or 0) != r.model_id),
        "first_response_ms": pct(firsts, 50),
        "first_response_p99_ms": pct(firsts, 99),
        "first_response_max_ms": pct(firsts, 100),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "target_propagation_p99_ms": 10.0,
    }


def report_lines(r: dict[str, Any], flips: list[Flip]) -> list[str]:
    actions = {a: sum(1 for f in flips if f.action == a) for a in ("set-live", "rollback")}
    pending = sorted({rid for f in flips for rid in f.pending})
    short = sorted({f.replicas for f in flips if f.replicas < r["replicas"]})
    lines = [
        f"{r['replicas']} replicas, {r['flips']} flips ({actions['set-live']} set-live, "
        f"{actions['rollback']} rollback), concurrency {r['concurrency']}: {r['requests']} "
        f"requests, {r['rps']} req/s, request p50 {r['request_p50_ms']} ms "
        f"p99 {r['request_p99_ms']} ms",
        f"propagation, write ack -> last replica applied (replicas' own stamps): "
        f"p50 {r['propagation_p50_ms']} p99 {r['propagation_p99_ms']} "
        f"max {r['propagation_max_ms']} ms; flips missing a stamp: "
        f"{r['flips_without_every_stamp']}",
        f"  as the writer observes it (ApplyReport, what the CLI prints): "
        f"p50 {r['writer_observed_p50_ms']} p99 {r['writer_observed_p99_ms']} "
        f"max {r['writer_observed_max_ms']} ms; not applied by all: "
        f"{r['flips_not_applied_by_all']}"
        + (f" (pending: {', '.join(pending)})" if pending else "")
        + (f" (replicas registered: {short})" if short else ""),
        f"  rollbacks only (writer-observed): p50 {r['rollback_writer_observed_p50_ms']} "
        f"max {r['rollback_writer_observed_max_ms']} ms",
        f"write (compare-and-set) p50 {r['write_p50_ms']} p99 {r['write_p99_ms']} ms; "
        f"prepare (every replica loads the new adapter) p50 {r['prepare_p50_ms']} "
        f"max {r['prepare_max_ms']} ms",
        f"first response from the new live adapter after the ack: p50 "
        f"{r['first_response_ms']} p99 {r['first_response_p99_ms']} "
        f"max {r['first_response_max_ms']} ms",
        f"failed requests {r['failed_requests']}; stale after propagation "
        f"{r['stale_after_propagation']} (after each replica's own report: "
        f"{r['stale_after_replica_applied']}); inconsistent {r['inconsistent_responses']}; "
        f"load average {r['loadavg_1m_start']} before, {r['loadavg_1m_end']} after",
    ]
    if r["via"] == "admin":
        lines.insert(1, (
            f"on-call (admin API, after {r['preflips']} earlier changes, "
            f"{r['card_moves_before']} card moves): answer p50 {r['oncall_answer_p50_ms']} "
            f"p99 {r['oncall_answer_p99_ms']} max {r['oncall_answer_max_ms']} ms "
            f"(rollbacks p50 {r['oncall_rollback_answer_p50_ms']} "
            f"p99 {r['oncall_rollback_answer_p99_ms']}); every replica applied p50 "
            f"{r['oncall_all_applied_p50_ms']} p99 {r['oncall_all_applied_p99_ms']}; every "
            f"replica serving it p50 {r['oncall_all_serving_p50_ms']} "
            f"p99 {r['oncall_all_serving_p99_ms']} ms (target p99 <= 50)"))
    return lines


def flip_line(f: Flip) -> str:
    stamps = " ".join(f"gw-{i}:{(t - f.acked_wall) * 1e3:.2f}" for i, t in sorted(f.stamps.items()))
    prop = f"{f.propagation_ms:.2f}" if f.propagation_ms is not None else "-"
    return (f"v{f.version} {f.action:8s} live={f.live} prepare {f.prepare_ms:.1f} "
            f"write {f.commit_ms:.2f} propagation {prop} ms; replica stamps - ack: {stamps}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--home", type=Path, required=True, help="a demo home (copied, not written)")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--flips", type=int, default=50)
    p.add_argument("--preflips", type=int, default=0,
                   help="unmeasured changes made first, back to back (a long history)")
    p.add_argument("--via", choices=("admin", "writer"), default="admin",
                   help="the on-call's admin API on gateway 0 (default), or the CLI's "
                        "direct mode in this process")
    p.add_argument("--concurrency", type=int, default=None,
                   help="concurrent requests over all replicas (default: 2 per replica)")
    p.add_argument("--redis-url", default=None,
                   help="use this Redis (a dedicated db: lr:* keys are written) instead of a "
                        "throwaway redis-server")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--rps", type=float, default=0.0,
                   help="pace the load to this many requests/s in all (default 0: closed loop, "
                        "every worker sends its next request at once, which saturates the CPU)")
    p.add_argument("--mode", choices=("rollback", "set-live"), default="rollback")
    p.add_argument("--route", default=ROUTE)
    p.add_argument("--to", default=None, help="adapter B (default: the route's other adapter)")
    p.add_argument("--interval-ms", type=float, default=300.0, help="pause after each flip")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--max-tokens", type=int, default=5)
    p.add_argument("--verbose", action="store_true", help="print one line per flip")
    args = p.parse_args()
    args.concurrency = args.concurrency or 2 * args.replicas
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # this process's own threads (the store's listener, the applied recorder) must not hold
    # the GIL for the default 5 ms while the writer waits for reports (`serve` does the same)
    sys.setswitchinterval(0.0005)
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        with Cluster.start(args.home.resolve(), work, replicas=args.replicas,
                           torch_threads=args.torch_threads, redis_url=args.redis_url) as c:
            print(f"{args.replicas} gateways ready in {time.monotonic() - t0:.1f} s "
                  f"(Redis {c.redis_url})", flush=True)
            flips, records, live_of, wall = asyncio.run(run_flips(args, c, work))
    result = {**analyse(args, flips, records, live_of, wall), "loadavg_1m_start": load_before}
    if args.verbose:
        for f in flips:
            print(flip_line(f))
    for line in report_lines(result, flips):
        print(line)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
