"""``lora-router serve`` as a process: a busy port fails at once; a stop signal exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lora_router.ground.home import Home
from tests.conftest import free_port

CLI = [sys.executable, "-m", "lora_router.router.cli.main", "serve"]


def _env() -> dict[str, str]:
    drop = {"REDIS_URL", "DATABASE_URL", "LORA_ROUTER_HOME", "LORA_ROUTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"HF_HUB_OFFLINE": "1"}


def test_a_busy_port_is_one_line_and_exit_2_before_the_home_is_even_read(
    tmp_path: Path,
) -> None:
    # an empty home: were the base verified (or the model loaded) first, the error would
    # be about the base, not the port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*CLI, "--home", str(tmp_path), "--port", str(port)],
                             capture_output=True, text=True, timeout=120, env=_env())
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: port {port} is in use on 127.0.0.1: set PORT=... (make run) or --port "
        "(lora-router serve)"]
    assert out.stdout == ""


def _wait_ready(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_shuts_down_cleanly_with_exit_0(copy_home: Home, sig: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "--home", str(copy_home.root), "--port", str(port), "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Application shutdown complete" in err and "Traceback" not in err
