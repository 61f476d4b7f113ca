"""What the gateway adds on top of the engine: latency and CPU per request.

The same requests (one demo ticket prompt, ``--max-tokens`` new tokens, the route's live
adapter) are served two ways in one run, at concurrency 1 and 32:

- **direct**: handed to an engine built in this process (``adapters.factory.build_engine``
  on the same home and settings), ``await engine.generate(...)`` from N concurrent tasks;
- **http**: sent to ``lora-router serve`` started as a subprocess (uvicorn, FastAPI,
  validation, routing through the route store, the service, JSON) over keep-alive loopback
  connections, one per concurrent client. The client is a minimal asyncio HTTP/1.1 client
  with the request bytes pre-encoded, so the client's own CPU (which shares the 2 cores)
  stays small and the difference measures the gateway, not an HTTP library.

Noise on a shared machine must hit both paths alike: at c=1 direct and http requests
alternate one by one (ABBA order); at c=32 whole rounds alternate (``--rounds``). Latency:
p50/p99 per request; ``added_p50_ms_c1`` = http p50 - direct p50 at c=1.

Gateway CPU per request. Model work runs off the event loop (the engine's worker thread
and torch's threads), so the gateway's CPU is what the event-loop thread spends. We read
each thread's on-CPU time in nanoseconds from ``/proc/<pid>/task/<tid>/schedstat`` (first
field; falls back to utime+stime from ``stat``) before and after each phase (at c=1 the
direct path's loop CPU is ``time.thread_time()`` around each direct call):

    gateway_cpu = server main (event-loop) thread CPU per request over http
                - this process's main (event-loop) thread CPU per request, direct

The subtraction removes what the engine itself does on the caller's event loop (admission,
tokenising if it does it there, resolving futures), which both paths pay; what remains is
uvicorn + FastAPI + routing + service + serialisation. The server's other threads (engine
worker, torch) are reported beside it as ``engine_threads_cpu_ms_per_request`` with the
direct path's equivalent, to show the engine did the same work both ways. The headline
``gateway_cpu_ms_per_request`` is the larger of the c=1 and c=32 figures.

Ends by printing one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_router.adapters.engine import GenerationRequest, SamplingParams  # noqa: E402
from lora_router.demo.task import format_prompt  # noqa: E402

TICKET = "I was charged twice for my subscription this month, please refund the duplicate"


# -- CPU accounting --------------------------------------------------------------------
def thread_cpu_ns(pid: int) -> dict[int, int]:
    """On-CPU nanoseconds of every thread of ``pid``."""
    out: dict[int, int] = {}
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    for tid_s in os.listdir(f"/proc/{pid}/task"):
        tid = int(tid_s)
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        except (OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = (int(fields[11]) + int(fields[12])) * tick_ns
    return out


def cpu_split(pid: int, main_tid: int, before: dict[int, int], after: dict[int, int]
              ) -> tuple[float, float]:
    """(main thread ms, all other threads ms) between two snapshots."""
    main = (after.get(main_tid, 0) - before.get(main_tid, 0)) / 1e6
    others = sum(v - before.get(t, 0) for t, v in after.items() if t != main_tid) / 1e6
    return main, others


# -- a minimal keep-alive HTTP/1.1 client ----------------------------------------------
class RawClient:
    def __init__(self, host: str, port: int, path: str, body: bytes) -> None:
        self.host, self.port = host, port
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def reconnect(self) -> None:
        await self.close()
        await self.connect()

    async def send(self) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            await self.reconnect()  # the server closed an idle keep-alive connection
            return await self.send()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
            self.writer = None


# -- load generation -------------------------------------------------------------------
async def run_load(concurrency: int, total: int, one: Callable[[int], Awaitable[None]]
                   ) -> tuple[list[float], float]:
    """``total`` calls of ``one(worker)`` from ``concurrency`` workers; latencies (ms), wall."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(w: int) -> None:
        for _ in counter:
            t0 = time.perf_counter()
            await one(w)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, time.perf_counter() - t0


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(statistics.median(lat), 3),
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
    }


# -- the server ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(home),
           "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the run ---------------------------------------------------------------------------
Phase = dict[str, Any]
Call = Callable[[int], Awaitable[None]]


async def measure_phase(concurrency: int, total: int, one: Call, pid: int, main_tid: int
                        ) -> Phase:
    """``total`` calls from ``concurrency`` workers, with ``pid``'s per-thread CPU around it."""
    before = thread_cpu_ns(pid)
    latencies, wall = await run_load(concurrency, total, one)
    main_ms, other_ms = cpu_split(pid, main_tid, before, thread_cpu_ns(pid))
    return {"latencies": latencies, "wall": wall, "main_ms": main_ms, "other_ms": other_ms}


async def interleaved(total: int, direct: Call, http: Call, server_pid: int
                      ) -> dict[str, Phase]:
    """Concurrency 1 with direct and http requests alternating (ABBA), so that the noise of
    a shared machine hits both paths alike. The direct path's loop-thread CPU is taken with
    ``time.thread_time()`` around each direct call (nothing else runs on the loop then)."""
    me = os.getpid()
    server0, bench0 = thread_cpu_ns(server_pid), thread_cpu_ns(me)
    lat: dict[str, list[float]] = {"direct": [], "http": []}
    direct_loop_s = 0.0
    for i in range(total):
        order = (("direct", direct), ("http", http))
        for mode, fn in order if i % 2 == 0 else order[::-1]:
            c0, t0 = time.thread_time(), time.perf_counter()
            await fn(0)
            lat[mode].append((time.perf_counter() - t0) * 1000)
            if mode == "direct":
                direct_loop_s += time.thread_time() - c0
    s_main, s_other = cpu_split(server_pid, server_pid, server0, thread_cpu_ns(server_pid))
    _, b_other = cpu_split(me, threading.get_native_id(), bench0, thread_cpu_ns(me))
    return {
        "direct": {"latencies": lat["direct"], "wall": sum(lat["direct"]) / 1000,
                   "main_ms": direct_loop_s * 1000, "other_ms": b_other},
        "http": {"latencies": lat["http"], "wall": sum(lat["http"]) / 1000,
                 "main_ms": s_main, "other_ms": s_other},
    }


