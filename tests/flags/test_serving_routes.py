"""Which route state a request is served from (``ServingRoutes``): the newest applied, or,
while that one names an adapter that is not resident yet, the newest earlier version whose
adapters all are. (Over real HTTP with two gateways: tests/e2e/test_redis_faults.py.)"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY

from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.state import Split
from lora_router.router.routing import ServingRoutes, choose
from tests.flags.conftest import make_state


class Engine:
    """Plays the engine's resident set."""

    def __init__(self, *resident: str) -> None:
        self.resident = set(resident)

    def missing(self, ids: Iterable[str]) -> set[str]:
        return {a for a in ids if a not in self.resident}


def fallbacks(route: str) -> float:
    return REGISTRY.get_sample_value("lora_router_route_fallbacks_total", {"route": route}) or 0


async def test_a_state_naming_an_unloaded_adapter_is_served_as_the_last_resident_one() -> None:
    store = MemoryRouteStore()
    await store.start()
    engine = Engine("support@v1")
    await store.seed({"support": make_state()})
    serving = ServingRoutes(store, engine.missing)
    v1 = serving.get("support")
    assert v1 is not None and v1.version == 1

    v2 = await store.put(make_state(live="support@v2", rollback_target="support@v1"), 1)
    before = fallbacks("support")
    served = serving.get("support")
    assert served == v1  # v2 is still loading: v1 serves, as version 1
    assert choose(served, "k").flag_version == 1
    assert fallbacks("support") == before + 1

    engine.resident.add("support@v2")  # loaded
    assert serving.get("support") == v2
    assert serving.get("nope") is None


async def test_a_canary_or_shadow_still_loading_counts_too() -> None:
    store = MemoryRouteStore()
    await store.start()
    engine = Engine("support@v1")
    await store.seed({"support": make_state()})
    serving = ServingRoutes(store, engine.missing)
    await store.put(make_state(canary=Split(adapter="support@v2", percent=50)), 1)
    assert serving.get("support").version == 1  # type: ignore[union-attr]
    await store.put(make_state(shadow=Split(adapter="support@v3", percent=50)), 2)
    assert serving.get("support").version == 1  # type: ignore[union-attr]
    engine.resident.add("support@v3")  # v3 (shadow only) resident: version 3 serves
    assert serving.get("support").version == 3  # type: ignore[union-attr]


async def test_with_nothing_resident_to_fall_back_on_the_newest_state_is_served() -> None:
    store = MemoryRouteStore()
    await store.start()
    engine = Engine()  # nothing loaded at all: the engine answers adapter_not_resident
    await store.seed({"support": make_state()})
    serving = ServingRoutes(store, engine.missing)
    await store.put(make_state(live="support@v2"), 1)
    assert serving.get("support").version == 2  # type: ignore[union-attr]
