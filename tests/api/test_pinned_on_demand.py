"""A pinned adapter id that is registered but not resident is loaded on demand (issue 11).

Over real HTTP with the official client, on a private copy of the demo home with a third
adapter (``support-triage@v3``, v2's files under its own card) and a route that references
only v1: the first request naming v2 loads it (verified through the registry), concurrent
requests share that one load, a full engine evicts the least recently used on-demand
adapter and never one a route references, and what cannot be served is refused with a
status the client does not retry (the server counts one request per call).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from lora_router.registry.lifecycle import retire
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway, write_routes
from tests.conftest import free_port

PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")
LOADS_OK = 'lora_router_adapter_loads_total{outcome="ok"}'


def add_adapter(home: Home, src: str, new: str) -> None:
    """Register ``new`` as a copy of ``src`` (same files, so its card's hashes hold)."""
    shutil.copytree(home.adapter_dir(src), home.adapter_dir(new))
    card = yaml.safe_load(home.model_card_path(src).read_text())
    card.update(id=new, status="registered", history=[])
    home.model_card_path(new).write_text(yaml.safe_dump(card))


def private_home(root: Path, demo_home: Home) -> Home:
    shutil.copytree(demo_home.root, root, ignore=shutil.ignore_patterns("log"))
    home = Home.at(root)
    _, v2 = adapter_ids(home)
    add_adapter(home, v2, "support-triage@v3")
    return home


def gateway_on(home: Home, tmp: Path, max_adapters: int) -> Gateway:
    v1, _ = adapter_ids(home)
    routes = write_routes(tmp / "routes.yaml", {"support-triage": {"live": v1}})
    return start_gateway(Settings(home=home.root, port=free_port(), routes_file=routes,
                                  max_adapters=max_adapters, torch_threads=1))


@pytest.fixture(scope="module")
def two_slots(
    demo_home: Home, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Home]]:
    """v1 (the route's) in one slot, one slot left for on-demand adapters."""
    tmp = tmp_path_factory.mktemp("two-slots")
    home = private_home(tmp / "home", demo_home)
    gw = gateway_on(home, tmp, max_adapters=2)
    yield gw, home
    gw.stop()


def client(gw: Gateway, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=max_retries,
                         timeout=60)


def complete(gw: Gateway, model: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/completions", timeout=60,
                      json={"model": model, "prompt": PROMPT, "max_tokens": 2})


def resident(gw: Gateway) -> set[str]:
    return set(gw.components.engine.resident_adapters())


def loads_ok(gw: Gateway) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(LOADS_OK))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_registered_adapter_is_loaded_by_its_first_request(
    two_slots: tuple[Gateway, Home],
) -> None:
    gw, home = two_slots
    v1, v2 = adapter_ids(home)
    complete(gw, "support-triage@v3").raise_for_status()  # v2 is not resident now
    assert v2 not in resident(gw)
    before = client(gw).models.retrieve(v2).model_dump()
    assert (before["resident"], before["routes"]) == (False, [])

    raw = client(gw).completions.with_raw_response.create(model=v2, prompt=PROMPT, max_tokens=3)
    assert raw.parse().model == v2 and raw.headers["x-route-arm"] == "pinned"
    assert resident(gw) == {v1, v2}
    assert gw.components.residency.on_demand() == [v2]
    assert client(gw).models.retrieve(v2).model_dump()["resident"] is True
    [rec] = gw.records_for(raw.headers["x-request-id"])
    assert rec.status == "ok" and rec.model_id == v2


def test_the_least_recently_used_is_evicted_never_the_route_s(
    two_slots: tuple[Gateway, Home],
) -> None:
    gw, home = two_slots
    v1, v2 = adapter_ids(home)
    v3 = "support-triage@v3"
    for model in (v2, v3, v2, v3):
        r = complete(gw, model)
        assert r.status_code == 200 and r.headers["x-model-id"] == model
        assert resident(gw) == {v1, model}  # one on-demand slot: the other was evicted
        assert gw.components.residency.on_demand() == [model]
    routed = complete(gw, "support-triage")
    assert routed.status_code == 200 and routed.headers["x-model-id"] == v1


