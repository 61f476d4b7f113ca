"""``lora-router set-live|rollback ...`` directly on Redis (``REDIS_URL``, no ``--url``), run
as processes against the real Redis.

With no gateway registered on that Redis the change is stored, and the command says plainly
that nothing serves it yet (never that a gateway loaded anything) and exits 3, or 0 with
``--allow-no-replicas``. With a real gateway replica registered (``lora-router serve`` in
Redis mode) it says which replica loaded and applied the change, and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from lora_router.ground.home import Home
from lora_router.router.flags import keys
from lora_router.router.flags.state import RouteState
from tests.conftest import free_port

CLI = [sys.executable, "-m", "lora_router.router.cli.main"]
ROUTE, V1, V2 = "support-triage", "support-triage@v1", "support-triage@v2"
NOT_SERVED = 3
# a fresh Redis has no replica registry yet: a gated change waits one heartbeat TTL for
# replicas to register (router.flags.epoch); short here, for the CLI and the gateway alike
FAST_REGISTRY = {"LORA_ROUTER_REPLICA_TTL_S": "2", "LORA_ROUTER_REPLICA_HEARTBEAT_S": "0.5"}


def _env(home: Home, redis_url: str) -> dict[str, str]:
    drop = {"REDIS_URL", "DATABASE_URL", "LORA_ROUTER_HOME", "LORA_ROUTER_PORT"}
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return base | FAST_REGISTRY | {"HF_HUB_OFFLINE": "1", "REDIS_URL": redis_url,
                                   "LORA_ROUTER_HOME": str(home.root), "COLUMNS": "250"}


def lora_router(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def stored(redis_url: str) -> RouteState:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hget(keys.ROUTES, ROUTE)
    finally:
        client.close()
    assert raw is not None
    return RouteState.model_validate_json(raw)  # type: ignore[arg-type]


def test_with_no_gateway_a_change_is_stored_says_nothing_serves_it_and_exits_3(
    copy_home: Home, redis_url: str
) -> None:
    env = _env(copy_home, redis_url)
    r = lora_router(env, "set-live", ROUTE, V2, "--reason", "hotfix")
    out = r.stdout + r.stderr
    assert r.returncode == NOT_SERVED, out
    assert f"set-live {ROUTE}: version 2" in r.stdout
    assert "is STORED in Redis, but NOTHING SERVES IT YET" in r.stderr
    assert "no gateway replica is registered on this Redis" in r.stderr
    assert "--allow-no-replicas" in r.stderr
    assert "loaded the new adapters" not in out and "Traceback" not in out
    assert stored(redis_url).live == V2  # stored all the same: a gateway starting serves it

    r = lora_router(env, "rollback", ROUTE, "--reason", "back", "--allow-no-replicas")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "NOTHING SERVES IT YET" in r.stderr  # accepted, and still said
    assert stored(redis_url).live == V1

    shown = lora_router(env, "rollback", "--help")
    assert shown.returncode == 0 and "--allow-no-replicas" in shown.stdout
    assert f"exits {NOT_SERVED}" in shown.stdout


def _wait_registered(proc: subprocess.Popen[bytes], url: str, log: Path) -> str:
    """The replica id once the gateway is ready and registered with the other replicas."""
    deadline = time.monotonic() + 240
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            detail = r.json()
            if r.status_code == 200 and detail["replica"]["registered"]:
                return str(detail["replica"]["id"])
        except (httpx.TransportError, ValueError):
            pass
        assert time.monotonic() < deadline, "gateway never became ready and registered"
        time.sleep(0.2)


def _served_by(url: str) -> str:
    r = httpx.post(f"{url}/v1/completions", timeout=60, json={
        "model": ROUTE, "prompt": "Ticket: I was charged twice\nCategory:", "max_tokens": 2})
    assert r.status_code == 200, r.text
    return r.headers["x-model-id"]


@pytest.mark.slow
def test_with_a_gateway_registered_a_change_names_the_replica_that_applied_it(
    copy_home: Home, redis_url: str, tmp_path: Path
) -> None:
    env = _env(copy_home, redis_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        gateway = subprocess.Popen(
            [*CLI, "serve", "--home", str(copy_home.root), "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env | {"LORA_ROUTER_REPLICA_ID": "gw-1"},
        )
    try:
        replica = _wait_registered(gateway, url, log)
        assert replica == "gw-1" and _served_by(url) == V1
        r = lora_router(env, "set-live", ROUTE, V2, "--reason", "flip")
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "every replica loaded the new adapters in" in r.stdout
        assert "applied by the only live replica (gw-1)" in r.stdout
        assert "NOTHING SERVES" not in out and "Traceback" not in out
        assert _served_by(url) == V2

        r = lora_router(env, "rollback", ROUTE, "--reason", "back")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "applied by the only live replica (gw-1)" in r.stdout
        assert _served_by(url) == V1
    finally:
        gateway.terminate()
        gateway.wait(60)
