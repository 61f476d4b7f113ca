"""A policy text set with the CLI reaches every replica like a flip: two ``lora-router serve``
processes on a throwaway Redis, ``lora-router policy set`` (direct to Redis, as on-call would
run it), then each gateway serves the route with the policy in front of the prompt (its
answer and token count equal those of the pinned adapter asked the prefixed prompt) and its
own inference log (SQLite, in its home) names the policy version on those rows."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lora_router.ground.home import Home
from tests.conftest import require
from tests.harness.cluster import ROOT, Cluster, Gateway

ROUTE = "support-triage"
V1 = "support-triage@v1"
POLICY = "Policy R-12: a double charge is billing, even when shipping is mentioned.\n"
PROMPT = "Ticket: my parcel was late and I was charged twice\nCategory:"


@pytest.fixture(scope="module")
def cluster(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        require("redis-server is not installed (the cluster starts its own)")
    work = tmp_path_factory.mktemp("policy-cluster")
    with Cluster.start(demo_home.root, work, replicas=2, torch_threads=1) as c:
        yield c


def _cli(cluster: Cluster, *args: str) -> str:
    env = {**os.environ, "REDIS_URL": cluster.redis_url, "COLUMNS": "200",
           "LORA_ROUTER_HOME": str(cluster.writer_home)}
    out = subprocess.run(
        [sys.executable, "-m", "lora_router.router.cli.main", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _complete(gw: Gateway, model: str, prompt: str) -> dict[str, Any]:
    r = httpx.post(f"{gw.url}/v1/completions", timeout=60, json={
        "model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _logged_policy(gw: Gateway, request_id: str, timeout_s: float = 30) -> str | None:
    """``policy_version`` of the row ``request_id`` in the gateway's own log, once written."""
    db = gw.home / "log" / "inference.db"
    deadline = time.monotonic() + timeout_s
    while True:
        if db.is_file():
            with sqlite3.connect(db, timeout=5) as conn:
                row = conn.execute("SELECT policy_version FROM inference_log WHERE "
                                   "request_id = ?", (request_id,)).fetchone()
            if row is not None:
                return None if row[0] is None else str(row[0])
        assert time.monotonic() < deadline, f"{request_id} never reached {gw.replica_id}'s log"
        time.sleep(0.1)


def test_policy_set_with_the_cli_is_applied_by_every_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = {gw.index: _complete(gw, ROUTE, PROMPT) for gw in cluster.gateways}
    policy = tmp_path / "policy.txt"
    policy.write_text(POLICY)

    out = _cli(cluster, "policy", "set", ROUTE, "--file", str(policy), "--reason", "R-12")
    assert f"policy: {ROUTE}/policy@1" in out, out
    assert re.search(r"applied by all 2 replicas [\d.]+ ms after commit", out), out

    for gw in cluster.gateways:  # applied before the CLI returned: no waiting here
        served = _complete(gw, ROUTE, PROMPT)
        pinned = _complete(gw, V1, f"{POLICY.rstrip()}\n\n{PROMPT}")
        assert served["choices"][0]["text"] == pinned["choices"][0]["text"], gw.replica_id
        assert served["usage"]["prompt_tokens"] == pinned["usage"]["prompt_tokens"]
        assert served["usage"]["prompt_tokens"] > before[gw.index]["usage"]["prompt_tokens"]
        assert _logged_policy(gw, served["id"]) == f"{ROUTE}/policy@1", gw.replica_id
        assert _logged_policy(gw, before[gw.index]["id"]) is None

    out = _cli(cluster, "policy", "clear", ROUTE, "--reason", "legal review")
    assert "applied by all 2 replicas" in out, out
    for gw in cluster.gateways:
        after = _complete(gw, ROUTE, PROMPT)
        assert after["usage"]["prompt_tokens"] == before[gw.index]["usage"]["prompt_tokens"]
        assert _logged_policy(gw, after["id"]) is None
