"""The policy text as a route action, on every store: versions, sha256, clear, refusals, the
size limit and compare-and-set, through the service and the admin HTTP API (real router,
real error handlers, the gateway's typed dependencies overridden as a partial app does)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from lora_router.ground.errors import (
    AdapterNotFound,
    InvalidRequest,
    LimitExceeded,
    RouteChangeRefused,
    VersionConflict,
)
from lora_router.ground.home import Home
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.store import RouteStore
from tests.flags.admin_app import admin_app
from tests.flags.conftest import make_state
from tests.flags.test_route_service import make_home, retire

POLICY = "Refunds only within 30 days of delivery.\n"


@pytest.fixture
async def service(store: RouteStore, tmp_path: Path) -> RouteService:
    await store.seed({"support": make_state(rollback_target="support@v0")})
    home = make_home(tmp_path)
    return RouteService(store, known_adapters=home_known_adapters(home), max_policy_chars=200)


@pytest.fixture
async def http(service: RouteService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=admin_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def test_each_set_is_the_next_version_and_a_clear_never_frees_a_number(
    service: RouteService,
) -> None:
    first = await service.set_policy("support", POLICY, actor="ann", reason="refund rule")
    assert first.action == "set-policy" and first.state.version == 2
    assert first.state.policy is not None
    assert first.state.policy.sha256 == hashlib.sha256(POLICY.encode()).hexdigest()
    assert first.state.policy_version == "support/policy@1"
    assert first.state.live == "support@v1"  # the adapters are left as they were
    second = await service.set_policy("support", "Refunds within 14 days.", actor="ann",
                                      reason="tighter")
    assert second.state.policy_version == "support/policy@2"
    cleared = await service.clear_policy("support", actor="bob", reason="legal review")
    assert cleared.state.policy is None and cleared.state.policy_version is None
    again = await service.set_policy("support", POLICY, actor="ann", reason="back")
    assert again.state.policy_version == "support/policy@3"
    audit = await service.audit("support")
    assert [e.action for e in audit] == ["seed", "set-policy", "set-policy", "clear-policy",
                                         "set-policy"]
    assert audit[3].before is not None and audit[3].before.policy_version == "support/policy@2"


async def test_refusals_size_limit_and_compare_and_set(service: RouteService) -> None:
    with pytest.raises(RouteChangeRefused):
        await service.clear_policy("support", actor="a", reason="nothing to clear")
    await service.set_policy("support", POLICY, actor="a", reason="r")
    with pytest.raises(RouteChangeRefused, match="already in force as support/policy@1"):
        await service.set_policy("support", POLICY, actor="a", reason="same again")
    with pytest.raises(LimitExceeded, match="201 characters, over the limit of 200"):
        await service.set_policy("support", "x" * 201, actor="a", reason="too long")
    with pytest.raises(InvalidRequest, match="empty"):
        await service.set_policy("support", " \n", actor="a", reason="blank")
    with pytest.raises(VersionConflict):
        await service.set_policy("support", "new", actor="a", reason="r", expected_version=1)
    assert service.show("support").policy_version == "support/policy@1"


async def test_a_policy_change_is_not_blocked_by_a_retired_live_adapter(
    service: RouteService, tmp_path: Path
) -> None:
    retire(Home.at(tmp_path), "support@v1")  # retired meanwhile, by hand
    with pytest.raises(AdapterNotFound, match="support@v1"):  # a checked action is refused
        await service.canary("support", "support@v2", 5, actor="a", reason="checked")
    done = await service.set_policy("support", POLICY, actor="a", reason="incident fix")
    assert done.state.policy_version == "support/policy@1"


async def test_set_and_clear_policy_over_http(http: httpx.AsyncClient) -> None:
    r = await http.post("/admin/routes/support/set-policy",
                        json={"text": POLICY, "reason": "refund rule"},
                        headers={"x-lora-router-actor": "ann"})
    assert r.status_code == 200, r.text
    state = r.json()["state"]
    assert (r.json()["action"], state["version"]) == ("set-policy", 2)
    assert state["policy"] == {"version": 1, "text": POLICY,
                               "sha256": hashlib.sha256(POLICY.encode()).hexdigest()}
    shown = (await http.get("/admin/routes/support")).json()
    assert shown["policy"]["version"] == 1 and shown["last_policy_version"] == 1
    r = await http.post("/admin/routes/support/clear-policy", json={"reason": "review"})
    assert r.status_code == 200, r.text
    assert r.json()["state"]["policy"] is None
    audit = (await http.get("/admin/routes/support/audit")).json()["entries"]
    assert [(e["action"], e["by"]) for e in audit] == [
        ("seed", "config"), ("set-policy", "loopback (claimed: ann)"),
        ("clear-policy", "loopback")]


async def test_policy_errors_over_http(http: httpx.AsyncClient) -> None:
    big = await http.post("/admin/routes/support/set-policy",
                          json={"text": "x" * 201, "reason": "r"})
    assert big.status_code == 413
    error = big.json()["error"]
    assert (error["code"], error["param"]) == ("limit_exceeded", "text")
    assert "over the limit of 200 characters" in error["message"]
    stale = await http.post("/admin/routes/support/set-policy",
                            json={"text": POLICY, "reason": "r", "expected_version": 5})
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "version_conflict")
    missing = await http.post("/admin/routes/support/set-policy", json={"reason": "r"})
    assert (missing.status_code, missing.json()["error"]["param"]) == (422, "text")
    extra = await http.post("/admin/routes/support/clear-policy",
                            json={"reason": "r", "text": "x"})
    assert extra.status_code == 422
    unknown = await http.post("/admin/routes/billing/set-policy",
                              json={"text": POLICY, "reason": "r"})
    assert unknown.status_code == 404


async def test_the_max_policy_chars_setting_bounds_the_gateways_route_service(
    store: RouteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LORA_ROUTER_MAX_POLICY_CHARS`` reaches the service that the gateway and the CLI's
    direct mode build (``runtime.build_route_service``)."""
    from lora_router.ground.errors import LimitExceeded
    from lora_router.router.flags.runtime import build_route_service
    from lora_router.router.settings import Settings

    await store.seed({"support": make_state(rollback_target="support@v0")})
    home = make_home(tmp_path)
    monkeypatch.setenv("LORA_ROUTER_MAX_POLICY_CHARS", "50")
    settings = Settings(home=home.root)
    svc = build_route_service(settings, home, store, registry=None, with_registry=False)
    with pytest.raises(LimitExceeded, match="max_policy_chars"):
        await svc.set_policy("support", "x" * 51, actor="t", reason="too long")
    done = await svc.set_policy("support", "x" * 50, actor="t", reason="fits")
    assert done.state.policy is not None and done.state.policy.text == "x" * 50
