"""Inference-log throughput: rows/s into PostgreSQL and SQLite, enqueue cost, gateway overhead.

1. Sink throughput: ``--records`` records are enqueued into a started writer (queue large
   enough that nothing spills) and ``close()`` drains them; rows/s = records / (enqueue +
   drain) wall time, features included. PostgreSQL: ``DATABASE_URL`` or ``--pg-url`` (default:
   the local test database), in a throwaway schema dropped afterwards. SQLite: a temp home.
2. Enqueue cost: the mean wall time of ``writer.record(rec)`` over those records (µs): the
   journal append (the record serialised to one JSON line and handed to the kernel with one
   ``write(2)``, no fsync) plus the queue append.
3. Gateway, ``logging_on_over_off``: ONE gateway (``create_app`` under uvicorn, the demo home
   of ``--home``, its first route) whose recorder is a switch: the log writer's enqueue
   (``--gateway-sink``: SQLite in a scratch home, or a throwaway PostgreSQL schema) or
   nothing. A load-generator subprocess (raw keep-alive HTTP/1.1, ``--concurrency``
   connections) sends ``--gateway-requests`` per round; rounds alternate off/on in ABBA order
   (``--rounds`` pairs) after an uncounted warm-up, so drifting noise on the shared machine hits
   both arms alike. An "on" round's time includes flushing what the writer still had queued
   at its end. ``logging_on_over_off`` is the median over round pairs of (requests/s on /
   requests/s off), each pair's halves run back to back, so a burst of load from elsewhere on
   the shared machine skews one pair, not the figure; the pooled ratio (all requests / all
   time, per arm) and the pairs' interquartile range are printed and reported beside it. The
   log must hold exactly one row per request sent with logging on (checked). The gateway
   process's CPU time per request (``time.process_time``: the gateway runs in this process,
   the load generator in another) is reported per arm too: it does not depend on what else
   runs on the machine.

Prints a line per figure and per round, and ends with one JSON line: ``pg_rows_per_s``,
``sqlite_rows_per_s``, ``enqueue_us``, ``logging_on_over_off`` (null, with
``gateway_skipped``, when no demo home can be served), and the gateway's details.
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

from lora_router.router.log.factory import build_log_writer
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.writer import LogWriter
from lora_router.router.settings import Settings

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


class Switch:
    """The gateway's recorder: the log writer's enqueue while ``on``, nothing while off."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self.on = False

    def __call__(self, rec: InferenceRecord) -> None:
        if self.on:
            self.writer.record(rec)


class RawConn:
    """A keep-alive HTTP/1.1 connection sending one pre-encoded request (cheap for the client,
    which shares the cores with the gateway)."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.request = (
            f"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        await self.reader.readexactly(length)
        return int(lines[0].split(" ", 2)[1])


async def _round(conns: list[RawConn], n: int) -> int:
    """Send ``n`` requests over ``conns`` (one at a time each); the number not answered 200."""
    todo = iter(range(n))

    async def worker(conn: RawConn) -> int:
        return sum([await conn.send() != 200 for _ in todo])

    return sum(await asyncio.gather(*(worker(conn) for conn in conns)))


async def client_process(port: int, body: bytes) -> None:
    """The load generator (a subprocess): reads ``N C`` lines, sends N requests over C
    connections, answers ``<seconds> <non-200 responses>``; stops at end of input."""
    conns: list[RawConn] = []
    while line := await asyncio.to_thread(sys.stdin.readline):
        n, c = map(int, line.split())
        conns += [RawConn(port, body) for _ in range(c - len(conns))]
        t0 = time.perf_counter()
        errors = await _round(conns[:c], n)
        sys.stdout.write(f"{time.perf_counter() - t0} {errors}\n")
        sys.stdout.flush()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _routes(home: Path) -> dict[str, Any]:
    from lora_router.router.flags.state import load_routes_file

    return load_routes_file(home / "routes.yaml")


@contextlib.asynccontextmanager
async def serve(settings: Settings, recorder: Switch) -> AsyncIterator[None]:
    """The gateway (``create_app`` under uvicorn) on ``settings.port``, recording through
    ``recorder``; the writer is started before and drained after."""
    import uvicorn

    from lora_router.router.app import create_app

    await recorder.writer.start()
    app = create_app(settings, recorder=recorder)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="error",
                       access_log=False)
    )
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
        await recorder.writer.close()


class Client:
    """The load-generator subprocess, driven one round at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, body: dict[str, Any]) -> Client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client-port", str(port),
            "--client-body", json.dumps(body),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def round(self, n: int, concurrency: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n} {concurrency}\n".encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise SystemExit("load generator died")
        elapsed, errors = line.split()
        if int(errors):
            raise SystemExit(f"{int(errors)} of {n} gateway requests failed")
        return float(elapsed)

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


