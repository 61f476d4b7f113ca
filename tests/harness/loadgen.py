"""Load for the multi-replica bench and tests: closed-loop (or paced) completions from a
separate process, and the check that says which responses were served stale.

- :class:`LoadGen` runs ``python tests/harness/loadgen.py`` (its CPU is not spent on the writer's
  event loop): workers send the same ``/v1/completions`` request round-robin over the
  gateways on raw keep-alive HTTP/1.1 connections, with no retries, until stdin closes;
  every request becomes a :class:`Record` (times: ``time.monotonic()``, CLOCK_MONOTONIC,
  comparable across the processes of one machine).
- :func:`violations`: the requests that break "admitted after a replica applied a change,
  served under that change (or a later one), by the adapter that version names".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUTE = "support-triage"
PROMPT = "Ticket: my card was charged twice\nCategory:"


@dataclass(frozen=True, slots=True)
class Record:
    gateway: int
    sent: float
    received: float
    status: int  # 0: transport error
    model_id: str | None
    version: int | None
    arm: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


class LoadGen:
    """Load from a subprocess (module docstring); :meth:`stop` returns every Record."""

    def __init__(self, urls: Sequence[str], workdir: Path, *, concurrency: int,
                 route: str = ROUTE, max_tokens: int = 5, prompt: str = PROMPT,
                 rps: float = 0.0) -> None:
        """``rps`` > 0 paces the workers to that many requests/s in all (open loop, as long
        as the gateways keep up); 0: each worker sends its next request at once."""
        self._out = workdir / f"load-{time.monotonic_ns()}.json"
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--out", str(self._out),
             "--concurrency", str(concurrency), "--route", route,
             "--max-tokens", str(max_tokens), "--prompt", prompt, "--rps", str(rps), *urls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "started" once the workers run
        if line.strip() != b"started":
            self.stop()
            raise RuntimeError(f"load generator did not start: {line!r}")

    def stop(self, timeout_s: float = 60.0) -> list[Record]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        if not self._out.is_file():
            raise RuntimeError(f"load generator exited with {self._proc.returncode}, no records")
        return [Record(*row) for row in json.loads(self._out.read_text())]


class _Conn:
    """One keep-alive HTTP/1.1 connection sending the same POST (no retries)."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port, self.request = port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(head[0].split(" ", 2)[1]), headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def _load_main(args: argparse.Namespace) -> list[tuple[Any, ...]]:
    body = json.dumps({"model": args.route, "prompt": args.prompt,
                       "max_tokens": args.max_tokens}).encode()
    ports = [int(u.rsplit(":", 1)[1].rstrip("/")) for u in args.urls]
    records: list[tuple[Any, ...]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()

    async def worker(w: int) -> None:
        conns = []
        for port in ports:
            req = (f"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                   f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                   f"x-route-key: w{w}\r\n\r\n").encode() + body
            conns.append(_Conn(port, req))
        k = w
        interval = args.concurrency / args.rps if args.rps > 0 else 0.0
        next_at = time.monotonic() + interval * w / args.concurrency
        while not stop.is_set():
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + interval, time.monotonic())
            g, k = k % len(ports), k + 1
            sent = time.monotonic()
            try:
                status, h = await asyncio.wait_for(conns[g].send(), args.timeout_s)
                version = h.get("x-flag-version")
                records.append((g, sent, time.monotonic(), status, h.get("x-model-id"),
                                int(version) if version else None, h.get("x-route-arm"), None))
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                conns[g].close()
                records.append((g, sent, time.monotonic(), 0, None, None, None, repr(exc)))
        for c in conns:
            c.close()

    tasks = [asyncio.create_task(worker(w)) for w in range(args.concurrency)]
    print("started", flush=True)
    await asyncio.gather(*tasks)
    return records


def violations(
    records: Sequence[Record], *, version: int, applied_at: dict[int, float],
    live_of: dict[int, str],
) -> list[Record]:
    """Requests sent to gateway i after ``applied_at[i]`` that were routed under an older
    version than ``version``, or served by another adapter than their version's live."""
    bad = []
    for r in records:
        at = applied_at.get(r.gateway)
        if not r.ok or at is None or r.sent <= at:
            continue
        if r.version is None or r.version < version or live_of.get(r.version) != r.model_id:
            bad.append(r)
    return bad


def main() -> None:
    load = argparse.ArgumentParser(description="load on gateways until EOF on stdin")
    load.add_argument("urls", nargs="+")
    load.add_argument("--out", type=Path, required=True)
    load.add_argument("--concurrency", type=int, default=4)
    load.add_argument("--route", default=ROUTE)
    load.add_argument("--max-tokens", type=int, default=5)
    load.add_argument("--prompt", default=PROMPT)
    load.add_argument("--timeout-s", type=float, default=30.0)
    load.add_argument("--rps", type=float, default=0.0, help="pace to this rate (0: closed loop)")
    args = load.parse_args()
    records = asyncio.run(_load_main(args))
    args.out.write_text(json.dumps(records))


if __name__ == "__main__":
    main()