def test_concurrent_requests_share_one_load(two_slots: tuple[Gateway, Home]) -> None:
    gw, home = two_slots
    _, v2 = adapter_ids(home)
    complete(gw, "support-triage@v3").raise_for_status()  # v2 evicted
    assert v2 not in resident(gw)
    before = loads_ok(gw)

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="unused",
                                      max_retries=0, timeout=60) as c:
            out = await asyncio.gather(*(c.completions.create(model=v2, prompt=PROMPT,
                                                              max_tokens=2) for _ in range(6)))
        return [r.model for r in out]

    assert asyncio.run(burst()) == [v2] * 6
    assert loads_ok(gw) - before == 1


def test_a_retired_adapter_is_unloaded_and_refused_as_unknown(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(tmp_path / "home", demo_home)
    gw = gateway_on(home, tmp_path, max_adapters=4)
    try:
        v3 = "support-triage@v3"
        assert complete(gw, v3).status_code == 200
        retire(home, v3, "test: retired while loaded on demand", routes={})
        reconciler = gw.components.flags.reconciler
        gw.loop.call_soon_threadsafe(reconciler.kick)
        wait_for(lambda: v3 not in resident(gw), 30, "the retired adapter to be unloaded")
        with pytest.raises(openai.NotFoundError) as info:
            client(gw, max_retries=2).completions.create(model=v3, prompt=PROMPT, max_tokens=2)
        err = info.value.response.json()["error"]
        assert err["code"] == "model_not_found" and "retired" in err["message"]
        assert v3 not in {m.id for m in client(gw).models.list()}
        with pytest.raises(openai.NotFoundError):
            client(gw).models.retrieve(v3)
    finally:
        gw.stop()


def test_no_free_slot_is_refused_once_without_a_client_retry(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(tmp_path / "home", demo_home)
    gw = gateway_on(home, tmp_path, max_adapters=1)  # the route's v1 holds the only slot
    try:
        _, v2 = adapter_ids(home)
        with pytest.raises(openai.UnprocessableEntityError) as info:
            client(gw, max_retries=2).completions.create(model=v2, prompt=PROMPT, max_tokens=2)
        err = info.value.response.json()["error"]
        assert err["code"] == "no_free_slot" and err["param"] == "model"
        assert "route" in err["message"] and "LORA_ROUTER_MAX_ADAPTERS" in err["message"]
        # the server saw the call once: the client did not retry it
        assert [r.status for r in gw.records if r.model_id == v2] == ["error"]
        assert resident(gw) == {adapter_ids(home)[0]}
    finally:
        gw.stop()


def test_a_tampered_adapter_is_refused_without_a_client_retry(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(tmp_path / "home", demo_home)
    weights = home.adapter_dir("support-triage@v3") / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    gw = gateway_on(home, tmp_path, max_adapters=4)
    try:
        with pytest.raises(openai.UnprocessableEntityError) as info:
            client(gw, max_retries=2).completions.create(
                model="support-triage@v3", prompt=PROMPT, max_tokens=2)
        assert info.value.response.json()["error"]["code"] == "adapter_integrity_error"
        assert len([r for r in gw.records if r.model_id == "support-triage@v3"]) == 1
        assert "support-triage@v3" not in resident(gw)
    finally:
        gw.stop()


def test_a_route_change_evicts_an_on_demand_adapter_for_its_own(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(tmp_path / "home", demo_home)
    gw = gateway_on(home, tmp_path, max_adapters=2)
    try:
        v1, v2 = adapter_ids(home)
        v3 = "support-triage@v3"
        assert complete(gw, v2).status_code == 200
        assert resident(gw) == {v1, v2}
        r = httpx.post(f"{gw.url}/admin/routes/support-triage/canary", timeout=60,
                       json={"adapter": v3, "percent": 10, "reason": "test: canary v3"})
        assert r.status_code == 200, r.text
        assert resident(gw) == {v1, v3} and gw.components.residency.on_demand() == []
        # now every slot holds an adapter the route references: refused, not evicted
        refused = complete(gw, v2)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_free_slot"
        assert resident(gw) == {v1, v3}
    finally:
        gw.stop()
