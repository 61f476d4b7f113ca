"""``lora-router guard set|show|clear``: a route's drift guard policy from the command line,
directly in the real Redis and through a real gateway (``--url``, ``POST
/admin/routes/{route}/guard``); a change is versioned and audited like any route change, and
``/readyz`` shows the drift monitor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner, Result

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.cli.main import app
from lora_router.router.flags import keys
from lora_router.router.flags.state import RouteState
from lora_router.router.settings import Settings
from tests.api.conftest import serve_app
from tests.conftest import free_port
from tests.flags.test_route_service import make_home

ROUTES_YAML = "routes:\n  support:\n    live: support@v1\n    rollback_target: support@v0\n"
DEMO_ROUTE = "support-triage"


@pytest.fixture
def cli(tmp_path: Path, redis_url: str) -> Any:
    home = make_home(tmp_path / "home", ["support@v0", "support@v1", "support@v2"])
    (home.root / "routes.yaml").write_text(ROUTES_YAML)
    env = {"REDIS_URL": redis_url, "LORA_ROUTER_HOME": str(home.root), "COLUMNS": "200",
           "DATABASE_URL": ""}

    def invoke(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    return invoke


def stored(redis_url: str, route: str = "support") -> RouteState:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hget(keys.ROUTES, route)
    finally:
        client.close()
    assert raw is not None
    return RouteState.model_validate_json(raw)


def test_set_changes_only_what_it_names_and_every_change_is_audited(
        cli: Any, redis_url: str) -> None:
    cli("guard", "set", "--allow-no-replicas", "support", "--auto-rollback",
        "--protect", "language=es",
        "--protect", "tier=gold", "--min-labels", "20", "--reason", "guard es", "--actor", "ann")
    first = stored(redis_url)
    assert first.guard is not None and first.version == 2  # created from routes.yaml, then set
    assert first.guard.auto_rollback and first.guard.protect == ("language=es", "tier=gold")
    assert first.guard.min_labels == 20 and first.live == "support@v1"

    cli("guard", "set", "--allow-no-replicas", "support", "--no-auto-rollback",
        "--reason", "alerts only for now")
    second = stored(redis_url).guard
    assert second is not None and not second.auto_rollback
    assert second.protect == ("language=es", "tier=gold") and second.min_labels == 20

    shown = json.loads(cli("guard", "show", "support", "--json").stdout)
    assert shown["version"] == 3 and shown["guard"]["protect"] == ["language=es", "tier=gold"]
    assert shown["effective"]["auto_rollback"] is False

    cli("guard", "clear", "--allow-no-replicas", "support", "--reason", "migration")
    assert stored(redis_url).guard is None
    assert json.loads(cli("guard", "show", "support", "--json").stdout)["guard"] is None
    audit = json.loads(cli("audit", "support", "--json").stdout)["entries"]
    assert [e["action"] for e in audit] == ["seed", "set-guard", "set-guard", "set-guard"]
    assert [e["reason"] for e in audit[1:]] == ["guard es", "alerts only for now", "migration"]
    assert audit[1]["by"] == "ann" and audit[1]["after"]["guard"]["min_labels"] == 20


def test_bad_input_is_one_line_and_changes_nothing(cli: Any, redis_url: str) -> None:
    cli("guard", "set", "--allow-no-replicas", "support", "--protect", "language=es",
        "--reason", "x")
    before = stored(redis_url)
    for args, words in [
        (["--protect", "spanish"], "feature=value"),
        (["--protect", "language=es", "--clear-protect"], "exclude each other"),
        (["--false-alarms-per-10k", "0"], "false_alarms_per_10k"),
        (["--min-drop", "1"], "min_drop"),
    ]:
        r = cli("guard", "set", "support", *args, "--reason", "x", code=2)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert stored(redis_url) == before
    r = cli("guard", "set", "nope", "--auto-rollback", "--reason", "x", code=2)
    assert "no route 'nope'" in r.stderr
    cli("guard", "show", "nope", code=2)
    cli("guard", "set", "support", "--reason", "x", "--min-labels", "0", code=2)


@pytest.fixture
def gateway(copy_home: Home) -> Iterator[str]:
    """The real gateway on a copy of the demo home (embedded route store, SQLite log)."""
    settings = Settings(home=copy_home.root, port=free_port(), redis_url=None,
                        database_url=None, drift_interval_s=0.2)
    served = serve_app(create_app(settings), settings.host, settings.port)
    yield served.url
    served.stop()


def test_through_the_gateway_with_a_stale_version_refused(
        gateway: str, tmp_path: Path) -> None:
    env = {"LORA_ROUTER_HOME": str(tmp_path), "REDIS_URL": "", "COLUMNS": "200",
           "LORA_ROUTER_ADMIN_TOKEN": "", "LORA_ROUTER_API_KEY": ""}
    r = CliRunner().invoke(app, ["guard", "set", DEMO_ROUTE, "--auto-rollback", "--protect",
                                 "language=es", "--reason", "guard the es slice", "--url",
                                 gateway, "--actor", "bob"], env=env)
    assert r.exit_code == 0, r.output
    assert "auto-rollback on" in r.stdout and "language=es" in r.stdout
    with httpx.Client(base_url=gateway, timeout=30) as http:
        state = http.get(f"/admin/routes/{DEMO_ROUTE}").json()
        assert state["guard"]["auto_rollback"] is True
        assert state["guard"]["protect"] == ["language=es"]
        audit = http.get(f"/admin/routes/{DEMO_ROUTE}/audit").json()["entries"]
        assert audit[-1]["action"] == "set-guard" and "bob" in audit[-1]["by"]
        stale = http.post(f"/admin/routes/{DEMO_ROUTE}/guard", json={
            "reason": "late", "guard": None, "expected_version": state["version"] - 1})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
        bad = http.post(f"/admin/routes/{DEMO_ROUTE}/guard", json={
            "reason": "x", "guard": {"protect": ["es"]}})
        assert bad.status_code == 422
        assert http.get(f"/admin/routes/{DEMO_ROUTE}").json()["version"] == state["version"]
        ready = http.get("/readyz").json()
        assert ready["drift"]["holder"] and ready["drift"]["loop"]["alive"] is True
    shown = CliRunner().invoke(app, ["guard", "show", DEMO_ROUTE, "--url", gateway], env=env)
    assert shown.exit_code == 0 and "language=es" in shown.stdout


def test_a_direct_change_no_gateway_serves_exits_3(cli: Any) -> None:
    """Like every route change made directly in Redis: stored, but said plainly that no
    gateway serves it, and exit 3 (the on-call must not believe the guard is on)."""
    r = cli("guard", "set", "support", "--auto-rollback", "--reason", "guard", code=3)
    assert "NOTHING SERVES IT YET" in r.output
    shown = cli("guard", "show", "support", "--json")
    assert '"auto_rollback": true' in shown.stdout
