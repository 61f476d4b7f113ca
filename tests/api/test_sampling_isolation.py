"""Over real HTTP: one request's sampling values never fail the requests batched with it, and
values outside the documented bounds are refused with a 400 naming the field and the bound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from lora_router.demo.task import format_prompt
from tests.api.conftest import Gateway

TICKETS = (
    "Where is my refund for the returned jacket?",
    "The app crashes every time I open the settings page",
    "Necesito cambiar la direccion de envio de mi pedido",
)
PROMPTS = tuple(format_prompt(t) for t in TICKETS)
ROUTE = "support-triage"
# Valid values too small for float32: each used to turn the sampler's probabilities into
# inf/NaN (or an empty nucleus) and fail the whole batch. Each decodes greedily now.
DEGENERATE: tuple[dict[str, float], ...] = (
    {"temperature": 1e-30},
    {"temperature": 1.0, "top_p": 1e-30},
    {"temperature": 1e-30, "top_p": 1e-30},
    {"temperature": 1e-40},
    {"temperature": 1.0, "top_p": 1e-50},
    {"temperature": 5e-324, "top_p": 5e-324},
)


def _complete(gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/completions", json=body, timeout=120)


def _text(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any] | None]:
    """The stream's JSON payloads; None for ``[DONE]``."""
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield None if data == "[DONE]" else json.loads(data)


def test_degenerate_sampling_values_fail_no_request_in_the_batch(gateway: Gateway) -> None:
    base = gateway.components.engine.base.name
    greedy = {p: _text(_complete(gateway, {"model": ROUTE, "prompt": p, "max_tokens": 8}))
              for p in PROMPTS}
    long_body = {"model": base, "prompt": PROMPTS[0], "max_tokens": 200}
    long_text = _text(_complete(gateway, long_body))

    jobs: list[tuple[dict[str, Any], str]] = [
        ({"model": ROUTE, "prompt": p, "max_tokens": 8}, greedy[p]) for p in PROMPTS * 2
    ]
    jobs += [
        ({"model": ROUTE, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8, **params},
         greedy[PROMPTS[i % len(PROMPTS)]])
        for i, params in enumerate(DEGENERATE)
    ]
    with httpx.Client(timeout=120) as client, client.stream(
        "POST", f"{gateway.url}/v1/completions", json={**long_body, "stream": True}
    ) as stream:
        assert stream.status_code == 200
        events = _events(stream.iter_lines())
        first = next(events)  # the long request is decoding now; the others join it
        assert first is not None and "error" not in first, first
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            answers = list(pool.map(lambda job: _complete(gateway, job[0]), jobs))
        rest = list(events)

    assert rest[-1] is None, "the stream did not end with [DONE]"
    payloads = [first, *(e for e in rest if e is not None)]
    assert not [e for e in payloads if "error" in e], "the long stream was failed"
    assert "".join(e["choices"][0]["text"] for e in payloads if e["choices"]) == long_text
    for (body, expected), answer in zip(jobs, answers, strict=True):
        assert answer.status_code == 200, (body, answer.text)
        assert _text(answer) == expected, body


BOUND_CASES = [
    ("temperature", "NaN", "[0, 2]"),
    ("temperature", "Infinity", "[0, 2]"),
    ("temperature", "-Infinity", "[0, 2]"),
    ("temperature", "-0.5", "[0, 2]"),
    ("temperature", "2.5", "[0, 2]"),
    ("temperature", "1e400", "[0, 2]"),
    ("temperature", "true", "[0, 2]"),
    ("temperature", '"0.7"', "[0, 2]"),
    ("top_p", "0", "(0, 1]"),
    ("top_p", "-0.1", "(0, 1]"),
    ("top_p", "1.5", "(0, 1]"),
    ("top_p", "NaN", "(0, 1]"),
    ("max_tokens", "0", ">= 1"),
    ("max_tokens", "-4", ">= 1"),
    ("max_tokens", "2.5", ">= 1"),
    ("max_tokens", "Infinity", ">= 1"),
    ("max_tokens", "false", ">= 1"),
    ("n", "0", ">= 1"),
    ("n", "NaN", ">= 1"),
    ("seed", "-1", "[0, 2**63)"),
    ("seed", "9223372036854775808", "[0, 2**63)"),
    ("seed", "1.5", "[0, 2**63)"),
    ("seed", '"42"', "[0, 2**63)"),
    ("seed", "true", "[0, 2**63)"),
    ("seed", "NaN", "[0, 2**63)"),
]


def _raw(gw: Gateway, path: str, body: str) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", content=body.encode(), timeout=60,
                      headers={"content-type": "application/json"})


@pytest.mark.parametrize(("field", "raw", "bound"), BOUND_CASES)
def test_out_of_bounds_sampling_value_is_400_naming_field_and_bound(
    gateway: Gateway, field: str, raw: str, bound: str
) -> None:
    prompt = json.dumps(PROMPTS[0])
    r = _raw(gateway, "/v1/completions",
             f'{{"model": "{ROUTE}", "prompt": {prompt}, "{field}": {raw}}}')
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field
    assert field in err["message"] and bound in err["message"], err["message"]
    assert err["request_id"] == r.headers["x-request-id"]


def test_chat_token_limit_is_bounded_too(gateway: Gateway) -> None:
    r = _raw(gateway, "/v1/chat/completions",
             f'{{"model": "{ROUTE}", "messages": [{{"role": "user", "content": "hi"}}], '
             f'"max_completion_tokens": -1, "temperature": 0.5}}')
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "max_completion_tokens" and ">= 1" in err["message"]


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 2, "seed": 2**63 - 1},
        {"temperature": 0, "top_p": 1},
        {"temperature": None, "top_p": None, "n": None, "seed": None, "max_tokens": None},
        {"max_tokens": 3.0, "seed": 0, "temperature": 0.7, "top_p": 1e-300},
    ],
)
def test_values_at_the_bounds_are_served(gateway: Gateway, params: dict[str, Any]) -> None:
    r = _complete(gateway, {"model": ROUTE, "prompt": PROMPTS[1], **params})
    assert r.status_code == 200, r.text
