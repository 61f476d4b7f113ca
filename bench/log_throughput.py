"""Inference-log throughput: rows/s into PostgreSQL and SQLite, enqueue cost, gateway overhead.

1. Sink throughput: ``--records`` records are enqueued into a started writer (queue large
   enough that nothing spills) and ``close()`` drains them; rows/s = records / (enqueue +
   drain) wall time, features included. PostgreSQL: ``DATABASE_URL`` or ``--pg-url`` (default:
   the local test database), in a throwaway schema dropped afterwards. SQLite: a temp home.
2. Enqueue cost: the mean wall time of ``writer.record(rec)`` over those records (µs).
3. Gateway: requests/s through real HTTP (uvicorn, ``create_app(settings, recorder=...)``)
   with logging off and on, alternating trials on the same model in the same run.

Ends with one JSON line: ``pg_rows_per_s``, ``sqlite_rows_per_s``, ``enqueue_us``,
``logging_on_over_off`` (null, with ``gateway_skipped``, when no demo home can be served).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from router.log.factory import build_log_writer
from router.log.record import InferenceRecord
from router.log.writer import LogWriter
from router.settings import Settings

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"
PROMPT = "Hi, my order ORD-{n} has not arrived yet; please email me at ana{n}@example.com"


def make_records(n: int) -> list[InferenceRecord]:
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    return [
        InferenceRecord(
            request_id=f"bench-{run}-{i}", model_id="support@v1",
            input_hash=hashlib.sha256(str(i).encode()).hexdigest(), output="shipping",
            served_at=now, route="support", arm="live", flag_version=1, latency_ms=12.0,
            prompt_tokens=20, completion_tokens=2, prompt=PROMPT.format(n=i),
        )
        for i in range(n)
    ]


async def sink_throughput(settings: Settings, home: Path, n: int) -> dict[str, float]:
    writer = build_log_writer(
        settings.model_copy(update={"log_queue_max": n + 1}),  # measure the sink, not spills
        home, labels_for=lambda r: ("billing", "shipping"),
    )
    await writer.start()
    records = make_records(n)
    t0 = time.perf_counter()
    for rec in records:
        writer.record(rec)
    enqueued = time.perf_counter()
    await writer.close()
    elapsed = time.perf_counter() - t0
    await writer.sink.open()
    rows = len(await writer.sink.tail(n + 10))
    await writer.sink.close()
    if rows != n:
        raise SystemExit(f"{writer.sink.name}: {rows} rows for {n} records")
    return {"rows_per_s": n / elapsed, "enqueue_us": (enqueued - t0) / n * 1e6}


@contextlib.contextmanager
def pg_schema(url: str) -> Any:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in url else "?"
        try:
            yield f"{url}{sep}options=-csearch_path%3D{schema}"
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- gateway ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(settings: Settings, writer: LogWriter | None, port: int) -> AsyncIterator[None]:
    """The gateway on ``port``, recording into ``writer`` (None: logging off)."""
    import uvicorn

    from router.app import create_app

    if writer is not None:
        await writer.start()
    app = create_app(settings, recorder=writer.record if writer else None)
    app.state.log_writer = writer
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise SystemExit("gateway did not start")
            await asyncio.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        await task
        if writer is not None:
            await writer.close()


async def load(url: str, model: str, requests: int, concurrency: int) -> float:
    import httpx

    body = {"model": model, "prompt": "Where is my parcel? It is late.", "max_tokens": 4,
            "temperature": 0}
    todo = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            for _ in todo:
                r = await client.post("/v1/completions", json=body)
                r.raise_for_status()

        await client.post("/v1/completions", json=body)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - t0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_route(home: Path) -> str:
    from router.flags.state import load_routes_file

    return sorted(load_routes_file(home / "routes.yaml"))[0]


async def gateway_ratio(args: argparse.Namespace, log_home: Path) -> dict[str, Any]:
    home = Path(args.home).resolve()
    if not (home / "base.lock.json").is_file():
        return {"gateway_skipped": f"no demo home at {home} (run `lora-router demo build`)"}
    try:
        import router.app  # noqa: F401
    except ImportError as exc:
        return {"gateway_skipped": f"gateway not importable: {exc}"}
    model = args.model or _first_route(home)
    port = _free_port()
    settings = Settings(home=home, database_url=None)
    # rows go to a scratch home (SQLite, the embedded default): the demo home is only read
    log_settings = Settings(home=log_home, database_url=None)
    rps: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.trials):
        for logging_on in (False, True):
            writer = build_log_writer(log_settings, log_home) if logging_on else None
            async with serve(settings, writer, port):
                url = f"http://127.0.0.1:{port}"
                rps[logging_on].append(await load(url, model, args.requests, args.concurrency))
    off, on = statistics.mean(rps[False]), statistics.mean(rps[True])
    return {"gateway_rps_off": off, "gateway_rps_on": on, "logging_on_over_off": on / off,
            "gateway_model": model}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"records": args.records}
    with tempfile.TemporaryDirectory(prefix="log-bench-") as tmp:
        sq = await sink_throughput(Settings(home=tmp, database_url=None), Path(tmp), args.records)
        out["sqlite_rows_per_s"] = sq["rows_per_s"]
        pg_url = args.pg_url or os.environ.get("DATABASE_URL") or LOCAL_PG
        with pg_schema(pg_url) as url:
            pg_settings = Settings(home=tmp, database_url=url)
            pg = await sink_throughput(pg_settings, Path(tmp), args.records)
        out["pg_rows_per_s"] = pg["rows_per_s"]
        out["enqueue_us"] = statistics.mean([sq["enqueue_us"], pg["enqueue_us"]])
        if args.skip_gateway:
            out["gateway_skipped"] = "--skip-gateway"
        else:
            out.update(await gateway_ratio(args, Path(tmp) / "gw"))
    out.setdefault("logging_on_over_off", None)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000, help="records per sink")
    p.add_argument("--pg-url", default=None, help="PostgreSQL URL (default: DATABASE_URL, "
                   "else the local test database); a throwaway schema is used")
    p.add_argument("--home", default=os.environ.get("LORA_ROUTER_HOME", ".demo"),
                   help="demo home to serve for the gateway part")
    p.add_argument("--model", default=None, help="route or adapter id (default: first route)")
    p.add_argument("--requests", type=int, default=200, help="requests per gateway trial")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--trials", type=int, default=2, help="off/on pairs, alternating")
    p.add_argument("--skip-gateway", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = asyncio.run(main(parse_args()))
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
