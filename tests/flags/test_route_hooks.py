"""RouteService hooks: ``on_commit`` after each change (after the answer, coalesced),
``default_rollback`` from the cards."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from lora_router.ground.errors import RouteChangeRefused
from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.route_status import card_rollback_target
from lora_router.router.flags.runtime import registry_hooks
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore
from tests.flags.conftest import make_state
from tests.flags.test_route_service import card_for, make_home, retire


async def test_on_commit_sees_before_and_after_of_each_change(
    store: RouteStore, tmp_path: Path
) -> None:
    await store.seed({"support": make_state(rollback_target="support@v0")})
    seen: list[tuple[int | None, int]] = []

    def on_commit(before: RouteState | None, after: RouteState) -> None:
        seen.append((before.version if before else None, after.version))

    svc = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)),
                       on_commit=on_commit)
    await svc.canary("support", "support@v2", 10, actor="a", reason="r")
    await svc.settle()
    await svc.rollback("support", actor="a", reason="r")
    with pytest.raises(RouteChangeRefused):
        await svc.promote("support", actor="a", reason="no canary")  # refused: no call
    await svc.settle()
    assert seen == [(1, 2), (2, 3)]


async def test_a_failing_on_commit_never_fails_the_change(
    store: RouteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await store.seed({"support": make_state()})

    def on_commit(before: RouteState | None, after: RouteState) -> None:
        raise OSError("registry is read-only")

    svc = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)),
                       on_commit=on_commit)
    result = await svc.set_live("support", "support@v2", actor="a", reason="r")
    assert result.state.version == 2 and store.get("support") == result.state
    await svc.settle()
    assert "on_commit hook failed" in caplog.text


async def test_rollback_without_a_target_uses_the_cards_default(
    store: RouteStore, tmp_path: Path
) -> None:
    await store.seed({"support": make_state(live="support@v2")})
    home = make_home(tmp_path)
    RegistryStore(home).put_model_card(card_for("support@v2", rollback_target="support@v1"))
    asked: list[set[str]] = []

    async def prepare(adapters: set[str]) -> None:
        asked.append(adapters)

    svc = RouteService(store, known_adapters=home_known_adapters(home), prepare=prepare,
                       default_rollback=lambda a: card_rollback_target(home, a))
    r = await svc.rollback("support", actor="oncall", reason="v2 is bad")
    assert (r.state.live, r.state.rollback_target) == ("support@v1", None)
    assert asked == [{"support@v1"}]  # the target is loaded everywhere before the flip
    with pytest.raises(RouteChangeRefused, match="no rollback target"):
        await svc.rollback("support", actor="oncall", reason="v1 has no default")


async def test_seed_fills_rollback_targets_from_cards_but_keeps_explicit_ones(
    store: RouteStore, tmp_path: Path
) -> None:
    home = make_home(tmp_path)
    RegistryStore(home).put_model_card(card_for("support@v2", rollback_target="support@v1"))
    RegistryStore(home).put_model_card(card_for("support@v3", rollback_target="support@v0"))
    retire(home, "support@v0")  # a retired default is ignored
    called: list[str] = []
    svc = RouteService(store, known_adapters=home_known_adapters(home),
                       default_rollback=lambda a: card_rollback_target(home, a),
                       on_commit=lambda b, a: called.append(a.route))
    await svc.seed({
        "a": make_state("a", live="support@v2"),
        "b": make_state("b", live="support@v2", rollback_target="support@v3"),
        "c": make_state("c", live="support@v3"),
    })
    assert store.get("a").rollback_target == "support@v1"  # type: ignore[union-attr]
    assert store.get("b").rollback_target == "support@v3"  # type: ignore[union-attr]
    assert store.get("c").rollback_target is None  # type: ignore[union-attr]
    assert called == []  # seeding is config, not a change: no status sync


async def test_registry_hooks_keep_card_status_in_step(store: RouteStore, tmp_path: Path) -> None:
    home = make_home(tmp_path)
    await store.seed({"support": make_state(rollback_target="support@v0")})
    on_commit, default_rollback = registry_hooks(Home.at(tmp_path), store)
    svc = RouteService(store, known_adapters=home_known_adapters(home), on_commit=on_commit,
                       default_rollback=default_rollback)
    await svc.canary("support", "support@v2", 10, actor="ann", reason="try v2")
    await svc.settle()
    cards = RegistryStore(home)
    assert cards.get_model_card("support@v2").status == "canary"
    await svc.rollback("support", actor="oncall", reason="abort")
    await svc.settle()
    assert cards.get_model_card("support@v2").status == "registered"


async def test_the_answer_does_not_wait_for_on_commit(store: RouteStore, tmp_path: Path) -> None:
    """The change is answered while its bookkeeping is still blocked; it runs after."""
    await store.seed({"support": make_state(rollback_target="support@v0")})
    release, entered = threading.Event(), threading.Event()
    seen: list[int] = []

    def on_commit(before: RouteState | None, after: RouteState) -> None:
        entered.set()
        assert release.wait(30), "never released"
        seen.append(after.version)

    svc = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)),
                       on_commit=on_commit)
    try:
        # a deadline, not a timing: before the fix the answer waited for the hook (forever)
        first = await asyncio.wait_for(
            svc.set_live("support", "support@v2", actor="a", reason="r"), 20)
        second = await asyncio.wait_for(svc.rollback("support", actor="a", reason="r"), 20)
        assert (first.state.version, second.state.version) == (2, 3)
        assert seen == []
    finally:
        release.set()
    await svc.settle()
    assert entered.is_set() and seen[-1] == 3


async def test_changes_queued_behind_a_slow_on_commit_are_coalesced_per_route(
    store: RouteStore, tmp_path: Path
) -> None:
    await store.seed({"support": make_state(rollback_target="support@v0"),
                      "other": make_state("other", rollback_target="support@v0")})
    release = threading.Event()
    calls: list[tuple[str, int | None, int]] = []

    def on_commit(before: RouteState | None, after: RouteState) -> None:
        assert release.wait(30), "never released"
        calls.append((after.route, before.version if before else None, after.version))

    svc = RouteService(store, known_adapters=home_known_adapters(make_home(tmp_path)),
                       on_commit=on_commit)
    kw = {"actor": "a", "reason": "r"}
    await svc.set_live("support", "support@v2", **kw)  # its call blocks: the rest queue
    for _ in range(3):
        await svc.rollback("support", **kw)
        await svc.set_live("support", "support@v2", **kw)
    await svc.set_live("other", "support@v3", **kw)
    release.set()
    await svc.settle()
    assert calls == [("support", 1, 2), ("support", 2, 8), ("other", 1, 2)]


async def test_planning_a_change_reads_cards_off_the_event_loop(
    store: RouteStore, tmp_path: Path
) -> None:
    """The known-adapter check and the card's default rollback target (file reads) run in
    a worker thread, never on the event loop that serves requests."""
    await store.seed({"support": make_state(live="support@v2")})
    home = make_home(tmp_path)
    known = home_known_adapters(home)
    on_loop: list[str] = []

    def where(what: str) -> None:
        try:
            asyncio.get_running_loop()
            on_loop.append(what)
        except RuntimeError:
            pass

    def known_adapters() -> set[str]:
        where("known_adapters")
        return known()

    def default_rollback(adapter: str) -> str | None:
        where("default_rollback")
        return "support@v1"

    svc = RouteService(store, known_adapters=known_adapters, default_rollback=default_rollback)
    await svc.rollback("support", actor="a", reason="card default")
    await svc.set_live("support", "support@v3", actor="a", reason="r")
    assert on_loop == []
