"""What a remote engine costs over the embedded one: the gateway -> engine-server hop.

Three processes on copies of one home, in one run:

- **embedded**: ``lora-router serve`` with the embedded engine;
- **remote**: ``lora-router serve`` with ``engine=remote`` in front of one
  ``lora-router serve --engine-api`` (the same embedded engine behind vLLM's protocol).

The same request (the demo ticket prompt on the route's live adapter, ``--max-tokens`` new
tokens) goes to both gateways over keep-alive loopback connections from a minimal asyncio
HTTP/1.1 client. At concurrency 1 the two alternate request by request (ABAB: machine noise
hits both alike); at ``--concurrency`` whole rounds alternate. Every answer must be 200 and
name the same adapter. Ends by printing one JSON line; ``ratio`` is the remote p50 latency
over the embedded one at concurrency 1, ``throughput_ratio`` the requests/s ratio at
``--concurrency``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.engine_servers import (  # noqa: E402
    RemoteGateway,
    copy_home,
    spawn_gateway,
    start_servers,
)

PROMPT = "Ticket: I was charged twice for my subscription this month\nCategory:"


class Conn:
    """One keep-alive HTTP/1.1 connection sending one pre-encoded POST."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.request = (f"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                        "\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> tuple[float, str]:
        """(seconds, x-model-id) of one request; raises unless 200."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        t0 = time.perf_counter()
        self.writer.write(self.request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(h.split(": ", 1) for h in head[1:] if ": " in h)
        headers = {k.lower(): v for k, v in headers.items()}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        elapsed = time.perf_counter() - t0
        if head[0].split(" ")[1] != "200":
            raise RuntimeError(f"{head[0]} from port {self.port}")
        return elapsed, headers.get("x-model-id", "")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _round(conns: list[Conn], per_conn: int) -> tuple[float, list[str]]:
    """Every connection sends ``per_conn`` requests back to back; (wall seconds, models)."""
    models: list[str] = []

    async def run(c: Conn) -> None:
        for _ in range(per_conn):
            models.append((await c.send())[1])

    t0 = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    return time.perf_counter() - t0, models


async def measure(ports: dict[str, int], args: argparse.Namespace) -> dict[str, object]:
    body = json.dumps({"model": args.route, "prompt": PROMPT,
                       "max_tokens": args.max_tokens, "temperature": 0}).encode()
    one = {k: Conn(p, body) for k, p in ports.items()}
    lat: dict[str, list[float]] = {k: [] for k in ports}
    models: set[str] = set()
    for k in ports:  # warm-up: connections, caches
        for _ in range(5):
            await one[k].send()
    for _ in range(args.requests):  # ABAB at concurrency 1
        for k in ports:
            s, model = await one[k].send()
            lat[k].append(s)
            models.add(model)
    many = {k: [Conn(p, body) for _ in range(args.concurrency)] for k, p in ports.items()}
    rps: dict[str, list[float]] = {k: [] for k in ports}
    per_conn = max(1, args.requests // args.concurrency)
    for _ in range(args.rounds):
        for k in ports:
            wall, ms = await _round(many[k], per_conn)
            rps[k].append(len(ms) / wall)
            models.update(ms)
    for c in [*one.values(), *(c for cs in many.values() for c in cs)]:
        c.close()
    if len(models) != 1:
        raise RuntimeError(f"the gateways answered with different adapters: {models}")
    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    p99 = {k: sorted(v)[int(0.99 * (len(v) - 1))] * 1000 for k, v in lat.items()}
    best = {k: max(v) for k, v in rps.items()}
    return {
        "bench": "remote_engine", "adapter": models.pop(), "max_tokens": args.max_tokens,
        "requests_c1": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
        "embedded_p50_ms_c1": round(p50["embedded"], 2),
        "remote_p50_ms_c1": round(p50["remote"], 2),
        "embedded_p99_ms_c1": round(p99["embedded"], 2),
        "remote_p99_ms_c1": round(p99["remote"], 2),
        "added_p50_ms_c1": round(p50["remote"] - p50["embedded"], 2),
        "ratio": round(p50["remote"] / p50["embedded"], 3),
        "embedded_rps": round(best["embedded"], 1), "remote_rps": round(best["remote"], 1),
        "throughput_ratio": round(best["remote"] / best["embedded"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="a built home (copied, not written)")
    ap.add_argument("--route", default="support-triage")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200, help="per gateway at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    (server,) = start_servers([copy_home(args.home, work / "engine-home")], work)
    gateways: dict[str, RemoteGateway] = {}
    try:
        gateways["embedded"] = spawn_gateway(copy_home(args.home, work / "home-e"), [], work,
                                             env={"LORA_ROUTER_ENGINE": "embedded"},
                                             name="embedded")
        gateways["remote"] = spawn_gateway(copy_home(args.home, work / "home-r"), [server.url],
                                           work, name="remote")
        for gw in gateways.values():
            gw.wait_ready()
        result = asyncio.run(measure({k: g.port for k, g in gateways.items()}, args))
    finally:
        for gw in gateways.values():
            gw.stop()
        server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
