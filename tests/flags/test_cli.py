"""The route CLI against the real Redis: directly (REDIS_URL) and through a gateway (--url).

Direct changes with no gateway replica registered pass ``--allow-no-replicas`` where the test
is about something else (what such a change says, and its exit status: tests/cli/
test_direct_mode.py).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis
from typer.testing import CliRunner

from lora_router.router.cli.flags import _print_change
from lora_router.router.cli.main import app
from lora_router.router.flags import keys
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.member import ReplicaMember
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState, load_routes_file
from lora_router.router.flags.views import AppliedOut, ChangeOut
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


def seed_all(redis_url: str, home: Path) -> None:
    """Create the home's routes in Redis (what a gateway's start does)."""
    async def main() -> None:
        store = RedisRouteStore(redis_url)
        await store.start()
        try:
            await store.seed(load_routes_file(home / "routes.yaml"))
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def two_replicas(redis_url: str, cli: Any, home: Path) -> Iterator[None]:
    seed_all(redis_url, home)  # so replicas start with the routes
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


def redis_keys(redis_url: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(client.keys("*"))  # type: ignore[arg-type]
    finally:
        client.close()


def test_read_only_commands_never_write_and_a_change_creates_its_route(
    cli: Any, redis_url: str
) -> None:
    result = cli("routes")
    assert result.exit_code == 0, result.output
    assert "store: redis (connected" in result.stdout and "support" not in result.stdout
    r = cli("route", "show", "support")
    assert r.exit_code == 2 and "no route 'support'" in r.stderr
    assert cli("audit", "support").exit_code == 2
    assert redis_keys(redis_url) == []  # nothing seeded, nothing audited
    r = cli("set-live", "support", "support@v2", "--reason", "hotfix", "--allow-no-replicas")
    assert r.exit_code == 0, r.output
    assert stored(redis_url, "support").version == 2  # seeded from routes.yaml, then changed
    result = cli("routes")
    assert "support@v2" in result.stdout and "billing" not in result.stdout


def test_a_bad_routes_file_never_reaches_redis_from_the_cli(
    cli: Any, redis_url: str, home: Path
) -> None:
    (home / "routes.yaml").write_text(ROUTES_YAML + "  r1:\n    live: support@v9\n")
    assert cli("routes").exit_code == 0 and redis_keys(redis_url) == []
    r = cli("canary", "r1", "support@v2", "--percent", "5", "--reason", "x")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "routes.yaml" in r.stderr and "route 'r1'" in r.stderr and "support@v9" in r.stderr
    assert redis_keys(redis_url) == []
    # the bad route does not block a change of another route (a rollback must work)
    r = cli("rollback", "support", "--reason", "v1 regressed", "--allow-no-replicas")
    assert r.exit_code == 0, r.output
    assert stored(redis_url, "support").live == "support@v0"
    assert cli("route", "show", "r1").exit_code == 2


def test_canary_promote_and_audit(cli: Any, redis_url: str) -> None:
    r = cli("canary", "support", "support@v2", "--percent", "20", "--reason", "try v2",
            "--actor", "ann", "--allow-no-replicas")
    assert r.exit_code == 0, r.output
    assert "version 2" in r.stdout and "canary=support@v2 20%" in r.stdout
    assert stored(redis_url, "support").canary is not None
    r = cli("promote", "support", "--reason", "v2 is good", "--allow-no-replicas")
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
        # over HTTP the name is a claim; the audit records who authenticated (loopback)
        assert stored(redis_url, "support").updated_by == "loopback (claimed: bob)"
        r = cli("set-live", "support", "support@v9", "--reason", "x", "--url", url,
                REDIS_URL=None)
        assert r.exit_code == 2 and "support@v9" in r.stderr
        r = cli("audit", "support", "--url", url, REDIS_URL=None)
        assert r.exit_code == 0 and "via http" in r.stdout
    r = cli("routes", "--url", url, REDIS_URL=None)  # the gateway is gone
    assert r.exit_code == 2 and "cannot reach the gateway" in r.stderr


def make_home_of(path: Path) -> Any:
    from lora_router.ground.home import Home

    return Home.at(path)


def test_route_names_that_are_not_names_are_no_route_in_both_modes(
    cli: Any, redis_url: str, home: Path
) -> None:
    seed_all(redis_url, home)

    async def make_service() -> RouteService:
        store = RedisRouteStore(redis_url)
        await store.start()
        return RouteService(store, known_adapters=home_known_adapters(make_home_of(home)))

    with serve_in_thread(make_service) as url:
        for mode in ((), ("--url", url)):
            for name in ("support/audit", "x/../support", "support?x=1", "%73upport"):
                r = cli("route", "show", name, *mode)
                assert r.exit_code == 2, (mode, name, r.output)
                assert f"no route {name!r}" in r.stderr and "Traceback" not in r.output
                r = cli("audit", name, *mode)
                assert r.exit_code == 2 and f"no route {name!r}" in r.stderr, (mode, name)
            r = cli("canary", "x/../support", "support@v2", "--percent", "50", "--reason", "x",
                    *mode)
            assert r.exit_code == 2 and "no route 'x/../support'" in r.stderr, (mode, r.output)
            r = cli("rollback", "support/..", "--reason", "x", *mode)
            assert r.exit_code == 2 and "no route 'support/..'" in r.stderr, (mode, r.output)
    state = stored(redis_url, "support")
    assert (state.version, state.canary, state.live) == (1, None, "support@v1")


def test_a_replica_that_died_is_dropped_and_not_counted_in_the_time(
    cli: Any, redis_url: str, two_replicas: None
) -> None:
    async def ghost() -> None:  # registers once, never applies, expires after its TTL
        client = aredis.Redis.from_url(redis_url)
        await ReplicaMember(client, ReplicaInfo(id="gw-dead"), ttl_s=1.0).beat()
        await client.aclose()

    asyncio.run(ghost())
    r = cli("rollback", "support", "--reason", "v1 regressed")
    assert r.exit_code == 0, r.output
    m = re.search(r"applied by all 2 replicas ([\d.]+) ms after commit", r.stdout)
    assert m is not None, r.stdout
    assert float(m.group(1)) < 700  # the live ones' applies, not the dead one's expiry
    assert "gw-dead stopped heartbeating (dropped)" in r.stdout


def test_one_replica_is_not_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    state = RouteState(route="support", live="support@v1", version=3)
    out = ChangeOut(action="rollback", state=state, prepare_ms=0, commit_ms=0.5,
                    applied=AppliedOut(version=3, elapsed_ms=1.25, replicas=["gw-1"],
                                       pending=[], dropped=["gw-2"]))
    _print_change(out)
    text = capsys.readouterr().out
    assert "applied by the only live replica (gw-1) 1.25 ms after commit" in text
    assert "1 replicas" not in text and "gw-2 stopped heartbeating (dropped)" in text


def test_the_in_process_store_says_the_gateway_applied_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = RouteState(route="support", live="support@v2", version=2)
    out = ChangeOut(action="set-live", state=state, prepare_ms=12.5, commit_ms=0.1, applied=None)
    _print_change(out)
    text = capsys.readouterr().out
    assert "the gateway loaded the new adapters in 12.5 ms" in text
    assert "applied by the gateway at once (in-process route store)" in text
    assert "no gateway replicas registered" not in text
