"""The official ``openai`` client works unchanged, and every response names its adapter."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import openai
import pytest

from lora_router.demo.task import format_prompt
from lora_router.ground.home import Home
from lora_router.router.log.rows import RowBuilder
from tests.api.conftest import Gateway, adapter_ids

PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")
TICKET = "My parcel never arrived and the tracking number shows nothing"


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=60)


def base_name(gw: Gateway) -> str:
    return str(gw.components.engine.base.name)


def test_completion_via_route_names_the_adapter_and_is_recorded(
    gateway: Gateway, demo_home: Home
) -> None:
    v1, _ = adapter_ids(demo_home)
    raw = client(gateway).completions.with_raw_response.create(
        model="support-triage", prompt=PROMPT, max_tokens=4
    )
    c = raw.parse()
    assert c.model == v1 and raw.headers["x-model-id"] == v1
    assert raw.headers["x-route"] == "support-triage"
    assert raw.headers["x-route-arm"] == "live"
    assert raw.headers["x-flag-version"] == "1"
    assert c.id.startswith("cmpl-") and c.id == raw.headers["x-request-id"]
    assert c.object == "text_completion" and len(c.choices) == 1
    assert c.choices[0].finish_reason in ("stop", "length")
    assert c.usage is not None and c.usage.prompt_tokens > 0
    assert 1 <= c.usage.completion_tokens <= 4

    [rec] = gateway.records_for(c.id)
    assert (rec.model_id, rec.route, rec.arm, rec.flag_version) == (v1, "support-triage", "live", 1)
    assert rec.status == "ok" and rec.output == c.choices[0].text
    # hashed by the log writer, off the request path
    assert rec.input_hash is None and rec.route_key_hash is None
    row, _ = RowBuilder().build(rec)
    assert row["input_hash"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert row["route_key_hash"] == hashlib.sha256(c.id.encode()).hexdigest()[:16]
    assert rec.prompt == PROMPT and rec.base_model_id == base_name(gateway)
    assert (rec.prompt_tokens, rec.completion_tokens) == (
        c.usage.prompt_tokens, c.usage.completion_tokens
    )
    assert rec.confidence is not None and 0.0 <= rec.confidence <= 1.0
    assert rec.latency_ms is not None and rec.latency_ms > 0 and rec.route_key == c.id


def test_completion_via_pinned_id_is_served_by_that_adapter(
    gateway: Gateway, demo_home: Home
) -> None:
    _, v2 = adapter_ids(demo_home)
    raw = client(gateway).completions.with_raw_response.create(
        model=v2, prompt=PROMPT, max_tokens=4, user="someone"
    )
    c = raw.parse()
    assert c.model == v2 and raw.headers["x-model-id"] == v2
    assert "x-route" not in raw.headers and "x-flag-version" not in raw.headers
    [rec] = gateway.records_for(c.id)
    assert rec.model_id == v2 and rec.route is None and rec.flag_version is None
    assert rec.subject == "someone"


def test_the_base_is_served_by_its_name(gateway: Gateway) -> None:
    name = base_name(gateway)
    raw = client(gateway).completions.with_raw_response.create(
        model=name, prompt=PROMPT, max_tokens=3
    )
    assert raw.parse().model == name and raw.headers["x-model-id"] == name
    [rec] = gateway.records_for(raw.headers["x-request-id"])
    assert rec.model_id == name


def test_route_and_pinned_live_adapter_answer_alike(gateway: Gateway, demo_home: Home) -> None:
    v1, _ = adapter_ids(demo_home)
    c = client(gateway)
    routed = c.completions.create(model="support-triage", prompt=PROMPT, max_tokens=4)
    pinned = c.completions.create(model=v1, prompt=PROMPT, max_tokens=4)
    assert routed.choices[0].text == pinned.choices[0].text  # greedy by default


def test_chat_plain_and_streamed_name_the_adapter(gateway: Gateway, demo_home: Home) -> None:
    v1, _ = adapter_ids(demo_home)
    c = client(gateway)
    messages = [{"role": "user", "content": TICKET}]
    raw = c.chat.completions.with_raw_response.create(
        model="support-triage", messages=messages, max_tokens=5  # type: ignore[arg-type]
    )
    plain = raw.parse()
    assert plain.model == v1 and raw.headers["x-model-id"] == v1
    assert plain.id.startswith("chatcmpl-") and plain.id == raw.headers["x-request-id"]
    assert plain.choices[0].message.role == "assistant"
    assert plain.usage is not None and plain.usage.completion_tokens >= 1

    sraw = c.chat.completions.with_raw_response.create(
        model="support-triage", messages=messages, max_completion_tokens=5, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    assert sraw.headers["x-model-id"] == v1
    assert sraw.headers["content-type"].startswith("text/event-stream")
    chunks = list(sraw.parse())
    assert chunks and {ch.model for ch in chunks} == {v1}
    assert {ch.id for ch in chunks} == {sraw.headers["x-request-id"]}
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    [rec] = gateway.records_for(chunks[0].id)
    assert rec.status == "ok" and rec.model_id == v1 and rec.output == text


def test_completion_stream_ends_with_done(gateway: Gateway, demo_home: Home) -> None:
    v1, _ = adapter_ids(demo_home)
    c = client(gateway)
    plain = c.completions.create(model="support-triage", prompt=PROMPT, max_tokens=4)
    chunks = list(
        c.completions.create(model="support-triage", prompt=PROMPT, max_tokens=4, stream=True)
    )
    assert {ch.model for ch in chunks} == {v1}
    assert "".join(ch.choices[0].text for ch in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_models_lists_routes_adapters_and_base(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    ids = {m.id for m in client(gateway).models.list()}
    assert {"support-triage", "triage-canary", v1, v2, base_name(gateway)} <= ids


def test_canary_choice_is_sticky_per_user_and_header(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    c = client(gateway)
    seen: dict[str, str] = {}
    for i in range(16):
        user = f"customer-{i}"
        models = set()
        for _ in range(2):
            raw = c.completions.with_raw_response.create(
                model="triage-canary", prompt=PROMPT, max_tokens=1, user=user
            )
            models.add(raw.parse().model)
            arm = raw.headers["x-route-arm"]
            assert (arm, raw.headers["x-model-id"]) in (("live", v1), ("canary", v2))
        assert len(models) == 1, f"{user} was not sticky"
        seen[user] = models.pop()
    assert set(seen.values()) == {v1, v2}  # 16 keys at 50 %: both arms are used
    # the x-route-key header is the key when there is no `user`
    hdr = {"x-route-key": "customer-3"}
    raw = c.completions.with_raw_response.create(
        model="triage-canary", prompt=PROMPT, max_tokens=1, extra_headers=hdr
    )
    assert raw.parse().model == seen["customer-3"]


async def test_concurrent_requests_all_succeed(gateway: Gateway, demo_home: Home) -> None:
    v1, v2 = adapter_ids(demo_home)
    models = ["support-triage", v1, v2, base_name(gateway)] * 6
    async with openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=120
    ) as c:
        results = await asyncio.gather(
            *(c.completions.create(model=m, prompt=PROMPT, max_tokens=3) for m in models)
        )
    expected = {"support-triage": v1}
    assert [r.model for r in results] == [expected.get(m, m) for m in models]
    assert len({r.id for r in results}) == len(models)
    assert all(len(gateway.records_for(r.id)) == 1 for r in results)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_accepts_content_parts(gateway: Gateway, stream: bool) -> None:
    out = client(gateway).chat.completions.create(
        model="support-triage",
        messages=[{"role": "user", "content": [{"type": "text", "text": TICKET}]}],
        max_tokens=2,
        stream=stream,
    )
    if stream:
        assert list(out)  # type: ignore[arg-type]
    else:
        assert out.choices[0].message.content is not None  # type: ignore[union-attr]


def test_a_client_leaving_mid_stream_still_yields_one_record(gateway: Gateway) -> None:
    body = {"model": "support-triage", "prompt": PROMPT, "max_tokens": 200, "stream": True,
            "stop": ["\u0000never"]}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        next(r.iter_lines())  # first event, then hang up
    deadline = time.monotonic() + 30
    while not gateway.records_for(rid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a second record would show up by now
    assert len(gateway.records_for(rid)) == 1
    ok = httpx.post(f"{gateway.url}/v1/completions", timeout=60,
                    json={"model": "support-triage", "prompt": PROMPT, "max_tokens": 2})
    assert ok.status_code == 200
