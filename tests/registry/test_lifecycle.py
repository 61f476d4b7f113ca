"""Lifecycle: status moves with history; retire refused while referenced; retired is final."""

from __future__ import annotations

import asyncio

import pytest

from lora_router.ground.errors import AdapterNotFound, AdapterReferenced, AdapterRetired
from lora_router.ground.home import Home
from lora_router.registry.lifecycle import assert_routable, retire, set_rollback_target, set_status
from lora_router.registry.lineage import validate
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.state import RouteState, Split, load_routes_file
from tests.registry.helpers import cli, set_routes


def test_status_moves_are_recorded_in_history(synth_home: Home) -> None:
    for status in ("shadow", "canary", "live"):
        card = set_status(synth_home, "triage@v2", status, "alice", f"to {status}")
    assert card.status == "live"
    assert [(h.status, h.by) for h in card.history] == [
        ("registered", "registry"), ("shadow", "alice"), ("canary", "alice"), ("live", "alice")]
    assert RegistryStore(synth_home).get_model_card("triage@v2").status == "live"
    # demotion after a rollback is allowed; setting the same status is a no-op
    assert set_status(synth_home, "triage@v2", "canary", "bob", "rolled back").status == "canary"
    assert len(set_status(synth_home, "triage@v2", "canary", "bob", "again").history) == 5


@pytest.mark.parametrize(("routes", "ref"), [
    ("routes:\n  r:\n    live: triage@v2\n", "route r:live"),
    ("routes:\n  r:\n    live: triage@v1\n    canary: {adapter: triage@v2, percent: 5}\n",
     "route r:canary 5%"),
    ("routes:\n  r:\n    live: triage@v1\n    shadow: {adapter: triage@v2, percent: 100}\n",
     "route r:shadow 100%"),
    ("routes:\n  r:\n    live: triage@v1\n    rollback_target: triage@v2\n",
     "route r:rollback_target"),
])
def test_retire_is_refused_while_any_route_arm_references_it(
    synth_home: Home, routes: str, ref: str
) -> None:
    set_routes(synth_home, routes)
    with pytest.raises(AdapterReferenced) as exc:
        retire(synth_home, "triage@v2", "superseded")
    assert exc.value.detail["references"] == [ref]
    assert RegistryStore(synth_home).get_model_card("triage@v2").status == "registered"


def test_retire_succeeds_after_the_route_moves_away_and_is_final(synth_home: Home) -> None:
    result = cli(synth_home, "retire", "triage@v2", "--reason", "superseded")
    assert result.exit_code == 2
    assert "triage:canary 10%" in result.output and "triage-es:live" in result.output
    set_routes(synth_home, "routes:\n  triage:\n    live: triage@v1\n")
    result = cli(synth_home, "retire", "triage@v2", "--reason", "superseded", "--by", "carol")
    assert result.exit_code == 0, result.output
    card = RegistryStore(synth_home).get_model_card("triage@v2")
    assert card.status == "retired"
    assert (card.history[-1].by, card.history[-1].reason) == ("carol", "superseded")
    with pytest.raises(AdapterRetired):
        assert_routable(synth_home, "triage@v2")
    with pytest.raises(AdapterRetired):
        set_status(synth_home, "triage@v2", "live", "dave", "try again")
    assert assert_routable(synth_home, "triage@v1").id == "triage@v1"
    with pytest.raises(AdapterNotFound):
        assert_routable(synth_home, "ghost@v1")
    assert [p for p in validate(synth_home) if p.severity == "error"] == []


def test_a_model_card_rollback_target_also_holds_an_adapter(synth_home: Home) -> None:
    set_routes(synth_home, "routes:\n  triage:\n    live: triage@v2\n")
    with pytest.raises(AdapterReferenced, match="triage@v2:rollback_target"):
        retire(synth_home, "triage@v1", "old")
    set_rollback_target(synth_home, "triage@v2", None)
    assert retire(synth_home, "triage@v1", "old").status == "retired"
    with pytest.raises(AdapterRetired):
        set_rollback_target(synth_home, "triage@v2", "triage@v1")


def test_retire_checks_the_routes_of_a_route_store(synth_home: Home) -> None:
    store = MemoryRouteStore()
    states = load_routes_file(synth_home.routes_file)
    asyncio.run(store.seed(states))
    with pytest.raises(AdapterReferenced):
        retire(synth_home, "triage@v2", "x", routes=store.all())
    moved = RouteState(route="triage-es", live="triage@v1", version=1)
    triage = states["triage"].model_copy(update={"canary": None})
    assert retire(synth_home, "triage@v2", "x",
                  routes={"triage": triage, "triage-es": moved}).status == "retired"


def test_set_rollback_target_refuses_cycles(synth_home: Home) -> None:
    with pytest.raises(Exception, match="cycle"):
        set_rollback_target(synth_home, "triage@v1", "triage@v2")
    with pytest.raises(Exception, match="own rollback target"):
        set_rollback_target(synth_home, "triage@v1", "triage@v1")
    assert Split(adapter="triage@v1", percent=1)  # ids stay plain names


def test_cli_retire_reads_the_live_routes_from_redis(synth_home: Home, redis_url: str) -> None:
    from lora_router.router.flags.redis_store import RedisRouteStore

    async def seed() -> None:
        store = RedisRouteStore(redis_url)
        await store.start()
        try:  # Redis says triage-es moved to v1; the routes file still says v2
            await store.seed({"triage-es": RouteState(route="triage-es", live="triage@v1")})
        finally:
            await store.close()

    asyncio.run(seed())
    set_routes(synth_home, "routes:\n  triage-es:\n    live: triage@v2\n")
    from typer.testing import CliRunner

    from lora_router.router.cli.main import app

    args = ["registry", "retire", "triage@v2", "--reason", "x", "--home", str(synth_home.root)]
    assert CliRunner().invoke(app, args).exit_code == 2  # file only: referenced
    result = CliRunner().invoke(app, args, env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    assert RegistryStore(synth_home).get_model_card("triage@v2").status == "retired"
