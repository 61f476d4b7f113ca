"""Retire in embedded mode, on a copy of the demo home: the CLI reads only ``routes.yaml``,
but a running gateway's in-process route store may serve the adapter. The gateway keeps the
card status in step (``registry_hooks`` -> ``sync_route_status``), so retire also refuses
while the card says shadow, canary or live; re-retiring records nothing."""

from __future__ import annotations

import pytest
import yaml

from lora_router.ground.errors import AdapterReferenced
from lora_router.ground.home import Home
from lora_router.registry.lifecycle import retire, set_status
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.runtime import registry_hooks
from lora_router.router.flags.state import load_routes_file
from tests.registry.helpers import cli

V1, V2, ROUTE = "support-triage@v1", "support-triage@v2", "support-triage"
KW = {"actor": "gw-test", "reason": "rollout"}


async def _gateway_service(home: Home) -> RouteService:
    """The route service an embedded gateway runs: in-process store, registry hooks."""
    store = MemoryRouteStore()
    await store.start()
    await store.seed(load_routes_file(home.routes_file))
    on_commit, default_rollback = registry_hooks(home, store)
    return RouteService(store, known_adapters=home_known_adapters(home), on_commit=on_commit,
                        default_rollback=default_rollback)


def _status(home: Home, adapter: str) -> str:
    return RegistryStore(home).get_model_card(adapter).status


async def test_retire_refused_while_an_in_process_route_serves_it(copy_home: Home) -> None:
    svc = await _gateway_service(copy_home)
    await svc.canary(ROUTE, V2, 10, **KW)  # only in the gateway's memory, not routes.yaml
    await svc.settle()  # the cards are written after the change's answer
    assert V2 not in copy_home.routes_file.read_text()
    assert _status(copy_home, V2) == "canary"
    result = cli(copy_home, "retire", V2, "--reason", "superseded")
    assert result.exit_code == 2, result.output
    assert f"{V2} is canary on a route (card status" in result.output
    assert "lora-router rollback" in result.output and "Traceback" not in result.output
    with pytest.raises(AdapterReferenced) as exc:
        retire(copy_home, V2, "superseded", routes={})
    assert exc.value.detail["references"] == ["card status canary"]
    assert _status(copy_home, V2) == "canary"

    await svc.promote(ROUTE, **KW)  # v2 live (in memory only; routes.yaml still says v1)
    await svc.settle()  # the cards are written after the change's answer
    result = cli(copy_home, "retire", V2, "--reason", "superseded")
    assert result.exit_code == 2 and f"{V2} is live on a route" in result.output

    await svc.rollback(ROUTE, actor="gw-test", reason="f1 dropped")  # live := v1
    await svc.settle()  # the cards are written after the change's answer
    assert _status(copy_home, V2) == "registered"
    result = cli(copy_home, "retire", V2, "--reason", "superseded")
    assert result.exit_code == 0, result.output
    assert _status(copy_home, V2) == "retired"


@pytest.mark.parametrize("status", ["shadow", "canary", "live"])
def test_each_serving_status_is_refused_and_registered_is_not(copy_home: Home,
                                                               status: str) -> None:
    set_status(copy_home, V2, status, "test", "served by a route we cannot see")  # type: ignore[arg-type]
    with pytest.raises(AdapterReferenced, match=f"is {status} on a route"):
        retire(copy_home, V2, "superseded", routes={})
    set_status(copy_home, V2, "registered", "test", "no route serves it any more")
    assert retire(copy_home, V2, "superseded", routes={}).status == "retired"


def test_routes_file_reference_is_still_refused(copy_home: Home) -> None:
    assert _status(copy_home, V2) == "registered"
    routes = yaml.safe_load(copy_home.routes_file.read_text())
    routes["routes"][ROUTE]["shadow"] = {"adapter": V2, "percent": 5}
    copy_home.routes_file.write_text(yaml.safe_dump(routes))
    result = cli(copy_home, "retire", V2, "--reason", "superseded")
    assert result.exit_code == 2 and f"route {ROUTE}:shadow 5%" in result.output


def test_re_retiring_says_when_and_by_whom_and_records_nothing(copy_home: Home) -> None:
    result = cli(copy_home, "retire", V2, "--reason", "superseded", "--by", "alice")
    assert result.exit_code == 0, result.output
    path = copy_home.model_card_path(V2)
    card_bytes = path.read_bytes()
    retired = RegistryStore(copy_home).get_model_card(V2).history[-1]
    result = cli(copy_home, "retire", V2, "--reason", "again", "--by", "bob")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"{V2}: already retired on {retired.at:%Y-%m-%d} " in out
    assert "by alice (superseded); nothing changed" in out
    assert "again" not in out and "bob" not in out
    assert path.read_bytes() == card_bytes
