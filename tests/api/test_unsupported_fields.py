"""OpenAI fields the gateway does not implement are refused (400 naming the field), not
silently ignored; the same fields at their "not used" value are accepted, as SDKs send them."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from lora_router.demo.task import format_prompt
from tests.api.conftest import Gateway

PROMPT = format_prompt("Where is my refund for the returned jacket?")
COMPLETION = {"model": "support-triage", "prompt": PROMPT, "max_tokens": 1}
CHAT = {"model": "support-triage", "max_tokens": 1,
        "messages": [{"role": "user", "content": "Where is my refund?"}]}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/completions", {"logprobs": 2}, "logprobs"),
    ("/v1/completions", {"logprobs": 0}, "logprobs"),  # 0 asks for the sampled token's
    ("/v1/completions", {"echo": True}, "echo"),
    ("/v1/completions", {"best_of": 3}, "best_of"),
    ("/v1/completions", {"suffix": " end"}, "suffix"),
    ("/v1/completions", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("/v1/completions", {"presence_penalty": 0.5}, "presence_penalty"),
    ("/v1/completions", {"n": 2}, "n"),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"tools": [TOOL]}, "tools"),
    ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
    ("/v1/chat/completions", {"frequency_penalty": -1}, "frequency_penalty"),
    ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
    ("/v1/chat/completions", {"n": 3}, "n"),
]


@pytest.mark.parametrize(("path", "extra", "field"), REFUSED)
def test_unsupported_field_is_400_naming_it(
    gateway: Gateway, path: str, extra: dict[str, Any], field: str
) -> None:
    body = {**(COMPLETION if path.endswith("/completions") and "chat" not in path else CHAT),
            **extra}
    r = httpx.post(f"{gateway.url}{path}", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]
    assert err["request_id"] == r.headers["x-request-id"]


NOT_USED: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", {"logprobs": None, "echo": False, "best_of": 1, "suffix": None,
                         "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0,
                         "n": 1, "some_vendor_field": {"x": 1}}),
    ("/v1/chat/completions", {"logprobs": False, "top_logprobs": None, "tools": [],
                              "tool_choice": "none", "response_format": {"type": "text"},
                              "modalities": ["text"], "presence_penalty": None}),
]


@pytest.mark.parametrize(("path", "extra"), NOT_USED)
def test_unsupported_fields_at_their_not_used_value_are_accepted(
    gateway: Gateway, path: str, extra: dict[str, Any]
) -> None:
    body = {**(CHAT if "chat" in path else COMPLETION), **extra}
    r = httpx.post(f"{gateway.url}{path}", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_the_openai_client_sees_a_bad_request(gateway: Gateway) -> None:
    with (openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client,
          pytest.raises(openai.BadRequestError) as info):
        client.completions.create(model="support-triage", prompt=PROMPT, max_tokens=1, echo=True)
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "echo"
