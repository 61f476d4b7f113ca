"""``GET /v1/models/{id}`` (OpenAI's retrieve model) and ``GET /v1/models`` with the official
client, and the headers each kind of completion request carries, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from tests.api.conftest import Gateway, adapter_ids

PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")


def client(gw: Gateway, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=max_retries,
                         timeout=60)


def fields(model: openai.types.Model) -> dict[str, Any]:
    return model.model_dump()


def test_retrieve_a_route_shows_the_state_it_serves(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    m = fields(client(gateway).models.retrieve("support-triage"))
    assert (m["id"], m["object"], m["owned_by"], m["kind"]) == (
        "support-triage", "model", "lora-router", "route")
    assert isinstance(m["created"], int) and m["created"] > 0
    assert (m["live"], m["rollback_target"], m["canary"], m["shadow"]) == (v1, v2, None, None)
    assert m["flag_version"] == 1
    canary = fields(client(gateway).models.retrieve("triage-canary"))
    assert canary["canary"] == {"adapter": v2, "percent": 50.0}


def test_retrieve_a_pinned_adapter_id(gateway: Gateway, demo_home: Home) -> None:
    v1, _ = adapter_ids(demo_home)
    m = fields(client(gateway).models.retrieve(v1))
    assert (m["id"], m["object"], m["kind"], m["resident"]) == (v1, "model", "adapter", True)
    assert m["base"]["sha256"] == gateway.components.engine.base.sha256
    assert m["routes"] == ["support-triage", "triage-canary"]
    assert m["status"] and m["created"] > 0


def test_retrieve_the_base(gateway: Gateway) -> None:
    base = gateway.components.engine.base
    m = fields(client(gateway).models.retrieve(base.name))
    assert (m["id"], m["kind"], m["sha256"]) == (base.name, "base", base.sha256)
    assert m["max_context"] == base.max_context and m["created"] > 0


@pytest.mark.parametrize("model", ["nope", "support-triage@v9", "org/model", "a/../b@v1",
                                   "support-triage@v1/x"])
def test_an_unknown_id_is_openai_s_404(gateway: Gateway, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway, max_retries=2).models.retrieve(model)
    err = info.value.response.json()["error"]
    assert (err["code"], err["type"], err["param"]) == (
        "model_not_found", "invalid_request_error", "model")
    assert repr(model) in err["message"] and "support-triage" in err["valid_models"]


@pytest.mark.parametrize("path", ["/v1/models/org/model", "/v1/models/", "/v1/models/a%2Fb",
                                  "/v1/models/%40"])
def test_odd_paths_are_a_clean_404(gateway: Gateway, path: str) -> None:
    r = httpx.get(f"{gateway.url}{path}", timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_the_list_and_retrieve_agree(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    c = client(gateway)
    listed = [fields(m) for m in c.models.list()]
    ids = [m["id"] for m in listed]
    base = gateway.components.engine.base.name
    assert ids == ["support-triage", "triage-canary", v1, v2, base]
    for m in listed:
        assert fields(c.models.retrieve(m["id"])) == m


# -- headers per request kind ----------------------------------------------------------------
def headers_of(gw: Gateway, model: str, stream: bool = False) -> httpx.Headers:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 2, "stream": stream}
    with httpx.stream("POST", f"{gw.url}/v1/completions", json=body, timeout=60) as r:
        r.read()
        assert r.status_code == 200, r.text
        return r.headers


@pytest.mark.parametrize("stream", [False, True])
def test_headers_for_route_pinned_and_base(
    gateway: Gateway, demo_home: Home, stream: bool
) -> None:
    v1, v2 = adapter_ids(demo_home)
    base = gateway.components.engine.base.name
    route = headers_of(gateway, "support-triage", stream)
    assert (route["x-route"], route["x-route-arm"], route["x-flag-version"],
            route["x-model-id"]) == ("support-triage", "live", "1", v1)
    for model, arm in ((v2, "pinned"), (base, "base")):
        h = headers_of(gateway, model, stream)
        assert (h["x-model-id"], h["x-route-arm"]) == (model, arm)
        assert h["x-request-id"].startswith("cmpl-")
        assert "x-route" not in h and "x-flag-version" not in h


def test_an_error_carries_the_request_id_only(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/completions", timeout=30,
                   json={"model": "nope", "prompt": PROMPT, "max_tokens": 2})
    assert r.status_code == 404 and r.headers["x-request-id"] == r.json()["error"]["request_id"]
    assert not {"x-model-id", "x-route", "x-route-arm", "x-flag-version"} & set(r.headers)
