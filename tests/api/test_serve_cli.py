"""``lora-router serve``: serves a home over HTTP; refuses a bad home in one clean line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from tests.conftest import free_port

CLI = [sys.executable, "-m", "lora_router.router.cli.main", "serve"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_home_without_a_pinned_base_is_a_clean_error(tmp_path: Path) -> None:
    out = run_cli("--home", str(tmp_path), "--port", str(free_port()))
    assert out.returncode == 2
    assert "no pinned base" in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_changed_base_files_are_refused_cleanly(copy_home: Home) -> None:
    config = copy_home.base_dir / "config.json"
    config.write_text(config.read_text().replace("{", '{"tampered": true, ', 1))
    out = run_cli("--home", str(copy_home.root), "--port", str(free_port()))
    assert out.returncode == 2
    assert "do not match" in out.stderr and "config.json" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_serve_answers_completions_until_stopped(demo_home: Home) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CLI, "--home", str(demo_home.root), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway never became ready"
            time.sleep(0.2)
        r = httpx.post(f"{url}/v1/completions", timeout=60, json={
            "model": "support-triage", "prompt": format_prompt("I want to cancel my plan"),
            "max_tokens": 3})
        assert r.status_code == 200
        assert r.json()["model"] == r.headers["x-model-id"] and "@" in r.json()["model"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    # no admin token: said at start, and the admin API answers loopback clients only
    assert "answers loopback clients only" in out


def test_a_non_loopback_host_without_an_admin_token_is_refused(demo_home: Home) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LORA_ROUTER_ADMIN_TOKEN"}
    out = subprocess.run(
        [*CLI, "--home", str(demo_home.root), "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr + out.stdout
    assert "LORA_ROUTER_ADMIN_TOKEN" in lines[0] and "--insecure-open-admin" in lines[0]
    assert "0.0.0.0" in lines[0]


def test_insecure_open_admin_starts_with_a_loud_warning(demo_home: Home) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LORA_ROUTER_ADMIN_TOKEN"}
    proc = subprocess.Popen(
        [*CLI, "--home", str(demo_home.root), "--host", "0.0.0.0", "--port", str(free_port()),
         "--insecure-open-admin", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # printed before the model loads
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert first.startswith("WARNING: --insecure-open-admin"), first
    assert "LORA_ROUTER_ADMIN_TOKEN" in first and "anyone" in first
