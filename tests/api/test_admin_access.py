"""Who may reach ``/admin/*``: the safe default, the Host check, and an honest audit.

The admin router, its access rule and the error handlers are the real ones, wired as
``create_app`` wires them, around an in-memory route store (no model needed); the access
rule is exercised over real HTTP (uvicorn) and, for a client address the test machine may
not have, through an ASGI request whose client is that address.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from lora_router.router.api import admin
from lora_router.router.api.access import AdminAccess
from lora_router.router.api.access_rules import AccessRules
from lora_router.router.api.errors import install_error_handlers
from lora_router.router.api.middleware import RequestLimits
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState
from lora_router.router.limits import Limits
from lora_router.router.settings import Settings
from tests.api.conftest import Served, serve_app
from tests.api.partial import provide
from tests.conftest import free_port

TOKEN = "s3cret-admin-token"
ROUTES = "/admin/routes"


def admin_app(settings: Settings) -> FastAPI:
    """The admin part of ``create_app(settings)`` over a memory store seeded with one route."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = MemoryRouteStore()
        await store.seed({"support": RouteState(
            route="support", live="support@v1", rollback_target="support@v0")})
        provide(app, route_service=RouteService(store))
        yield

    app = FastAPI(lifespan=lifespan)
    limits = Limits.of(settings)
    provide(app, access=AccessRules(AdminAccess.of(settings)), limits=limits)
    app.add_middleware(RequestLimits, limits=limits)
    install_error_handlers(app)
    app.include_router(admin.router)
    return app


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(host: str = "127.0.0.1", **settings: Any) -> Served:
        port = free_port()
        s = serve_app(admin_app(Settings(host=host, port=port, **settings)), host, port, 30)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing interface
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_without_a_token_a_non_loopback_client_is_refused_over_http(serve: Any) -> None:
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    gw = serve(host=addr)  # bound there, so its Host header is allowed: the client is not
    r = httpx.get(f"{gw.url}{ROUTES}", timeout=10)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden" and "LORA_ROUTER_ADMIN_TOKEN" in err["message"]
    assert addr in err["message"]
    opened = serve(host=addr, insecure_open_admin=True)
    assert httpx.get(f"{opened.url}{ROUTES}", timeout=10).status_code == 200
    with_token = serve(host=addr, admin_token=TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{with_token.url}{ROUTES}", headers=auth, timeout=10).status_code == 200


async def test_the_client_address_decides_without_a_token() -> None:
    app = admin_app(Settings())
    async with app.router.lifespan_context(app):
        for client, status in ((("203.0.113.7", 4242), 403), (("::ffff:10.0.0.1", 1), 403),
                               (("127.0.0.1", 1), 200), (("::1", 1), 200),
                               (("::ffff:127.0.0.1", 1), 200)):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                r = await c.get(ROUTES)
            assert r.status_code == status, (client, r.text)


def test_a_proxied_request_is_not_a_loopback_client(serve: Any) -> None:
    gw = serve()
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        r = httpx.get(f"{gw.url}{ROUTES}", headers={header: "for=203.0.113.7"}, timeout=10)
        assert r.status_code == 403, (header, r.text)
    assert httpx.get(f"{gw.url}{ROUTES}", timeout=10).status_code == 200


def test_the_host_header_must_name_this_gateway(serve: Any) -> None:
    gw = serve()
    port = gw.url.rsplit(":", 1)[1]

    def get(host: str, url: str = gw.url) -> httpx.Response:
        return httpx.get(f"{url}{ROUTES}", headers={"host": host}, timeout=10)

    rebound = get(f"evil.example:{port}")
    assert rebound.status_code == 403
    err = rebound.json()["error"]
    assert "evil.example" in err["message"]
    assert "LORA_ROUTER_ADMIN_ALLOWED_HOSTS" in err["message"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert get(host).status_code == 200, host
    # a token does not lift the check: the allowed names are configured explicitly
    named = serve(admin_allowed_hosts="gw.internal, admin.example", admin_token=TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    for host, status in (("gw.internal:8000", 200), ("admin.example", 200), ("evil.example", 403)):
        r = httpx.get(f"{named.url}{ROUTES}", headers={"host": host, **auth}, timeout=10)
        assert r.status_code == status, (host, r.text)
    anyhost = serve(admin_allowed_hosts="*")
    assert get("evil.example", anyhost.url).status_code == 200


def test_the_audit_records_the_principal_and_marks_a_claimed_name(serve: Any) -> None:
    gw = serve()
    r = httpx.post(f"{gw.url}{ROUTES}/support/rollback", json={"reason": "bad v1"},
                   headers={"x-lora-router-actor": "alice"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["state"]["updated_by"] == "loopback (claimed: alice)"
    secured = serve(admin_token=TOKEN)
    url = f"{secured.url}{ROUTES}/support/rollback"
    assert httpx.post(url, json={"reason": "r"}, timeout=10).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert httpx.post(url, json={"reason": "r"}, headers=wrong, timeout=10).status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url, json={"reason": "bad v1", "actor": "bob"},
                   headers={**auth, "x-lora-router-actor": "alice"}, timeout=10)
    assert r.json()["state"]["updated_by"] == "token (claimed: bob)"
    audit = httpx.get(f"{secured.url}{ROUTES}/support/audit", headers=auth, timeout=10).json()
    assert [e["by"] for e in audit["entries"]] == ["config", "token (claimed: bob)"]


def test_reason_and_actor_are_bounded(serve: Any) -> None:
    gw = serve(max_reason_chars=50, max_actor_chars=10)
    url = f"{gw.url}{ROUTES}/support/rollback"
    cases = [
        ({"reason": "r" * 51}, {}, "reason", "max_reason_chars"),
        ({"reason": "ok", "actor": "a" * 11}, {}, "actor", "max_actor_chars"),
        ({"reason": "ok"}, {"x-lora-router-actor": "a" * 11}, "x-lora-router-actor",
         "max_actor_chars"),
    ]
    for body, headers, param, setting in cases:
        r = httpx.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert (err["param"], err["code"]) == (param, "limit_exceeded")
        assert setting in err["message"] and f"LORA_ROUTER_{setting.upper()}" in err["message"]
    audit = httpx.get(f"{gw.url}{ROUTES}/support/audit", timeout=10).json()["entries"]
    assert [e["version"] for e in audit] == [1]  # nothing changed
    ok = httpx.post(url, json={"reason": "r" * 50, "actor": "a" * 10}, timeout=10)
    assert ok.status_code == 200, ok.text
