"""Sizing figures for docs/deployment.md, measured on the real stores: PostgreSQL log bytes per
row and Redis bytes per route (and per audit entry, per replica).

Starts a private ``redis-server`` (or uses ``--redis-url``: its database is FLUSHED) and one
``lora-router serve`` on a copy of ``--home`` (never written to) with ``DATABASE_URL`` on a
fresh schema of ``--pg-url`` (dropped at the end), then:

- sends ``--requests`` completions (the home's test tickets as prompts, ``--max-tokens``) and
  makes ``--flips`` route changes through the admin API (set-live v2 / rollback: real audit
  entries), and waits until every request has its log row;
- PostgreSQL: ``pg_column_size`` of those real rows (the tuple alone), then the table grown to
  ``--rows`` by copying them (new request ids, ``served_at`` spread over a day: the indexes
  see distinct keys), ``VACUUM ANALYZE``, and ``pg_total_relation_size('inference_log')``
  (heap + TOAST + every index) / ``count(*)``: the bytes on disk per row;
- Redis: ``MEMORY USAGE`` of the route hashes, the audit stream and the replica's keys as the
  gateway left them; then ``--routes`` routes seeded through ``RedisRouteStore`` (the real
  write path: state, version, one audit entry each) and the growth divided by their number.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_router.demo.task import format_prompt  # noqa: E402
from lora_router.router.flags import keys  # noqa: E402
from lora_router.router.flags.redis_store import RedisRouteStore  # noqa: E402
from tests.harness.cluster import Cluster, RedisServer  # noqa: E402

ROUTE = "support-triage"
V2 = "support-triage@v2"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, required=True, help="a built home (the demo's)")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis-url", default=None, help="default: a private redis-server")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--flips", type=int, default=20)
    p.add_argument("--rows", type=int, default=200_000, help="log rows to measure at")
    p.add_argument("--routes", type=int, default=1000, help="routes to measure Redis at")
    return p.parse_args()


def _prompts(home: Path, n: int) -> list[str]:
    files = sorted(home.glob("data/*/test.jsonl"))
    texts = [json.loads(line)["text"] for f in files for line in f.read_text().splitlines()]
    return [format_prompt(texts[i % len(texts)]) for i in range(n)]


def _serve_and_record(cluster: Cluster, args: argparse.Namespace) -> list[str]:
    gw = cluster.gateways[0]
    ids = []
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        for i, prompt in enumerate(_prompts(args.home, args.requests)):
            r = http.post("/v1/completions", headers={"x-route-key": f"k{i}"},
                          json={"model": ROUTE, "prompt": prompt,
                                "max_tokens": args.max_tokens})
            r.raise_for_status()
            ids.append(r.headers["x-request-id"])
        for i in range(args.flips):
            action, body = ("set-live", {"adapter": V2}) if i % 2 == 0 else ("rollback", {})
            r = http.post(f"/admin/routes/{ROUTE}/{action}",
                          json={"reason": f"sizing flip {i}", **body})
            r.raise_for_status()
    return ids


def _wait_rows(dsn: str, ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            (n,) = conn.execute("SELECT count(*) FROM inference_log WHERE request_id = ANY(%s)",
                                (ids,)).fetchone() or (0,)
            if n == len(ids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {len(ids)} rows reached the log")
            time.sleep(0.1)


_GROW = """
INSERT INTO inference_log ({cols})
SELECT {exprs}
FROM (SELECT * FROM inference_log ORDER BY served_at LIMIT %(real)s) AS t,
     generate_series(1, %(copies)s) AS g
