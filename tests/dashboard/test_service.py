"""The dashboard's state when a part cannot be read: the routes are still served, and the
part says why."""

from __future__ import annotations

from pathlib import Path

from lora_router.router.dashboard.reader import SqliteReader
from lora_router.router.dashboard.state import DashboardService
from lora_router.router.dashboard.views import Viewer
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState

V1, V2 = "support-triage@v1", "support-triage@v2"


async def test_an_unreadable_log_leaves_the_routes_and_says_why(tmp_path: Path) -> None:
    garbage = tmp_path / "inference.db"
    garbage.write_bytes(b"this is not a database" * 200)
    store = MemoryRouteStore()
    await store.start()
    routes = RouteService(store)
    await routes.seed({"support-triage": RouteState(route="support-triage", live=V1)})
    await routes.canary("support-triage", V2, 10, actor="key:bob", reason="try v2")
    dashboard = DashboardService(routes, SqliteReader(garbage), drift_monitor=True)
    try:
        s = await dashboard.state(Viewer(principal="key:alice", role="oncall"), "15m")
    finally:
        await dashboard.close()
        await store.close()
    (route,) = s.routes
    assert (route.version, route.canary and route.canary.adapter) == (2, V2)
    assert (route.audit[0].version, route.audit[0].by) == (2, "key:bob")  # newest first
    assert not s.traffic.available and "not a database" in (s.traffic.note or "")
    assert not s.drift.available and s.drift.alerts == []
    assert s.viewer.principal == "key:alice"
