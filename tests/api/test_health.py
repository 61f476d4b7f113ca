"""Liveness, readiness, and engine failures answered (never hung) with the request id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway, write_routes
from tests.conftest import free_port

PROMPT = format_prompt("I cannot log in to my account since yesterday")


def test_healthz_and_readyz(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).json() == {"status": "ok"}
    r = httpx.get(f"{gateway.url}/readyz", timeout=10)
    assert r.status_code == 200
    detail = r.json()
    assert detail["ready"] is True and detail["base"]["verified"] is True
    assert detail["base"]["sha256"] == gateway.components.engine.base.sha256
    assert detail["adapters"]["referenced"] == sorted({v1, v2})
    assert detail["adapters"]["missing"] == []
    assert detail["log"] is None  # this gateway records through a custom recorder, no writer


@pytest.fixture
def own_gateway(demo_home: Home, tmp_path: Path) -> Iterator[Gateway]:
    """A private gateway this test may break: route live v1 with rollback target v2."""
    v1, v2 = adapter_ids(demo_home)
    routes = write_routes(tmp_path / "routes.yaml",
                          {"support-triage": {"live": v1, "rollback_target": v2}})
    gw = start_gateway(Settings(home=demo_home.root, port=free_port(), routes_file=routes))
    yield gw
    gw.stop()


def test_readyz_is_503_while_a_referenced_adapter_is_not_resident(
    own_gateway: Gateway, demo_home: Home
) -> None:
    _, v2 = adapter_ids(demo_home)
    own_gateway.call(own_gateway.components.engine.unload_adapter(v2))
    r = httpx.get(f"{own_gateway.url}/readyz", timeout=10)
    assert r.status_code == 503
    assert r.json()["ready"] is False and r.json()["adapters"]["missing"] == [v2]
    # the live adapter keeps serving
    ok = httpx.post(f"{own_gateway.url}/v1/completions", timeout=60,
                    json={"model": "support-triage", "prompt": PROMPT, "max_tokens": 2})
    assert ok.status_code == 200
    # ensuring residency again makes it ready
    c = own_gateway.components
    own_gateway.call(c.residency.ensure(c.residency.referenced(c.store.all())))
    assert httpx.get(f"{own_gateway.url}/readyz", timeout=10).status_code == 200


def test_a_pinned_request_loads_a_referenced_adapter_that_is_missing(
    own_gateway: Gateway, demo_home: Home
) -> None:
    _, v2 = adapter_ids(demo_home)
    own_gateway.call(own_gateway.components.engine.unload_adapter(v2))
    assert httpx.get(f"{own_gateway.url}/readyz", timeout=10).status_code == 503
    pinned = httpx.post(f"{own_gateway.url}/v1/completions", timeout=60,
                        json={"model": v2, "prompt": PROMPT, "max_tokens": 2})
    assert pinned.status_code == 200 and pinned.headers["x-model-id"] == v2
    assert httpx.get(f"{own_gateway.url}/readyz", timeout=10).status_code == 200
    # the route references it: kept by the route, not as an on-demand adapter
    assert own_gateway.components.residency.on_demand() == []


def test_engine_failure_is_500_with_the_request_id_not_a_hang(own_gateway: Gateway) -> None:
    own_gateway.call(own_gateway.components.engine.close())
    started = time.monotonic()
    r = httpx.post(f"{own_gateway.url}/v1/completions", timeout=60,
                   json={"model": "support-triage", "prompt": PROMPT, "max_tokens": 2})
    assert time.monotonic() - started < 30
    assert r.status_code >= 500, r.text
    err = r.json()["error"]
    assert err["type"] == "server_error"
    assert err["request_id"] == r.headers["x-request-id"] and err["request_id"].startswith("cmpl-")
    [rec] = own_gateway.records_for(err["request_id"])
    assert rec.status == "error" and rec.error


def test_engine_timeout_answers_with_an_error_not_a_hang(
    demo_home: Home, tmp_path: Path
) -> None:
    # no routes, so nothing loads at start (loads share the engine's timeout); the base serves
    routes = write_routes(tmp_path / "routes.yaml", {})
    settings = Settings(home=demo_home.root, port=free_port(), routes_file=routes,
                        request_timeout_s=0.001)
    gw = start_gateway(settings)
    try:
        base = gw.components.engine.base.name
        r = httpx.post(f"{gw.url}/v1/completions", timeout=60,
                       json={"model": base, "prompt": PROMPT, "max_tokens": 64})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    finally:
        gw.stop()