"""


def _pg_figures(dsn: str, real: int, rows: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name ="
            " 'inference_log' AND table_schema = current_schema() ORDER BY ordinal_position"
        ).fetchall()]
        (tuple_avg,) = conn.execute(
            "SELECT avg(pg_column_size(t.*)) FROM inference_log t").fetchone() or (0,)
        copies = max(0, -(-(rows - real) // real))
        exprs = [
            "left(t.request_id, length(t.request_id) - 9) || lpad(to_hex(g), 9, '0')"
            if c == "request_id" else
            "t.served_at - (g * interval '86400 seconds' / %(copies)s)" if c == "served_at"
            else f"t.{c}"
            for c in cols
        ]
        conn.execute(_GROW.format(cols=", ".join(cols), exprs=", ".join(exprs)),
                     {"real": real, "copies": copies})
        conn.execute("VACUUM ANALYZE inference_log")
        (n, total, heap, indexes) = conn.execute(
            "SELECT count(*), pg_total_relation_size('inference_log'),"
            " pg_relation_size('inference_log'), pg_indexes_size('inference_log')"
            " FROM inference_log").fetchone() or (0, 0, 0, 0)
    return {"pg_rows": n, "pg_total_bytes": total, "pg_heap_bytes": heap,
            "pg_index_bytes": indexes, "pg_bytes_per_row": round(total / n, 1),
            "pg_heap_bytes_per_row": round(heap / n, 1),
            "pg_index_bytes_per_row": round(indexes / n, 1),
            "pg_tuple_bytes_avg_real": round(float(tuple_avg), 1)}


def _llama_dims(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each LoRA target module of a Llama-shaped layer."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg.get("num_key_value_heads", 1) * hd
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def _adapter_figures(home: Path, adapter: str = "support-triage@v1") -> dict[str, Any]:
    """The formula (sum over target modules and layers of r * (in + out) * dtype bytes)
    against the adapter's real tensors."""
    from safetensors import safe_open

    name, version = adapter.split("@")
    folder = home / "adapters" / name / version
    acfg = json.loads((folder / "adapter_config.json").read_text())
    bcfg = json.loads((home / "base" / "config.json").read_text())
    dims = _llama_dims(bcfg)
    weights = folder / "adapter_model.safetensors"
    tensor_bytes, dtype_bytes = 0, 0
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            t = f.get_tensor(key)
            tensor_bytes += t.numel() * t.element_size()
            dtype_bytes = t.element_size()
    per_layer = sum(acfg["r"] * sum(dims[m]) for m in acfg["target_modules"])
    formula = per_layer * bcfg["num_hidden_layers"] * dtype_bytes
    return {"adapter": adapter, "adapter_rank": acfg["r"],
            "adapter_targets": sorted(acfg["target_modules"]),
            "adapter_formula_bytes": formula, "adapter_tensor_bytes": tensor_bytes,
            "adapter_file_bytes": weights.stat().st_size}


def _usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


async def _redis_figures(url: str, replica: str, routes: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    audit = keys.audit_key(ROUTE)
    out: dict[str, Any] = {
        "redis_audit_entries": client.xlen(audit),
        "redis_audit_stream_bytes": _usage(client, audit),
        "redis_replica_bytes": sum(_usage(client, k) for k in (
            keys.replica_key(replica), keys.applied_key(replica), keys.resident_key(replica))),
    }
    hashes = (keys.ROUTES, keys.VERSIONS)
    before = sum(_usage(client, k) for k in hashes)
    streams_before = sum(_usage(client, k) for k in client.scan_iter(f"{keys.AUDIT_PREFIX}*"))
    store = RedisRouteStore(url)
    await store.start()
    try:
        state = store.get(ROUTE)
        assert state is not None
        await store.seed({f"sizing-{i:06d}": state.model_copy(update={"route": f"sizing-{i:06d}"})
                          for i in range(routes)})
    finally:
        await store.close()
    after = sum(_usage(client, k) for k in hashes)
    streams_after = sum(_usage(client, k) for k in client.scan_iter(f"{keys.AUDIT_PREFIX}*"))
    seed_stream = (streams_after - streams_before) / routes  # a stream of one entry
    out.update({
        # what one more change of a route adds to its audit stream (capped near
        # keys.AUDIT_MAXLEN entries per route)
        "redis_bytes_per_extra_audit_entry": round(
            (out["redis_audit_stream_bytes"] - seed_stream)
            / max(1, out["redis_audit_entries"] - 1), 1),
        "redis_audit_maxlen": keys.AUDIT_MAXLEN,
        "redis_routes_measured": routes,
        "redis_state_bytes_per_route": round((after - before) / routes, 1),
        "redis_seed_audit_bytes_per_route": round(seed_stream, 1),
        "redis_bytes_per_route": round((after - before + streams_after - streams_before)
                                       / routes, 1),
        "redis_used_memory": int(client.info("memory")["used_memory"]),
    })
    client.close()
    return out


def main() -> None:
    args = _args()
    schema = f"sizing_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(args.pg_url, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in args.pg_url else "?"
    dsn = f"{args.pg_url}{sep}options=-csearch_path%3D{schema}"
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="sizing-") as tmp:
            work = Path(tmp)
            url = args.redis_url
            if url is None:
                server = RedisServer(work / "redis")
                server.start()
                url = server.url
            redis.Redis.from_url(url).flushdb()
            with Cluster.start(args.home, work, replicas=1, torch_threads=1, redis_url=url,
                               extra_env={"DATABASE_URL": dsn}) as cluster:
                ids = _serve_and_record(cluster, args)
                _wait_rows(dsn, ids)
                replica = cluster.replica_ids[0]
                out: dict[str, Any] = {"requests": len(ids), "flips": args.flips}
                out.update(asyncio.run(_redis_figures(url, replica, args.routes)))
            out.update(_pg_figures(dsn, len(ids), args.rows))
            out.update(_adapter_figures(args.home))
    finally:
        if server is not None:
            server.stop()
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