async def gateway_ratio(args: argparse.Namespace, log_home: Path, pg_url: str) -> dict[str, Any]:
    """One gateway, one model: rounds with the log writer on and off, interleaved (ABBA)."""
    home = Path(args.home).resolve()
    if not (home / "base.lock.json").is_file():
        return {"gateway_skipped": f"no demo home at {home} (run `lora-router demo build`)"}
    states = _routes(home)
    model = args.model or sorted(states)[0]
    settings = Settings(home=home, database_url=None, port=_free_port(),
                        torch_threads=args.torch_threads)
    sys.setswitchinterval(getattr(settings, "switch_interval_s", sys.getswitchinterval()))
    # rows go to a scratch home (or a throwaway PostgreSQL schema): the demo home is only read
    log_settings = Settings(home=log_home, database_url=pg_url if args.gateway_sink ==
                            "postgres" else None)
    labels = {r: tuple(s.task.labels) for r, s in states.items()
              if s.task.type == "classification"}
    writer = build_log_writer(log_settings, log_home, labels_for=lambda r: labels.get(r, ()))
    switch = Switch(writer)
    n, c = args.gateway_requests, args.concurrency
    body = {"model": model, "prompt": "Ticket: I was charged twice for my order\nCategory:",
            "max_tokens": args.max_tokens, "temperature": 0}
    async with serve(settings, switch):
        client = await Client.start(settings.port, body)
        try:
            for on in (True, False):  # warm-up, not counted
                switch.on = on
                await client.round(max(n // 4, c), c)
            await writer.flush()
            wall, cpu = await _rounds(client, switch, n, c, args.rounds)
        finally:
            await client.close()
            switch.on = False
    logged = await _count_rows(writer)
    expected = n * args.rounds + max(n // 4, c)
    if logged != expected:
        raise SystemExit(f"log has {logged} rows for {expected} requests with logging on")
    # each round's two halves ran back to back: their ratio sees the same background load
    pairs = [off / on for on, off in zip(wall[True], wall[False], strict=True)]
    cpu_pairs = [off / on for on, off in zip(cpu[True], cpu[False], strict=True)]
    return {
        "gateway_rps_off": n * args.rounds / sum(wall[False]),
        "gateway_rps_on": n * args.rounds / sum(wall[True]),
        "logging_on_over_off": statistics.median(pairs),
        "logging_on_over_off_pooled": sum(wall[False]) / sum(wall[True]),
        "logging_pair_ratio_p25_p75": statistics.quantiles(pairs, n=4)[::2],
        "gateway_cpu_us_per_request_off": sum(cpu[False]) / (n * args.rounds) * 1e6,
        "gateway_cpu_us_per_request_on": sum(cpu[True]) / (n * args.rounds) * 1e6,
        "gateway_cpu_off_over_on": statistics.median(cpu_pairs),
        "gateway_model": model, "gateway_sink": writer.sink.name,
        "gateway_requests_per_round": n, "gateway_rounds": args.rounds,
        "gateway_concurrency": c,
    }


async def _rounds(
    client: Client, switch: Switch, n: int, c: int, rounds: int
) -> tuple[dict[bool, list[float]], dict[bool, list[float]]]:
    """Interleaved rounds (ABBA): wall seconds and gateway-process CPU seconds per round."""
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            switch.on = on
            cpu0 = time.process_time()
            t = await client.round(n, c)
            if on:  # what the writer still has queued is this round's cost too
                t0 = time.perf_counter()
                await switch.writer.flush()
                t += time.perf_counter() - t0
            cpu[on].append(time.process_time() - cpu0)
            wall[on].append(t)
            arm = "on " if on else "off"
            print(f"  round {r:2d} logging {arm}: {n / t:8.1f} req/s, "
                  f"{cpu[on][-1] / n * 1e6:6.0f} us CPU/request", flush=True)
    return wall, cpu


async def _count_rows(writer: LogWriter) -> int:
    await writer.sink.open()
    try:
        return len(await writer.sink.tail(10**7))
    finally:
        await writer.sink.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"records": args.records}
    pg_url = args.pg_url or os.environ.get("DATABASE_URL") or LOCAL_PG
    with tempfile.TemporaryDirectory(prefix="log-bench-") as tmp:
        sq_settings = Settings(home=Path(tmp), database_url=None)
        sq = await sink_throughput(sq_settings, Path(tmp), args.records)
        out["sqlite_rows_per_s"] = sq["rows_per_s"]
        print(f"SQLite: {sq['rows_per_s']:,.0f} rows/s, enqueue {sq['enqueue_us']:.2f} us",
              flush=True)
        with pg_schema(pg_url) as url:
            pg_settings = Settings(home=Path(tmp), database_url=url)
            pg = await sink_throughput(pg_settings, Path(tmp), args.records)
        out["pg_rows_per_s"] = pg["rows_per_s"]
        print(f"PostgreSQL: {pg['rows_per_s']:,.0f} rows/s, enqueue {pg['enqueue_us']:.2f} us",
              flush=True)
        out["enqueue_us"] = statistics.mean([sq["enqueue_us"], pg["enqueue_us"]])
        if args.skip_gateway:
            out["gateway_skipped"] = "--skip-gateway"
        else:
            with pg_schema(pg_url) as url:
                out.update(await gateway_ratio(args, Path(tmp) / "gw", url))
            if out.get("logging_on_over_off") is not None:
                lo, hi = out["logging_pair_ratio_p25_p75"]
                print(f"gateway ({out['gateway_sink']}): {out['gateway_rps_off']:.1f} req/s "
                      f"logging off, {out['gateway_rps_on']:.1f} on; on/off per round pair: "
                      f"median {out['logging_on_over_off']:.3f} (IQR {lo:.3f}-{hi:.3f}), "
                      f"pooled {out['logging_on_over_off_pooled']:.3f}; gateway CPU/request "
                      f"{out['gateway_cpu_us_per_request_off']:.0f} us off, "
                      f"{out['gateway_cpu_us_per_request_on']:.0f} us on", flush=True)
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
    p.add_argument("--gateway-requests", type=int, default=200,
                   help="requests per gateway round")
    p.add_argument("--rounds", type=int, default=20,
                   help="off/on round pairs, interleaved (ABBA)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent gateway clients")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens generated per request")
    p.add_argument("--gateway-sink", choices=("sqlite", "postgres"), default="sqlite",
                   help="where the gateway's log writer writes while logging is on")
    p.add_argument("--torch-threads", type=int, default=1, help="the gateway engine's threads")
    p.add_argument("--skip-gateway", action="store_true")
    p.add_argument("--client-port", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--client-body", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli = parse_args()
    if cli.client_port is not None:  # the load generator subprocess
        asyncio.run(client_process(cli.client_port, cli.client_body.encode()))
        sys.exit(0)
    result = asyncio.run(main(cli))
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
