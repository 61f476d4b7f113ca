"""The OpenAI API's side of a route's policy text, on a real gateway over HTTP: every answer
of the route names the policy in ``x-policy-version`` (plain and streamed, next to
``x-flag-version``), a pinned adapter's never; a chat on the route gets the policy as its
first system message (greedy decoding: the same answer and token count as the pinned adapter
given that message)."""

from __future__ import annotations

from pathlib import Path

import httpx

from lora_router.ground.home import Home
from lora_router.router.settings import Settings
from tests.conftest import free_port
from tests.log.gateway import adapter_ids, live_gateway, write_routes

ROUTE = "support-triage"
POLICY = "Policy R-12: billing disputes go to billing, even when shipping is mentioned.\n"
PROMPT = "Ticket: my parcel was late and I was charged twice\nCategory:"
USER = {"role": "user", "content": "my parcel was late and I was charged twice"}


async def test_answers_name_the_policy_and_chat_gets_it_as_a_system_message(
    copy_home: Home, tmp_path: Path
) -> None:
    v1, _ = adapter_ids(copy_home)
    routes = write_routes(tmp_path / "routes.yaml", {ROUTE: {"live": v1}})
    settings = Settings(home=copy_home.root, port=free_port(), routes_file=routes,
                        database_url=None)
    body = {"model": ROUTE, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    async with (
        live_gateway(settings, recorder=lambda record: None) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as client,
    ):
        r = await client.post("/v1/completions", json=body)
        assert "x-policy-version" not in r.headers  # no policy yet
        r = await client.post(f"/admin/routes/{ROUTE}/set-policy",
                              json={"text": POLICY, "reason": "R-12"})
        assert r.status_code == 200, r.text

        r = await client.post("/v1/completions", json=body)
        assert (r.headers["x-policy-version"], r.headers["x-flag-version"]) == (
            f"{ROUTE}/policy@1", "2")
        async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
            assert s.headers["x-policy-version"] == f"{ROUTE}/policy@1"
            await s.aread()
        pinned = await client.post("/v1/completions", json={**body, "model": v1})
        assert "x-policy-version" not in pinned.headers

        chat = await client.post("/v1/chat/completions", json={
            "model": ROUTE, "messages": [USER], "max_tokens": 4, "temperature": 0})
        assert chat.headers["x-policy-version"] == f"{ROUTE}/policy@1"
        expected = await client.post("/v1/chat/completions", json={
            "model": v1, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "system", "content": POLICY.rstrip()}, USER]})
        assert chat.json()["choices"] == expected.json()["choices"]
        assert chat.json()["usage"] == expected.json()["usage"]

        r = await client.post(f"/admin/routes/{ROUTE}/clear-policy", json={"reason": "off"})
        assert r.status_code == 200, r.text
        r = await client.post("/v1/completions", json=body)
        assert "x-policy-version" not in r.headers and r.headers["x-flag-version"] == "3"
