"""A throwaway multi-replica deployment, shared by ``bench/rollback.py`` and the e2e tests.

- :class:`RedisServer`: a private ``redis-server`` on a free port that keeps nothing on
  disk; it can be stopped mid-run and started again on the same port (empty).
- :class:`Cluster`: that Redis plus N ``lora-router serve`` subprocesses in Redis mode, each
  on a free port with its own copy of the home (each writes its own SQLite log) and replica
  id ``gw-<i>``; started together, ready when every ``/readyz`` answers 200; torn down
  (SIGTERM, then kill) on exit.
- :func:`open_writer`: the route service an operator's CLI builds in direct-to-Redis mode
  (store, replica registry, two-phase load gate), with the monotonic time of each write's
  acknowledgement recorded (``acked_at``: monotonic; ``acked_wall``: ``time.time()``).
- :class:`AppliedRecorder`: a thread that records when each replica's "applied" report
  arrives (``keys.APPLIED_CHANNEL``): the per-replica evidence that a change reached it.

The load generator and the check on its records are in :mod:`tests.harness.loadgen` (re-exported
here). Times are ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across the processes of
one machine) unless named wall-clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.harness.loadgen import PROMPT, ROUTE, LoadGen, Record, violations

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["PROMPT", "ROOT", "ROUTE", "AppliedRecorder", "Cluster", "Gateway", "LoadGen",
           "Record", "RedisServer", "copy_home", "free_port", "open_writer", "violations"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_home(src: Path, dst: Path) -> Path:
    """A private copy of a home (without its inference log and embedded route store)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("log", "flags"))
    return dst


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class RedisServer:
    """A private redis-server (``--save "" --appendonly no``: a restart comes back empty)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        msg = f"redis-server on port {self.port} did not start"
                        raise RuntimeError(msg) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (``kill``: SIGKILL, a crash); its data is gone."""
        if self._proc is not None:
            if kill and self._proc.poll() is None:
                self._proc.kill()
            _stop_process(self._proc, 10.0)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Gateway:
    index: int
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def replica_id(self) -> str:
        return f"gw-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readiness(self, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]]:
        """``/readyz``: (status, detail); (0, {}) when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=timeout_s) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """Redis plus N gateways in Redis mode; use :meth:`start` as a context manager."""

    redis_url: str
    gateways: list[Gateway]
    redis: RedisServer | None  # None when the caller's Redis is used
    homes: list[Path] = field(default_factory=list)
    writer_home: Path | None = None  # a copy for the operator's side (it may write cards)

    @property
    def replica_ids(self) -> list[str]:
        return [g.replica_id for g in self.gateways]

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, home: Path, workdir: Path, *, replicas: int, torch_threads: int = 1,
        redis_url: str | None = None, ready_timeout_s: float = 240.0,
        extra_env: dict[str, str] | None = None,
    ) -> Iterator[Cluster]:
        server = None
        if redis_url is None:
            server = RedisServer(workdir / "redis")
            server.start()
            redis_url = server.url
        cluster = cls(redis_url, [], server)
        try:
            cluster.writer_home = copy_home(home, workdir / "home-writer")
            for i in range(replicas):
                gw_home = copy_home(home, workdir / f"home-{i}")
                cluster.homes.append(gw_home)
                cluster.gateways.append(
                    _spawn_gateway(i, gw_home, redis_url, workdir, torch_threads, extra_env)
                )
            cluster.wait_ready(ready_timeout_s)
            yield cluster
        finally:
            for gw in cluster.gateways:
                _stop_process(gw.proc)
            if server is not None:
                server.stop()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for gw in self.gateways:
            while gw.readiness()[0] != 200:
                if gw.proc.poll() is not None:
                    raise RuntimeError(f"{gw.replica_id} exited:\n{gw.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{gw.replica_id} not ready:\n{gw.log_tail()}")
                time.sleep(0.2)


def _spawn_gateway(
    index: int, home: Path, redis_url: str, workdir: Path, torch_threads: int,
    extra_env: dict[str, str] | None,
) -> Gateway:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({
        "REDIS_URL": redis_url,
        "LORA_ROUTER_HOME": str(home),
        "LORA_ROUTER_TORCH_THREADS": str(torch_threads),
        "LORA_ROUTER_REPLICA_ID": f"gw-{index}",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(extra_env or {}),
    })
    log_path = workdir / f"gw-{index}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(home),
             "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    return Gateway(index, home, port, proc, log_path)


# -- the operator's side ----------------------------------------------------------------
@contextlib.asynccontextmanager
async def open_writer(home: Path, redis_url: str) -> AsyncIterator[Any]:
    """The ``RouteService`` of the CLI's direct-to-Redis mode (``open_client`` without
    ``--url``) on ``home``; ``service.store.acked_at[(route, version)]`` is the monotonic
    time at which each write's compare-and-set was acknowledged (``acked_wall``: the same
    moment on the wall clock, comparable with the replicas' applied stamps)."""
    from lora_router.router.flags.client import ServiceClient, open_client
    from lora_router.router.settings import Settings

    settings = Settings(home=home, redis_url=redis_url)
    async with open_client(settings, None, "bench") as client:
        assert isinstance(client, ServiceClient)
        store: Any = client.service.store
        put = store.put
        store.acked_at, store.acked_wall = {}, {}

        async def timed_put(*args: Any, **kw: Any) -> Any:
            new = await put(*args, **kw)
            store.acked_at[(new.route, new.version)] = time.monotonic()
            store.acked_wall[(new.route, new.version)] = time.time()
            return new

        store.put = timed_put
        yield client.service


class AppliedRecorder(threading.Thread):
    """Each replica's first applied report per (replica, route, version): when it arrived
    here (monotonic) and the replica's own stamp (``at``, wall clock, taken just after it
    applied); reconnects when Redis goes away. Start it before the changes it must see."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(name="applied-recorder", daemon=True)
        self._url = redis_url
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._arrivals: dict[tuple[str, str, int], tuple[float, float]] = {}
        self.subscribed = threading.Event()

    def __enter__(self) -> AppliedRecorder:
        self.start()
        if not self.subscribed.wait(10):
            raise RuntimeError("applied recorder could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join(5)

    def applied_at(self, replica: str, route: str, version: int) -> float | None:
        """When (monotonic, here) ``replica``'s first report of ``route`` at ``version`` or
        later arrived."""
        found = self.report(replica, route, version)
        return found[0] if found else None

    def report(self, replica: str, route: str, version: int) -> tuple[float, float] | None:
        """(arrival here, monotonic; the replica's stamp, wall clock) of the first report."""
        with self._lock:
            times = [t for (r, rt, v), t in self._arrivals.items()
                     if r == replica and rt == route and v >= version]
        return min(times) if times else None

    def run(self) -> None:
        import redis

        from lora_router.router.flags import keys

        while not self._stop_event.is_set():
            client = redis.Redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=1)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.channel(keys.APPLIED_CHANNEL, client))
                self.subscribed.set()
                while not self._stop_event.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is not None and message["type"] == "message":
                        self._record(time.monotonic(), json.loads(message["data"]))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.subscribed.clear()
                self._stop_event.wait(0.05)
            finally:
                pubsub.close()
                client.close()

    def _record(self, arrived: float, msg: dict[str, Any]) -> None:
        key = (str(msg["replica"]), str(msg["route"]), int(msg["version"]))
        with self._lock:
            self._arrivals.setdefault(key, (arrived, float(msg["at"])))
