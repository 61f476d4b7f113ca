"""A route's policy text on a real gateway over HTTP (demo model, embedded route store): the
engine sees it before every prompt of the route, shadow copies included, every log record
names its version, and a clear takes it away. Greedy decoding makes "the engine saw exactly
this prompt" checkable: the route's answer and token count equal those of the same adapter,
pinned, asked the policy-prefixed prompt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from lora_router.adapters.engine import SamplingParams
from lora_router.ground.home import Home
from lora_router.router.completions import Call
from lora_router.router.log.record import InferenceRecord, hash_input
from lora_router.router.settings import Settings
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, live_gateway, shadow_factory, write_routes

ROUTE = "support-triage"
POLICY = "Policy R-12: billing disputes go to billing, even when shipping is mentioned.\n"
PROMPT = "Ticket: my parcel was late and I was charged twice\nCategory:"


def _settings(home: Home, tmp_path: Path, shadow: bool = True) -> Settings:
    v1, v2 = adapter_ids(home)
    route: dict[str, Any] = {"live": v1}
    if shadow:
        route["shadow"] = {"adapter": v2, "percent": 100}
    routes = write_routes(tmp_path / "routes.yaml", {ROUTE: route})
    return Settings(home=home.root, port=free_port(), routes_file=routes, database_url=None)


async def _complete(client: httpx.AsyncClient, model: str, prompt: str) -> dict[str, Any]:
    r = await client.post("/v1/completions", json={
        "model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _records_of(records: list[InferenceRecord], rid: str, n: int) -> list[InferenceRecord]:
    """The records of ``rid`` and its shadow copy, once ``n`` of them arrived."""
    async with asyncio.timeout(60):
        while len(mine := [r for r in records if r.request_id.startswith(rid)]) < n:
            await asyncio.sleep(0.02)
    return sorted(mine, key=lambda r: r.request_id)


async def test_the_policy_prefixes_every_prompt_of_the_route_and_is_logged(
    copy_home: Home, tmp_path: Path
) -> None:
    v1, _ = adapter_ids(copy_home)
    records: list[InferenceRecord] = []
    async with (
        live_gateway(_settings(copy_home, tmp_path), recorder=records.append,
                     shadow=shadow_factory()) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as client,
    ):
        before = await _complete(client, ROUTE, PROMPT)
        r = await client.post(f"/admin/routes/{ROUTE}/set-policy",
                              json={"text": POLICY, "reason": "refund rule R-12"})
        assert r.status_code == 200, r.text

        served = await _complete(client, ROUTE, PROMPT)
        pinned = await _complete(client, v1, f"{POLICY.rstrip()}\n\n{PROMPT}")
        assert served["choices"][0]["text"] == pinned["choices"][0]["text"]
        assert served["usage"]["prompt_tokens"] == pinned["usage"]["prompt_tokens"]
        assert served["usage"]["prompt_tokens"] > before["usage"]["prompt_tokens"]

        primary, copy = await _records_of(records, served["id"], 2)
        assert copy.request_id == f"{served['id']}-shadow" and copy.arm == "shadow"
        for rec in (primary, copy):
            assert rec.policy_version == f"{ROUTE}/policy@1"
            assert rec.prompt is not None and hash_input(rec.prompt) == hash_input(PROMPT)
        assert copy.prompt_tokens == primary.prompt_tokens  # the copy saw the policy too
        (pinned_rec,) = await _records_of(records, pinned["id"], 1)
        assert pinned_rec.policy_version is None  # a pinned adapter has no route
        (before_rec, _) = await _records_of(records, before["id"], 2)
        assert before_rec.policy_version is None

        r = await client.post(f"/admin/routes/{ROUTE}/clear-policy", json={"reason": "review"})
        assert r.status_code == 200, r.text
        after = await _complete(client, ROUTE, PROMPT)
        assert after["usage"]["prompt_tokens"] == before["usage"]["prompt_tokens"]
        (after_rec, _) = await _records_of(records, after["id"], 2)
        assert after_rec.policy_version is None


async def test_chat_gets_the_policy_as_its_first_system_message(
    copy_home: Home, tmp_path: Path
) -> None:
    """The service's side of chat (the API hands it the messages): a system message first,
    merged with the client's own leading system message."""
    v1, _ = adapter_ids(copy_home)
    records: list[InferenceRecord] = []
    async with (
        live_gateway(_settings(copy_home, tmp_path, shadow=False),
                     recorder=records.append) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as client,
    ):
        service = gw.app.state.components.service
        await gw.app.state.components.route_service.set_policy(
            ROUTE, POLICY, actor="test", reason="chat policy")
        user = {"role": "user", "content": "my parcel was late and I was charged twice"}
        own = {"role": "system", "content": "Answer with one word."}
        cases = [
            ([user], [{"role": "system", "content": POLICY.rstrip()}, user]),
            ([own, user], [{"role": "system",
                            "content": f"{POLICY.rstrip()}\n\n{own['content']}"}, user]),
        ]
        for i, (sent, expected) in enumerate(cases):
            call = Call(f"chat-{i}", ROUTE, service.chat_prompt(sent),
                        SamplingParams(max_tokens=4, temperature=0), messages=tuple(sent))
            done = await service.complete(call)
            r = await client.post("/v1/chat/completions", json={
                "model": v1, "messages": expected, "max_tokens": 4, "temperature": 0})
            assert r.status_code == 200, r.text
            assert done.result.text == r.json()["choices"][0]["message"]["content"]
            assert done.result.prompt_tokens == r.json()["usage"]["prompt_tokens"]
            (rec,) = await _records_of(records, f"chat-{i}", 1)
            assert rec.policy_version == f"{ROUTE}/policy@1"
            assert rec.prompt == service.chat_prompt(sent)  # the client's own messages
