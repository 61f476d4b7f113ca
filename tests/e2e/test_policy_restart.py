"""A policy text on the embedded default survives a restart: ``lora-router serve`` (no Redis)
keeps it with the route's state in ``<home>/flags/routes.db``; after a routine restart the
route still serves under it, and the log rows name it, over real HTTP and real processes."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx

from lora_router.ground.home import Home
from tests.e2e.test_durable_routes import serving

ROUTE, V1 = "support-triage", "support-triage@v1"
POLICY = "Policy R-12: a double charge is billing, even when shipping is mentioned.\n"
PROMPT = "Ticket: my parcel was late and I was charged twice\nCategory:"


def _complete(gw: httpx.Client, model: str, prompt: str) -> dict[str, Any]:
    r = gw.post("/v1/completions",
                json={"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _logged_policy(home: Home, request_id: str) -> str | None:
    """The row's ``policy_version`` (the gateway drained its log when it stopped)."""
    with sqlite3.connect(home.root / "log" / "inference.db") as conn:
        row = conn.execute("SELECT policy_version FROM inference_log WHERE request_id = ?",
                           (request_id,)).fetchone()
    assert row is not None, f"{request_id} is not in the log"
    return None if row[0] is None else str(row[0])


def test_a_policy_survives_a_restart_of_the_embedded_gateway(copy_home: Home) -> None:
    with serving(copy_home) as gw:
        r = gw.post(f"/admin/routes/{ROUTE}/set-policy",
                    json={"text": POLICY, "reason": "refund rule R-12"})
        assert r.status_code == 200, r.text
        first = _complete(gw, ROUTE, PROMPT)

    with serving(copy_home) as gw:  # a routine restart: the policy is still in force
        state = gw.get(f"/admin/routes/{ROUTE}").json()
        assert state["policy"]["text"] == POLICY and state["policy"]["version"] == 1
        served = _complete(gw, ROUTE, PROMPT)
        pinned = _complete(gw, V1, f"{POLICY.rstrip()}\n\n{PROMPT}")
        assert served["choices"][0]["text"] == pinned["choices"][0]["text"]
        assert served["usage"]["prompt_tokens"] == pinned["usage"]["prompt_tokens"]
        assert served["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]
        audit = gw.get(f"/admin/routes/{ROUTE}/audit").json()["entries"]
        assert [e["action"] for e in audit] == ["seed", "set-policy"]
    assert _logged_policy(copy_home, first["id"]) == f"{ROUTE}/policy@1"
    assert _logged_policy(copy_home, served["id"]) == f"{ROUTE}/policy@1"
    assert _logged_policy(copy_home, pinned["id"]) is None
