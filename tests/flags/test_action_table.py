"""The route actions are defined once (router.flags.actions): the admin API has one endpoint
per action with the action's parameters, the CLI one command per action it generates, the
service one method per action, and an unknown action or parameter is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from typer.main import get_command

from lora_router.ground.errors import InvalidRequest
from lora_router.router.api import admin
from lora_router.router.cli.main import app
from lora_router.router.flags.actions import ACTIONS
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from tests.flags.conftest import make_state

COMMON_BODY = {"reason", "actor", "expected_version"}
COMMON_CLI = ["reason", "home", "url", "actor", "allow_no_replicas"]


def test_the_table_holds_every_route_action() -> None:
    assert list(ACTIONS) == ["rollback", "canary", "shadow", "promote", "set-live", "set-guard",
                             "set-policy", "clear-policy"]


def test_each_action_is_one_admin_endpoint_taking_its_parameters() -> None:
    posts = {r.path: r for r in admin.router.routes
             if isinstance(r, APIRoute) and "POST" in (r.methods or set())}
    assert set(posts) == {f"/admin/routes/{{route}}/{s.api_path}" for s in ACTIONS.values()}
    for spec in ACTIONS.values():
        body = admin.body_model(spec)
        assert set(body.model_fields) == COMMON_BODY | {p.name for p in spec.params}, spec.name
        assert posts[f"/admin/routes/{{route}}/{spec.api_path}"].name == spec.method


def test_each_generated_command_takes_the_actions_parameters() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for spec in ACTIONS.values():
        if not spec.cli:
            continue
        cmd = commands[spec.name]
        assert cmd.help == spec.help
        names = [p.name for p in cmd.params if p.name != "help"]
        assert names == ["route", *(p.name for p in spec.params), *COMMON_CLI], spec.name
        for param in spec.params:
            click_param = next(p for p in cmd.params if p.name == param.name)
            if param.option is None:
                assert click_param.param_type_name == "argument"
            else:
                assert param.option in click_param.opts and click_param.required


def test_the_service_has_a_method_per_action() -> None:
    for spec in ACTIONS.values():
        assert callable(getattr(RouteService, spec.method)), spec.name


async def test_apply_refuses_unknown_actions_and_parameters(tmp_path: Path) -> None:
    store = MemoryRouteStore()
    await store.seed({"support": make_state(rollback_target="support@v0")})
    service = RouteService(store)
    with pytest.raises(InvalidRequest, match="no route action 'flip'"):
        await service.apply("flip", "support", actor="a", reason="r")
    with pytest.raises(InvalidRequest, match="set-live needs adapter"):
        await service.apply("set-live", "support", actor="a", reason="r")
    with pytest.raises(InvalidRequest, match="rollback takes no adapter"):
        await service.apply("rollback", "support", actor="a", reason="r", adapter="support@v2")
    done = await service.apply("set-live", "support", actor="a", reason="r",
                               adapter="support@v2")
    assert (done.action, done.state.live, done.state.rollback_target) == (
        "set-live", "support@v2", "support@v1")
