"""``GET /admin/dashboard/state`` and ``GET /dashboard`` over real HTTP: who may read them
(the admin API's rule), the Host check, and what the state holds (routes and their audit,
traffic per adapter and language from the real inference log, drift alerts and incidents)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from lora_router.ground.home import Home
from lora_router.router.drift.events import AlertIn
from lora_router.router.drift.sqlite_store import SqliteDriftStore
from lora_router.router.log.factory import sqlite_path
from tests.dashboard.conftest import (
    ROUTE,
    V1,
    V2,
    Gateway,
    new_key,
    private_home,
    serve_tickets,
    start_gateway,
    tickets,
    wait_for,
)

STATE = "/admin/dashboard/state"


@pytest.fixture(scope="module")
def keyless(module_home: Home) -> Iterator[Gateway]:
    """No key exists: the admin API (and the state) answers loopback clients only."""
    gw = start_gateway(module_home, drift_enabled=False)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keyed(demo_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Gateway, dict[str, str]]]:
    home = private_home(demo_home, tmp_path_factory.mktemp("keyed") / "home")
    keys = {name: new_key(home, role, name) for name, role in
            (("app-frontend", "app"), ("alice", "oncall"), ("bob", "oncall"), ("root", "admin"))}
    gw = start_gateway(home)
    yield gw, keys
    gw.stop()


def state(gw: Gateway, key: str | None = None, **params: str) -> dict[str, Any]:
    with gw.client(key) as c:
        r = c.get(STATE, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- access -------------------------------------------------------------------------------
def test_loopback_reads_the_state_without_a_key_while_none_exists(keyless: Gateway) -> None:
    s = state(keyless)
    assert s["viewer"] == {"principal": "loopback", "role": "admin"}
    (route,) = s["routes"]
    assert (route["route"], route["live"], route["canary"], route["version"]) == (
        ROUTE, V1, None, 1)
    assert route["audit"][0]["action"] == "seed"
    assert s["drift"]["monitor"] == "off" and s["drift"]["alerts"] == []
    assert s["store"]["backend"] == "sqlite" and s["refresh_s"] > 0


def test_a_proxied_request_is_refused_while_no_key_exists(keyless: Gateway) -> None:
    with keyless.client(**{"x-forwarded-for": "203.0.113.9"}) as c:
        r = c.get(STATE)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("path", [STATE, "/dashboard", "/dashboard/dashboard.js",
                                  "/dashboard/dashboard.css"])
def test_another_host_name_is_refused(keyless: Gateway, path: str) -> None:
    with keyless.client(Host="attacker.example:8000") as c:  # DNS rebinding
        r = c.get(path)
    assert r.status_code == 403
    assert "attacker.example" in r.json()["error"]["message"]


def test_the_state_needs_an_oncall_key_once_keys_exist(
        keyed: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = keyed
    with gw.client() as c:
        assert c.get(STATE).status_code == 401
    with gw.client(keys["app-frontend"]) as c:
        r = c.get(STATE)
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    with gw.client("lr_oncall_000000000000_" + "0" * 48) as c:
        assert c.get(STATE).status_code == 401
    assert state(gw, keys["alice"])["viewer"] == {"principal": "key:alice", "role": "oncall"}
    assert state(gw, keys["root"])["viewer"] == {"principal": "key:root", "role": "admin"}
    with gw.client() as c:  # the page itself is static: no key, only the Host check
        assert c.get("/dashboard").status_code == 200


# --- the page -----------------------------------------------------------------------------
def test_the_page_and_its_assets_come_from_the_gateway_alone(keyless: Gateway) -> None:
    with keyless.client() as c:
        page = c.get("/dashboard")
        js = c.get("/dashboard/dashboard.js")
        css = c.get("/dashboard/dashboard.css")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert 'src="/dashboard/dashboard.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "/admin/dashboard/state" in js.text and "sessionStorage" in js.text
    assert "innerHTML" not in js.text  # server values go in as text only
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_the_window_is_15_minutes_or_an_hour(keyless: Gateway) -> None:
    hour = state(keyless, window="1h")["traffic"]
    assert (hour["window"], hour["bucket_s"]) == ("1h", 120)
    with keyless.client() as c:
        assert c.get(STATE, params={"window": "7d"}).status_code == 422


# --- what it shows ------------------------------------------------------------------------
def test_a_change_through_the_admin_api_shows_with_who_and_why(
        keyed: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = keyed
    with gw.client(keys["bob"]) as c:
        r = c.post(f"/admin/routes/{ROUTE}/canary",
                   json={"adapter": V2, "percent": 25, "reason": "canary v2 to a quarter"})
    assert r.status_code == 200, r.text
    route = state(gw, keys["alice"])["routes"][0]  # the audit is cached per route version
    assert (route["version"], route["canary"]) == (2, {"adapter": V2, "percent": 25.0})
    newest = route["audit"][0]
    assert (newest["version"], newest["by"], newest["action"], newest["reason"]) == (
        2, "key:bob", "canary", "canary v2 to a quarter")
    assert newest["changes"] == [f"canary: none -> {V2} 25%"]


def test_traffic_per_adapter_and_language_from_the_inference_log(keyless: Gateway) -> None:
    batch = tickets(keyless.home, per_language=6)
    with keyless.client() as c:
        serve_tickets(c, batch)

    def figures() -> dict[str, Any] | None:
        traffic = state(keyless)["traffic"]
        models = {m["model_id"]: m for m in traffic["models"]}
        v1 = models.get(V1)
        return v1 if v1 is not None and v1["overall"]["labelled"] >= len(batch) else None

    v1 = wait_for(figures, "the served tickets and their labels in the dashboard's figures")
    assert v1["overall"]["requests"] >= len(batch) and v1["arms"] == ["live"]
    slices = {s["slice"]: s for s in v1["slices"]}
    assert slices["language=en"]["requests"] >= 6 and slices["language=es"]["requests"] >= 6
    assert v1["overall"]["accuracy"] is not None and v1["overall"]["latency_p95_ms"] > 0
    assert len(v1["overall"]["series"]) == 30
    assert sum(p["requests"] for p in v1["overall"]["series"]) == v1["overall"]["requests"]
    assert v1["overall"]["drift"]["status"] == "off"  # no monitor, no alert


def test_open_alerts_and_incidents_of_the_drift_store(keyless: Gateway) -> None:
    with keyless.client() as c:  # the log must exist before the drift tables can
        serve_tickets(c, tickets(keyless.home, per_language=1))
    wait_for(lambda: sqlite_path(keyless.home).is_file(), "the inference log file")
    alert_id, incident_id = asyncio.run(_raise_alert(keyless.home))

    def shown() -> dict[str, Any] | None:
        s = state(keyless)
        return s if s["drift"]["alerts"] and s["traffic"]["models"] else None

    s = wait_for(shown, "the alert in the dashboard's state")
    (alert,) = s["drift"]["alerts"]
    assert (alert["id"], alert["model_id"], alert["detector"], alert["incident_id"]) == (
        alert_id, V1, "language=es", incident_id)
    (incident,) = s["drift"]["incidents"]
    assert (incident["id"], incident["status"]) == (incident_id, "contained")
    v1 = next(m for m in s["traffic"]["models"] if m["model_id"] == V1)
    badges = {x["slice"]: x["drift"]["status"] for x in [v1["overall"], *v1["slices"]]}
    assert badges == {"all": "critical", "language=en": "ok", "language=es": "critical"}


async def _raise_alert(home: Home) -> tuple[int, int]:
    store = SqliteDriftStore(sqlite_path(home))
    await store.open()
    try:
        cp = await store.load_checkpoint()
        (alert,) = await store.commit_tick(cp, cp.version, [AlertIn(
            created_at=datetime.now(UTC), route=ROUTE, model_id=V1, arm="live",
            signal="slice_quality", detector="language=es", method="bernoulli-cusum",
            severity="critical", window_start=None, window_end=None, n=30, estimate=0.2,
            bound=0.35, statistic=5.1, threshold=4.2, baseline=0.96, guard_status="off",
        )], holder="test", outbox=False)
        incident = await store.record_incident(
            route=ROUTE, model_id=V1, arm="live", alert_ids=[alert.id],
            action={"action": "page", "detail": "on-call paged"}, status="contained",
            guard_status="off", summary="Spanish accuracy below the gate", outbox=False)
        return alert.id, incident.id
    finally:
        await store.close()