def merge(phases: list[Phase]) -> dict[str, float]:
    latencies = [x for p in phases for x in p["latencies"]]
    n = len(latencies)
    out = summary(latencies, sum(p["wall"] for p in phases))
    out["loop_thread_cpu_ms_per_request"] = round(sum(p["main_ms"] for p in phases) / n, 4)
    out["engine_threads_cpu_ms_per_request"] = round(sum(p["other_ms"] for p in phases) / n, 4)
    return out


async def measure(args: argparse.Namespace, direct: Call, http: Call, server_pid: int,
                  clients: list[RawClient]) -> dict[str, Any]:
    for fn in (direct, http):  # warm-up, both paths
        await run_load(8, args.warmup, fn)
    results: dict[str, Any] = {}
    c1 = await interleaved(args.requests_c1, direct, http, server_pid)
    results["c1"] = {mode: merge([phase]) for mode, phase in c1.items()}
    phases: dict[str, list[Phase]] = {"direct": [], "http": []}
    per_round = max(32, args.requests_c32 // args.rounds)
    for _ in range(args.rounds):
        phases["direct"].append(await measure_phase(
            32, per_round, direct, os.getpid(), threading.get_native_id()))
        # uvicorn closes keep-alive connections idle for 5 s: reconnect before measuring
        await asyncio.gather(*(cl.reconnect() for cl in clients))
        phases["http"].append(await measure_phase(32, per_round, http, server_pid, server_pid))
    results["c32"] = {mode: merge(p) for mode, p in phases.items()}
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from lora_router.adapters.factory import build_engine
    from lora_router.ground.home import Home
    from lora_router.router.engine_spec import engine_spec
    from lora_router.router.flags.state import load_routes_file
    from lora_router.router.settings import Settings

    home = Home.at(args.home)
    settings = Settings(home=home.root, torch_threads=args.torch_threads)
    adapter = load_routes_file(settings.routes_path)[args.route].live
    prompt = format_prompt(args.ticket)
    params = SamplingParams(max_tokens=args.max_tokens)

    engine = build_engine(engine_spec(settings), home)
    await engine.start()
    await engine.load_adapter(adapter, home.adapter_dir(adapter))
    gc.freeze()  # as the gateway does after start: no full collections rescanning the model
    port = free_port()
    proc = start_server(home.root, port)
    body = json.dumps({"model": args.route, "prompt": prompt,
                       "max_tokens": args.max_tokens}).encode()
    clients = [RawClient("127.0.0.1", port, "/v1/completions", body) for _ in range(32)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        status, headers, _ = await clients[0].send()
        if status != 200 or headers.get("x-model-id") != adapter:
            raise SystemExit(f"unexpected response: {status} {headers}")
        seq = iter(range(10**9))

        async def direct(w: int) -> None:
            await engine.generate(GenerationRequest(f"bench-{next(seq)}", prompt, adapter, params))

        async def http(w: int) -> None:
            status, _, payload = await clients[w].send()
            if status != 200:
                raise SystemExit(f"http {status}: {payload[:200]!r}")

        results = await measure(args, direct, http, proc.pid, clients)
    finally:
        for client in clients:
            await client.close()
        stop_server(proc)
        await engine.close()
    return report(args, adapter, results)


def report(args: argparse.Namespace, adapter: str, results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "gateway_overhead", "home": str(args.home),
                           "route": args.route, "adapter": adapter,
                           "max_tokens": args.max_tokens, "torch_threads": args.torch_threads,
                           **results}
    cpu = {}
    for key, r in results.items():
        d, h = r["direct"], r["http"]
        out[f"added_p50_ms_{key}"] = round(h["p50_ms"] - d["p50_ms"], 3)
        out[f"added_p99_ms_{key}"] = round(h["p99_ms"] - d["p99_ms"], 3)
        cpu[key] = round(h["loop_thread_cpu_ms_per_request"]
                         - d["loop_thread_cpu_ms_per_request"], 4)
        out[f"gateway_cpu_ms_per_request_{key}"] = cpu[key]
        out[f"rps_ratio_http_over_direct_{key}"] = round(h["rps"] / d["rps"], 3)
    out["gateway_cpu_ms_per_request"] = max(cpu.values())
    out["target_added_p50_ms"] = 1.0
    out["target_gateway_cpu_ms"] = 1.0
    out["targets_met"] = (out["added_p50_ms_c1"] <= 1.0
                          and out["gateway_cpu_ms_per_request"] <= 1.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--home", type=Path, required=True, help="a demo home (lora-router demo build)")
    p.add_argument("--route", default="support-triage")
    p.add_argument("--ticket", default=TICKET, help="ticket text of the prompt")
    p.add_argument("--max-tokens", type=int, default=2)
    p.add_argument("--requests-c1", type=int, default=300, help="pairs (direct + http)")
    p.add_argument("--requests-c32", type=int, default=1280)
    p.add_argument("--rounds", type=int, default=2, help="alternating direct/http c=32 rounds")
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads of each engine (both processes hold one; two thread "
                        "pools spinning on 2 cores made c=1 latency 30x worse here)")
    args = p.parse_args()
    os.environ["LORA_ROUTER_TORCH_THREADS"] = str(args.torch_threads)  # the server's engine
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
