"""Adapter, route and card ids are plain names, never paths: traversal is refused with a
clear ``InvalidId`` (HTTP 400) before any file is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_router.ground.errors import InvalidId
from lora_router.ground.home import Home
from lora_router.ground.ids import check_card_id, check_name, is_adapter_id, parse_adapter_id
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState, Split
from tests.registry.helpers import cli

BAD_ADAPTER_IDS = [
    "../../etc@v1", "support-triage@../v1", "support-triage@v1/../../x", "/etc/passwd@v1",
    "support-triage/v1", "a@..", "a@.hidden", "a@v1\n", "a\n@v1", "a@v1\x00", "..@v1",
    "a@", "@v1", "a@b@c", "A@v1", "a b@v1", "a@v1/", "a\\..\\b@v1", "",
]


@pytest.mark.parametrize("value", BAD_ADAPTER_IDS)
def test_adapter_ids_that_are_paths_are_refused(value: str, tmp_path: Path) -> None:
    assert not is_adapter_id(value)
    with pytest.raises(InvalidId, match="invalid adapter id") as exc:
        parse_adapter_id(value)
    assert exc.value.status_code == 400 and exc.value.detail["value"] == value
    home = Home.at(tmp_path)
    for path_of in (home.adapter_dir, home.model_card_path):
        with pytest.raises(InvalidId):
            path_of(value)


@pytest.mark.parametrize("value", ["support-triage@v1", "a.b_c-d@V2.1-rc_3", "x@1"])
def test_plain_adapter_ids_map_inside_the_home(value: str, tmp_path: Path) -> None:
    home = Home.at(tmp_path)
    path = home.adapter_dir(value)
    assert path.resolve().is_relative_to(home.adapters_dir)
    assert path.relative_to(home.adapters_dir).parts == tuple(value.split("@"))


@pytest.mark.parametrize("value", ["../x", "x/y", "..", "x\n", "X", ".x", ""])
def test_route_names_that_are_paths_are_refused(value: str) -> None:
    with pytest.raises(InvalidId, match="invalid route name"):
        check_name(value)
    with pytest.raises(InvalidId):
        RouteState(route=value, live="a@v1")


@pytest.mark.parametrize("value", ["../x", "x/y", "..", "x\n", ".x", "", "a/../b", "/etc"])
def test_card_ids_that_are_paths_are_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidId):
        check_card_id(value)
    home = Home.at(tmp_path)
    for path_of in (home.dataset_dir, home.dataset_card_path, home.run_manifest_path):
        with pytest.raises(InvalidId):
            path_of(value)


@pytest.mark.parametrize("command", ["verify", "lineage", "retire", "export-hf", "reproduce"])
def test_cli_refuses_a_traversal_id_without_a_traceback(command: str, demo_home: Home) -> None:
    args = [command, "../../etc@v1"] + (["--reason", "x"] if command == "retire" else [])
    result = cli(demo_home, *args)
    assert result.exit_code == 2, result.output
    assert "invalid adapter id '../../etc@v1'" in result.output
    assert "Traceback" not in result.output


async def test_route_changes_refuse_a_traversal_id() -> None:
    store = MemoryRouteStore()
    await store.seed({"r": RouteState(route="r", live="a@v1")})
    svc = RouteService(store, known_adapters=lambda: {"a@v1"})
    for op in (lambda: svc.set_live("r", "../../etc@v1", actor="t", reason="t"),
               lambda: svc.canary("r", "../../etc@v1", 5, actor="t", reason="t")):
        with pytest.raises(InvalidId):
            await op()
    with pytest.raises(InvalidId):
        Split(adapter="../../etc@v1", percent=5)
    assert store.get("r") == (await svc.audit("r"))[0].after  # nothing committed
