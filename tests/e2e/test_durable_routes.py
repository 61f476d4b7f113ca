"""A rollback on the embedded default survives a restart: `lora-router serve` (no Redis) keeps
route state and audit in ``<home>/flags/routes.db``, and model cards agree with the routes
in force from the start, over real HTTP with real restarts of the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import yaml

from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from tests.conftest import free_port

V1, V2, ROUTE = "support-triage@v1", "support-triage@v2", "support-triage"
PROMPT = "Ticket: I was charged twice for my order\nCategory:"


@contextmanager
def serving(home: Home) -> Iterator[httpx.Client]:
    """`lora-router serve` on ``home`` (embedded defaults), stopped with SIGTERM on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(home.root),
         "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, "gateway exited"
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "gateway not ready"
                time.sleep(0.2)
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)


def _served_by(client: httpx.Client) -> tuple[str, int]:
    r = client.post("/v1/completions", json={"model": ROUTE, "prompt": PROMPT, "max_tokens": 3})
    assert r.status_code == 200, r.text
    return r.headers["x-model-id"], int(r.headers["x-flag-version"])


def _statuses(home: Home) -> tuple[str, str]:
    store = RegistryStore(home)
    return store.get_model_card(V1).status, store.get_model_card(V2).status


def test_a_rollback_survives_a_restart_with_its_audit_and_cards(copy_home: Home) -> None:
    # the routes file ships the bad adapter live (v1 its rollback target): the on-call's case
    copy_home.routes_file.write_text(yaml.safe_dump({"routes": {ROUTE: {
        "live": V2, "rollback_target": V1}}}))
    routes_file = copy_home.routes_file.read_bytes()
    assert _statuses(copy_home) == ("live", "registered")  # as the demo build left them

    with serving(copy_home) as gw:
        assert _served_by(gw) == (V2, 1)
        assert _statuses(copy_home) == ("live", "live")  # reconciled with the routes at start
        r = gw.post(f"/admin/routes/{ROUTE}/rollback", json={"reason": "INC-7: es F1 dropped"})
        assert r.status_code == 200, r.text
        assert (r.json()["state"]["live"], r.json()["state"]["version"]) == (V1, 2)
        assert _served_by(gw) == (V1, 2)

    assert (copy_home.root / "flags" / "routes.db").is_file()
    assert copy_home.routes_file.read_bytes() == routes_file  # the seed file is never rewritten
    assert _statuses(copy_home) == ("live", "registered")  # written by the time it stopped

    with serving(copy_home) as gw:  # a routine restart: the bad adapter stays off
        state = gw.get(f"/admin/routes/{ROUTE}").json()
        assert (state["live"], state["rollback_target"], state["version"]) == (V1, None, 2)
        assert _served_by(gw) == (V1, 2)
        audit = gw.get(f"/admin/routes/{ROUTE}/audit").json()["entries"]
        assert [(e["version"], e["action"]) for e in audit] == [(1, "seed"), (2, "rollback")]
        assert audit[1]["reason"] == "INC-7: es F1 dropped"
        assert audit[1]["before"]["live"] == V2 and audit[1]["after"]["live"] == V1
        assert _statuses(copy_home) == ("live", "registered")
