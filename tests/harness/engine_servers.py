"""Real engine servers (``lora-router serve --engine-api``) and remote gateways, as
subprocesses on free ports, for the remote-engine tests and ``bench/remote_engine.py``.

An :class:`EngineServer` can be killed (SIGKILL), frozen (SIGSTOP) and started again on the
same port; :func:`spawn_gateway` starts ``lora-router serve`` with ``engine=remote`` in front
of them. Readiness is waited for on conditions (``/health``, ``/readyz``) with deadlines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
_SERVED_STATE = ("log", "flags", "demo-runs", "incidents", "flywheel")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*_SERVED_STATE))
    return dst


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("LORA_ROUTER_")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "LORA_ROUTER_TORCH_THREADS": "1", **(extra or {})})
    return env


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 30.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class EngineServer:
    """``lora-router serve --engine-api`` on ``home``; :meth:`start` (again) keeps the port."""

    home: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EngineServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--engine-api",
                 "--home", str(self.home), "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=_env(self.env), stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"engine server {self.url} exited:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine server {self.url} not ready:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def adapters(self) -> set[str]:
        """The adapters it lists (``/v1/models`` cards with a parent)."""
        cards = httpx.get(f"{self.url}/v1/models", timeout=5).json()["data"]
        return {c["id"] for c in cards if c.get("parent") is not None}

    def kill(self) -> None:
        """SIGKILL (a crash) and reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen one must be able to exit
        _stop(self.proc)
        self.proc = None


def start_servers(homes: list[Path], workdir: Path,
                  envs: list[dict[str, str]] | None = None) -> list[EngineServer]:
    """Start one engine server per home (together) and wait until each answers."""
    servers = [
        EngineServer(h, workdir / f"engine-{i}.log", (envs or [{}] * len(homes))[i]).start()
        for i, h in enumerate(homes)
    ]
    try:
        for s in servers:
            s.wait_ready()
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


@dataclass
class RemoteGateway:
    """``lora-router serve`` with ``engine=remote`` (a subprocess)."""

    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readiness(self) -> tuple[int, dict[str, Any]]:
        try:
            r = httpx.get(f"{self.url}/readyz", timeout=2)
            return r.status_code, r.json()
        except (httpx.TransportError, ValueError):
            return 0, {}

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.readiness()[0] != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready:\n{_tail(self.log_path)}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        return _tail(self.log_path, 60)

    def stop(self) -> None:
        _stop(self.proc)


def spawn_gateway(home: Path, backends: list[str], workdir: Path, *,
                  env: dict[str, str] | None = None, name: str = "gateway") -> RemoteGateway:
    """``lora-router serve`` on ``home``; ``engine=remote`` over ``backends`` unless ``env``
    says otherwise (``LORA_ROUTER_ENGINE=embedded`` for a baseline)."""
    port = free_port()
    extra = {"LORA_ROUTER_ENGINE": "remote", "LORA_ROUTER_ENGINE_BACKENDS": ",".join(backends),
             "LORA_ROUTER_ENGINE_PROBE_INTERVAL_S": "0.2", **(env or {})}
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(home),
             "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=_env(extra), stdout=log, stderr=subprocess.STDOUT,
        )
    return RemoteGateway(home, port, proc, log_path)
