"""The admin HTTP API over both stores (real router, real error handlers, ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.store import RouteStore
from tests.flags.apps import admin_app
from tests.flags.conftest import make_state
from tests.flags.test_route_service import make_home


@pytest.fixture
async def http(store: RouteStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await store.seed({"support": make_state(rollback_target="support@v0")})
    service = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)))
    transport = httpx.ASGITransport(app=admin_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def test_list_and_show_routes(http: httpx.AsyncClient) -> None:
    listing = (await http.get("/admin/routes")).json()
    assert [r["route"] for r in listing["routes"]] == ["support"]
    assert listing["store"]["connected"] is True
    shown = await http.get("/admin/routes/support")
    assert shown.status_code == 200
    assert (shown.json()["live"], shown.json()["version"]) == ("support@v1", 1)
    missing = await http.get("/admin/routes/billing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "route_not_found"


async def test_canary_promote_rollback_and_audit(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/admin/routes/support/canary",
        json={"adapter": "support@v2", "percent": 20, "reason": "try v2"},
        headers={"x-lora-router-actor": "ann"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"]["canary"] == {"adapter": "support@v2", "percent": 20.0}
    assert body["state"]["updated_by"] == "loopback (claimed: ann)" and body["commit_ms"] > 0
    r = await http.post("/admin/routes/support/promote", json={"reason": "good", "actor": "bob"})
    assert (r.json()["state"]["live"], r.json()["state"]["rollback_target"]) == (
        "support@v2", "support@v1",
    )
    r = await http.post("/admin/routes/support/rollback", json={"reason": "errors"})
    assert r.status_code == 200
    assert (r.json()["state"]["live"], r.json()["state"]["version"]) == ("support@v1", 4)
    audit = (await http.get("/admin/routes/support/audit")).json()["entries"]
    assert [(e["version"], e["action"], e["by"]) for e in audit] == [
        (1, "seed", "config"), (2, "canary", "loopback (claimed: ann)"),
        (3, "promote", "loopback (claimed: bob)"), (4, "rollback", "loopback"),
    ]
    assert audit[3]["before"]["live"] == "support@v2"
    tail = (await http.get("/admin/routes/support/audit", params={"limit": 1})).json()
    assert [e["version"] for e in tail["entries"]] == [4]


async def test_shadow_and_set_live(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/admin/routes/support/shadow",
        json={"adapter": "support@v3", "percent": 100, "reason": "compare"},
    )
    assert r.json()["state"]["shadow"]["adapter"] == "support@v3"
    r = await http.post(
        "/admin/routes/support/set-live", json={"adapter": "support@v3", "reason": "hotfix"}
    )
    state = r.json()["state"]
    assert (state["live"], state["rollback_target"], state["shadow"]) == (
        "support@v3", "support@v1", None,
    )


async def test_errors_map_to_status_codes(http: httpx.AsyncClient) -> None:
    no_reason = await http.post("/admin/routes/support/rollback", json={})
    assert no_reason.status_code == 422
    assert no_reason.json()["error"]["param"] == "reason"
    bad_percent = await http.post(
        "/admin/routes/support/canary",
        json={"adapter": "support@v2", "percent": 150, "reason": "r"},
    )
    assert bad_percent.status_code == 422
    unknown = await http.post(
        "/admin/routes/support/canary",
        json={"adapter": "support@v9", "percent": 5, "reason": "r"},
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "adapter_not_found")
    stale = await http.post(
        "/admin/routes/support/rollback", json={"reason": "r", "expected_version": 7}
    )
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "version_conflict")
    await http.post("/admin/routes/support/rollback", json={"reason": "to v0"})
    refused = await http.post("/admin/routes/support/rollback", json={"reason": "again"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "route_change_refused")
    gone = await http.post("/admin/routes/billing/promote", json={"reason": "r"})
    assert gone.status_code == 404
