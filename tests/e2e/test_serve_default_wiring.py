"""`lora-router serve` on embedded defaults, end to end over real HTTP: a request is logged to
SQLite with the adapter that served it, feedback fills in the outcome, and an admin flip
re-points the route with no restart, then a rollback returns it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import httpx

from lora_router.ground.home import Home
from tests.conftest import free_port

PROMPT = "Ticket: I was charged twice for my order\nCategory:"


def _complete(client: httpx.Client) -> httpx.Response:
    r = client.post(
        "/v1/completions", json={"model": "support-triage", "prompt": PROMPT, "max_tokens": 5}
    )
    assert r.status_code == 200, r.text
    return r


def test_serve_logs_feedback_and_flips(copy_home: Home) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lora_router.router.cli.main",
            "serve",
            "--home",
            str(copy_home.root),
            "--port",
            str(port),
        ],
        env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
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

            first = _complete(client)
            assert first.headers["x-model-id"] == "support-triage@v1"
            rid = first.headers["x-request-id"]

            fb = client.post(
                "/v1/feedback",
                json={"request_id": rid, "was_correct": False, "failure_cluster": "double-charge"},
            )
            assert fb.status_code == 200, fb.text
            assert (
                client.post(
                    "/v1/feedback", json={"request_id": "nope", "was_correct": True}
                ).status_code
                == 404
            )

            flip = client.post(
                "/admin/routes/support-triage/set-live",
                json={"adapter": "support-triage@v2", "reason": "e2e"},
            )
            assert flip.status_code == 200, flip.text
            second = _complete(client)
            assert second.headers["x-model-id"] == "support-triage@v2"
            assert int(second.headers["x-flag-version"]) > int(first.headers["x-flag-version"])

            back = client.post("/admin/routes/support-triage/rollback", json={"reason": "e2e"})
            assert back.status_code == 200, back.text
            assert _complete(client).headers["x-model-id"] == "support-triage@v1"
    finally:
        proc.terminate()
        assert proc.wait(60) == 0 or proc.returncode in (0, -15)

    # SIGTERM drained the writer: every request is a row, with the adapter that served it
    db = sqlite3.connect(copy_home.log_dir / "inference.db")
    rows = dict(db.execute("SELECT request_id, model_id FROM inference_log").fetchall())
    assert rows[rid] == "support-triage@v1"
    assert rows[second.headers["x-request-id"]] == "support-triage@v2"
    assert len(rows) == 3
    was_correct, cluster = db.execute(
        "SELECT was_correct, failure_cluster FROM inference_log WHERE request_id = ?", (rid,)
    ).fetchone()
    assert (was_correct, cluster) == (0, "double-charge")
