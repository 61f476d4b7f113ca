"""Route operations (rollback, canary, shadow, promote, set-live) on both stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_router.ground.errors import (
    AdapterNotFound,
    InvalidId,
    InvalidRequest,
    RouteChangeRefused,
    RouteNotFound,
    VersionConflict,
)
from lora_router.ground.home import Home
from lora_router.registry.cards import BaseModelRef, Method, ModelCard
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import Split
from lora_router.router.flags.store import RouteStore
from tests.flags.conftest import make_state

ADAPTERS = ["support@v0", "support@v1", "support@v2", "support@v3"]


def make_home(
    root: Path, adapters: list[str] = ADAPTERS, unregistered: tuple[str, ...] = ()
) -> Home:
    """Adapter directories with a model card each (routes may only name registered
    adapters), plus ``unregistered`` ones that have a directory but no card."""
    home = Home.at(root)
    for adapter_id in [*adapters, *unregistered]:
        d = home.adapter_dir(adapter_id)
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        if adapter_id in adapters:
            RegistryStore(home).put_model_card(card_for(adapter_id))
    return home


def card_for(adapter_id: str, **kw: object) -> ModelCard:
    return ModelCard(
        id=adapter_id,
        base_model=BaseModelRef(name="tiny", version="1", hash="sha256:0"),
        method=Method(r=4, alpha=8),
        trained_on="ds@1",
        run_manifest="run-1",
        intended_use="tests",
        **kw,  # type: ignore[arg-type]
    )


def retire(home: Home, adapter_id: str) -> None:
    RegistryStore(home).put_model_card(card_for(adapter_id, status="retired"))


@pytest.fixture
async def service(store: RouteStore, tmp_path: Path) -> RouteService:
    await store.seed({"support": make_state(rollback_target="support@v0")})
    return RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)))


async def test_canary_then_promote_moves_old_live_to_rollback_target(
    service: RouteService,
) -> None:
    r = await service.canary("support", "support@v2", 10, actor="ann", reason="try v2")
    assert r.state.canary == Split(adapter="support@v2", percent=10)
    assert (r.state.version, r.state.updated_by, r.state.reason) == (2, "ann", "try v2")
    assert r.commit_ms > 0 and r.applied is None
    p = await service.promote("support", actor="ann", reason="v2 is good")
    assert (p.state.live, p.state.rollback_target, p.state.canary) == (
        "support@v2", "support@v1", None,
    )
    assert p.state.version == 3


async def test_rollback_with_a_canary_aborts_it_and_keeps_live(service: RouteService) -> None:
    await service.canary("support", "support@v2", 50, actor="ann", reason="try")
    await service.shadow("support", "support@v3", 100, actor="ann", reason="compare")
    r = await service.rollback("support", actor="oncall", reason="errors up")
    assert (r.state.live, r.state.canary, r.state.shadow) == ("support@v1", None, None)
    assert r.state.rollback_target == "support@v0"
    assert r.action == "rollback"


async def test_rollback_without_canary_returns_to_the_rollback_target(
    service: RouteService,
) -> None:
    r = await service.rollback("support", actor="oncall", reason="v1 is bad")
    assert (r.state.live, r.state.rollback_target) == ("support@v0", None)
    with pytest.raises(RouteChangeRefused):
        await service.rollback("support", actor="oncall", reason="again")
    entries = await service.audit("support")
    assert [(e.action, e.by, e.reason) for e in entries[1:]] == [
        ("rollback", "oncall", "v1 is bad")
    ]
    assert entries[-1].before is not None and entries[-1].before.live == "support@v1"


async def test_set_live_keeps_the_old_live_as_rollback_target(service: RouteService) -> None:
    await service.canary("support", "support@v3", 5, actor="a", reason="r")
    r = await service.set_live("support", "support@v3", actor="a", reason="hotfix")
    assert (r.state.live, r.state.rollback_target, r.state.canary) == (
        "support@v3", "support@v1", None,
    )
    with pytest.raises(RouteChangeRefused):
        await service.set_live("support", "support@v3", actor="a", reason="again")


async def test_changes_are_validated(service: RouteService, tmp_path: Path) -> None:
    with pytest.raises(RouteNotFound):
        await service.canary("nope", "support@v2", 10, actor="a", reason="r")
    with pytest.raises(AdapterNotFound):
        await service.canary("support", "support@v9", 10, actor="a", reason="r")
    with pytest.raises(InvalidRequest):
        await service.canary("support", "support@v2", 101, actor="a", reason="r")
    with pytest.raises(InvalidRequest):
        await service.shadow("support", "support@v2", -1, actor="a", reason="r")
    with pytest.raises(InvalidId):
        await service.canary("support", "../etc@v1", 10, actor="a", reason="r")
    with pytest.raises(InvalidRequest):
        await service.canary("support", "support@v2", 10, actor="a", reason="  ")
    with pytest.raises(RouteChangeRefused):
        await service.canary("support", "support@v1", 10, actor="a", reason="r")
    with pytest.raises(RouteChangeRefused):
        await service.promote("support", actor="a", reason="nothing to promote")
    retire(Home.at(tmp_path), "support@v2")
    with pytest.raises(AdapterNotFound):
        await service.canary("support", "support@v2", 10, actor="a", reason="r")
    assert service.show("support").version == 1


async def test_an_adapter_without_a_model_card_is_not_routable(
    store: RouteStore, tmp_path: Path
) -> None:
    await store.seed({"support": make_state()})
    home = make_home(tmp_path, ["support@v1"], unregistered=("support@v2",))
    service = RouteService(store, known_adapters=home_known_adapters(home))
    with pytest.raises(AdapterNotFound, match="support@v2"):
        await service.set_live("support", "support@v2", actor="a", reason="r")
    assert service.show("support").live == "support@v1"


async def test_expected_version_guards_a_stale_client(service: RouteService) -> None:
    await service.canary("support", "support@v2", 10, actor="a", reason="r", expected_version=1)
    with pytest.raises(VersionConflict):
        await service.canary(
            "support", "support@v2", 20, actor="b", reason="r", expected_version=1
        )
    assert service.show("support").canary == Split(adapter="support@v2", percent=10)


async def test_prepare_runs_only_for_new_adapters_and_can_refuse(
    store: RouteStore, tmp_path: Path
) -> None:
    await store.seed({"support": make_state(rollback_target="support@v0")})
    asked: list[set[str]] = []

    async def prepare(adapters: set[str]) -> None:
        asked.append(adapters)
        if "support@v3" in adapters:
            raise RouteChangeRefused("replica-1 cannot load support@v3")

    svc = RouteService(
        store, known_adapters=home_known_adapters(make_home(tmp_path)), prepare=prepare
    )
    await svc.canary("support", "support@v2", 10, actor="a", reason="r")
    await svc.promote("support", actor="a", reason="r")
    await svc.rollback("support", actor="a", reason="r")
    with pytest.raises(RouteChangeRefused):
        await svc.shadow("support", "support@v3", 10, actor="a", reason="r")
    assert asked == [{"support@v2"}, {"support@v3"}]
    assert store.get("support").shadow is None  # type: ignore[union-attr]
    assert store.get("support").version == 4  # type: ignore[union-attr]


async def test_routes_and_show(service: RouteService) -> None:
    assert [s.route for s in service.routes()] == ["support"]
    assert service.show("support").live == "support@v1"
    with pytest.raises(RouteNotFound):
        service.show("billing")
    with pytest.raises(RouteNotFound):
        await service.audit("billing")


async def test_no_change_but_rollback_makes_a_retired_adapter_serve(
    service: RouteService, tmp_path: Path
) -> None:
    await service.canary("support", "support@v2", 10, actor="a", reason="try v2")
    await service.shadow("support", "support@v3", 10, actor="a", reason="compare v3")
    retire(Home.at(tmp_path), "support@v2")  # retired meanwhile (another writer, by hand)
    with pytest.raises(AdapterNotFound, match="support@v2"):
        await service.promote("support", actor="a", reason="v2 is good")
    with pytest.raises(AdapterNotFound, match="support@v2"):  # v2 would keep serving
        await service.shadow("support", "support@v3", 20, actor="a", reason="more")
    assert service.show("support").version == 3
    r = await service.rollback("support", actor="oncall", reason="abort")  # always works
    assert (r.state.live, r.state.canary, r.state.shadow) == ("support@v1", None, None)
    retire(Home.at(tmp_path), "support@v0")  # the rollback target, retired by hand
    r = await service.rollback("support", actor="oncall", reason="v1 is bad")
    assert (r.state.live, r.state.version) == ("support@v0", 5)


async def test_seed_refuses_unknown_adapters_before_writing_anything(
    store: RouteStore, tmp_path: Path
) -> None:
    service = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)))
    retire(Home.at(tmp_path), "support@v3")
    bad = {
        "a-good": make_state("a-good"),
        "r1": make_state("r1", live="support@v9"),
        "z-good": make_state("z-good", canary=Split(adapter="support@v3", percent=5)),
    }
    with pytest.raises(AdapterNotFound, match=r"route 'r1' names .*support@v9") as info:
        await service.seed(bad)
    assert info.value.detail == {"route": "r1", "adapters": ["support@v9"]}
    with pytest.raises(AdapterNotFound, match=r"route 'z-good' names .*support@v3"):
        await service.seed({"z-good": bad["z-good"]})
    assert store.all() == {}
    await service.seed({"a-good": bad["a-good"]})
    # a route that exists keeps its stored state and is not checked again
    retire(Home.at(tmp_path), "support@v1")
    await service.seed({"a-good": bad["a-good"]})
    assert list(store.all()) == ["a-good"]
