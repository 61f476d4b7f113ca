"""The route CLI against the real Redis: directly (REDIS_URL) and through a gateway (--url)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis
from typer.testing import CliRunner

from router.cli.main import app
from router.flags import keys
from router.flags.factory import home_known_adapters
from router.flags.member import ReplicaMember
from router.flags.redis_store import RedisRouteStore
from router.flags.replicas import ReplicaInfo
from router.flags.service import RouteService
from router.flags.state import RouteState
from tests.flags.apps import serve_in_thread
from tests.flags.test_route_service import make_home

T = TypeVar("T")
ROUTES_YAML = """\
routes:
  support:
    live: support@v1
    rollback_target: support@v0
  billing:
    live: billing@v1
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    make_home(tmp_path / "home", ["support@v0", "support@v1", "support@v2", "billing@v1"])
    (tmp_path / "home" / "routes.yaml").write_text(ROUTES_YAML)
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path, redis_url: str) -> Any:
    runner = CliRunner()
    env = {"REDIS_URL": redis_url, "LORA_ROUTER_HOME": str(home), "COLUMNS": "250"}

    def invoke(*args: str, **extra_env: str | None) -> Any:
        return runner.invoke(app, list(args), env={**env, **extra_env})

    return invoke


def stored(redis_url: str, route: str) -> RouteState:
    client = redis.Redis.from_url(redis_url)
    raw = client.hget(keys.ROUTES, route)
    client.close()
    assert raw is not None
    return RouteState.model_validate_json(raw)  # type: ignore[arg-type]


class BackgroundLoop:
    """An event loop in a thread, hosting stand-in replicas while the CLI runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def two_replicas(redis_url: str, cli: Any) -> Iterator[None]:
    assert cli("routes").exit_code == 0  # seed, so replicas start with the routes
    bg = BackgroundLoop()
    client = aredis.Redis.from_url(redis_url, socket_timeout=2)
    parts: list[tuple[RedisRouteStore, ReplicaMember]] = []

    async def up(rid: str) -> None:
        store = RedisRouteStore(redis_url, replica_id=rid)
        await store.start()
        member = ReplicaMember(client, ReplicaInfo(id=rid), ttl_s=5, interval_s=0.5)
        await member.start()
        parts.append((store, member))

    async def down() -> None:
        for store, member in parts:
            await member.stop()
            await store.close()
        await client.aclose()

    for i in range(2):
        bg.run(up(f"gw-{i}"))
    yield
    bg.run(down())
    bg.close()


def test_routes_seeds_from_the_home_and_lists_them(cli: Any, redis_url: str) -> None:
    result = cli("routes")
    assert result.exit_code == 0, result.output
    assert "support" in result.stdout and "billing@v1" in result.stdout
    assert "store: redis (connected" in result.stdout
    assert stored(redis_url, "support").version == 1


def test_canary_promote_and_audit(cli: Any, redis_url: str) -> None:
    r = cli("canary", "support", "support@v2", "--percent", "20", "--reason", "try v2",
            "--actor", "ann")
    assert r.exit_code == 0, r.output
    assert "version 2" in r.stdout and "canary=support@v2 20%" in r.stdout
    assert stored(redis_url, "support").canary is not None
    r = cli("promote", "support", "--reason", "v2 is good")
    assert r.exit_code == 0, r.output
    state = stored(redis_url, "support")
    assert (state.live, state.rollback_target, state.version) == ("support@v2", "support@v1", 3)
    shown = cli("route", "show", "support")
    assert shown.exit_code == 0 and "support@v2" in shown.stdout
    audit = cli("audit", "support")
    assert audit.exit_code == 0
    assert "try v2" in audit.stdout and "v2 is good" in audit.stdout and "ann" in audit.stdout


def test_rollback_prints_version_and_replica_propagation(
    cli: Any, redis_url: str, two_replicas: None
) -> None:
    r = cli("rollback", "support", "--reason", "v1 regressed")
    assert r.exit_code == 0, r.output
    assert "rollback support: version 2" in r.stdout
    assert "live=support@v0" in r.stdout
    assert "applied by all 2 replicas" in r.stdout
    assert stored(redis_url, "support").live == "support@v0"


def test_errors_are_one_line_without_traceback(cli: Any) -> None:
    r = cli("rollback", "nope", "--reason", "x")
    assert r.exit_code == 2
    assert "error:" in r.stderr and "no route 'nope'" in r.stderr
    assert "Traceback" not in r.output
    r = cli("canary", "support", "support@v7", "--percent", "5", "--reason", "x")
    assert r.exit_code == 2 and "support@v7" in r.stderr
    r = cli("rollback", "billing", "--reason", "x")
    assert r.exit_code == 2 and "no rollback target" in r.stderr
    r = cli("routes", REDIS_URL=None)
    assert r.exit_code == 2 and "--url" in r.stderr
    r = cli("canary", "support", "support@v2", "--percent", "150", "--reason", "x")
    assert r.exit_code == 2
    r = cli("rollback", "support")
    assert r.exit_code == 2 and "--reason" in r.output


def test_cli_through_a_running_gateway(cli: Any, redis_url: str, home: Path) -> None:
    async def make_service() -> RouteService:
        store = RedisRouteStore(redis_url)
        await store.start()
        await store.put(RouteState(route="support", live="support@v1",
                                   rollback_target="support@v0"), 0)
        return RouteService(store, known_adapters=home_known_adapters(make_home_of(home)))

    with serve_in_thread(make_service) as url:
        r = cli("routes", "--url", url, REDIS_URL=None)
        assert r.exit_code == 0, r.output
        assert "support" in r.stdout and "billing" not in r.stdout
        r = cli("canary", "support", "support@v2", "--percent", "10", "--reason", "via http",
                "--url", url, "--actor", "bob", REDIS_URL=None)
        assert r.exit_code == 0, r.output
        assert "version 2" in r.stdout
        assert stored(redis_url, "support").updated_by == "bob"
        r = cli("set-live", "support", "support@v9", "--reason", "x", "--url", url,
                REDIS_URL=None)
        assert r.exit_code == 2 and "support@v9" in r.stderr
        r = cli("audit", "support", "--url", url, REDIS_URL=None)
        assert r.exit_code == 0 and "via http" in r.stdout
    r = cli("routes", "--url", url, REDIS_URL=None)  # the gateway is gone
    assert r.exit_code == 2 and "cannot reach the gateway" in r.stderr


def make_home_of(path: Path) -> Any:
    from registry.home import Home

    return Home.at(path)
