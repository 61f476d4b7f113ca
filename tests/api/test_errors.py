"""Errors are OpenAI-style JSON with the right status, the field named, and a request id."""

from __future__ import annotations

import httpx
import openai
import pytest

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from tests.api.conftest import Gateway, adapter_ids

PROMPT = format_prompt("Where is my refund for the returned jacket?")


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=60)


def post(gw: Gateway, path: str, **kw: object) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", timeout=60, **kw)  # type: ignore[arg-type]


def assert_error_shape(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert {"message", "type", "param", "code", "request_id"} <= set(err)
    assert err["request_id"] == r.headers["x-request-id"]
    return err  # type: ignore[no-any-return]


def test_unknown_model_is_404_listing_valid_names(gateway: Gateway, demo_home: Home) -> None:
    v1, _ = adapter_ids(demo_home)
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).completions.create(model="no-such-route", prompt=PROMPT, max_tokens=2)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "support-triage" in body["valid_models"] and v1 in body["valid_models"]
    assert "support-triage" in body["message"] and v1 in body["message"]
    # the failed attempt is recorded too
    [rec] = [r for r in gateway.records if r.request_id == body["request_id"]]
    assert rec.status == "error" and rec.model_id == "no-such-route"


def test_unknown_adapter_version_is_404(gateway: Gateway) -> None:
    r = post(gateway, "/v1/completions",
             json={"model": "support-triage@v99", "prompt": PROMPT})
    assert assert_error_shape(r, 404)["code"] == "model_not_found"


def test_malformed_body_is_422_naming_the_field(gateway: Gateway) -> None:
    r = post(gateway, "/v1/chat/completions",
             json={"model": "support-triage", "messages": [{"content": "hi"}]})
    err = assert_error_shape(r, 422)
    assert err["param"] == "messages.0.role" and "messages.0.role" in str(err["message"])

    r = post(gateway, "/v1/completions", json={"prompt": PROMPT})
    assert assert_error_shape(r, 422)["param"] == "model"

    r = post(gateway, "/v1/completions", content=b"{not json",
             headers={"content-type": "application/json"})
    assert "JSON" in str(assert_error_shape(r, 422)["message"])


def test_out_of_range_sampling_value_is_400_via_the_client(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).completions.create(
            model="support-triage", prompt=PROMPT, temperature=7.5
        )
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "temperature"


def test_prompt_beyond_the_context_window_is_400(gateway: Gateway) -> None:
    context = gateway.components.engine.base.max_context
    long_prompt = format_prompt("refund please " * (context * 2))
    with pytest.raises(openai.BadRequestError) as info:
        client(gateway).completions.create(model="support-triage", prompt=long_prompt,
                                           max_tokens=2)
    assert isinstance(info.value.body, dict)
    [rec] = [r for r in gateway.records if r.request_id == info.value.body["request_id"]]
    assert rec.status == "error"


def test_max_tokens_too_large_is_400(gateway: Gateway) -> None:
    context = gateway.components.engine.base.max_context
    r = post(gateway, "/v1/completions",
             json={"model": "support-triage", "prompt": PROMPT, "max_tokens": context + 1})
    assert assert_error_shape(r, 400)["param"] == "max_tokens"
    r = post(gateway, "/v1/chat/completions", json={
        "model": "support-triage", "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": context * 4})
    assert assert_error_shape(r, 400)["param"] == "max_tokens"


def test_n_above_one_is_400_with_a_clear_message(gateway: Gateway) -> None:
    r = post(gateway, "/v1/completions", json={"model": "support-triage", "prompt": PROMPT,
                                               "n": 2})
    err = assert_error_shape(r, 400)
    assert err["param"] == "n" and "n=1" in str(err["message"])


def test_streamed_request_errors_keep_their_status(gateway: Gateway) -> None:
    r = post(gateway, "/v1/completions",
             json={"model": "nope", "prompt": PROMPT, "stream": True})
    assert_error_shape(r, 404)


def test_unknown_path_is_json_404(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/nothing-here", timeout=10)
    assert_error_shape(r, 404)
