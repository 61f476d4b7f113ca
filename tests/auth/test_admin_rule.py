"""The admin rule with and without keys, on the real admin router and a real key store
(SQLite in a temporary home), driven through ASGI requests from chosen client addresses
(addresses this machine may not have): no key means loopback only; once a key exists, a
key from any address and nothing without one; the admin token and the Host check stay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI

from lora_router.router.api.access import AdminAccess, require_app
from lora_router.router.api.access_rules import AccessRules
from lora_router.router.auth.factory import sqlite_keys_path
from lora_router.router.auth.policy import require_app_key
from lora_router.router.auth.ring import KeyRing
from lora_router.router.auth.roles import Role
from lora_router.router.auth.sqlite_store import SqliteKeyStore
from lora_router.router.settings import Settings
from tests.api.partial import provide
from tests.api.test_admin_access import admin_app
from tests.auth.conftest import amint, bearer

REMOTE = ("203.0.113.7", 4242)
LOCAL = ("127.0.0.1", 4242)


def keyed_admin_app(home: Path, **settings: Any) -> FastAPI:
    s = Settings(home=home, **settings)
    ring = KeyRing(SqliteKeyStore(sqlite_keys_path(home)), refresh_s=0.05)
    return provide(admin_app(s), access=AccessRules(AdminAccess.of(s), ring, require_app_key(s)))


async def call(app: FastAPI, client: tuple[str, int], method: str = "GET",
               path: str = "/admin/routes", headers: dict[str, str] | None = None,
               json: Any = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.request(method, path, headers=headers, json=json)


async def until_refused(app: FastAPI, client: tuple[str, int], path: str = "/admin/routes",
                        deadline_s: float = 10) -> None:
    """Wait until a keyless call is refused (the gateway re-reads the keys)."""
    deadline = time.monotonic() + deadline_s
    while (r := await call(app, client, path=path)).status_code != 401:
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.02)


async def test_no_key_means_loopback_only_and_the_first_key_closes_it(tmp_path: Path) -> None:
    app = keyed_admin_app(tmp_path)
    async with app.router.lifespan_context(app):
        assert (await call(app, LOCAL)).status_code == 200
        refused = await call(app, REMOTE)
        assert refused.status_code == 403 and "keys create" in refused.text
        assert not sqlite_keys_path(tmp_path).exists()  # reading never creates the store
        _, token = await amint(tmp_path, Role.ONCALL, "ops")
        await until_refused(app, LOCAL)  # within keys_refresh_s (0.05 s here)
        for client in (LOCAL, REMOTE):  # loopback is no longer enough
            r = await call(app, client)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "missing_api_key"
            assert (await call(app, client, headers=bearer(token))).status_code == 200
        garbage = await call(app, LOCAL, headers=bearer("not-a-key"))
        assert garbage.json()["error"]["code"] == "invalid_api_key"


async def test_a_key_from_any_address_acts_as_its_owner(tmp_path: Path) -> None:
    _, token = await amint(tmp_path, Role.ADMIN, "alice")
    app = keyed_admin_app(tmp_path)
    async with app.router.lifespan_context(app):
        r = await call(app, REMOTE, "POST", "/admin/routes/support/rollback",
                       headers={**bearer(token), "x-lora-router-actor": "bob"},
                       json={"reason": "INC-1", "actor": "carol"})
        assert r.status_code == 200, r.text
        assert r.json()["state"]["updated_by"] == "key:alice"


async def test_the_host_check_applies_to_keys_too(tmp_path: Path) -> None:
    _, token = await amint(tmp_path, Role.ADMIN, "alice")
    app = keyed_admin_app(tmp_path)
    async with app.router.lifespan_context(app):
        r = await call(app, LOCAL, headers={**bearer(token), "host": "evil.example"})
        assert r.status_code == 403 and "LORA_ROUTER_ADMIN_ALLOWED_HOSTS" in r.text


async def test_the_admin_token_keeps_working_beside_keys(tmp_path: Path) -> None:
    _, token = await amint(tmp_path, Role.APP, "web")
    app = keyed_admin_app(tmp_path, admin_token="s3cret")
    async with app.router.lifespan_context(app):
        r = await call(app, REMOTE, "POST", "/admin/routes/support/rollback",
                       headers={**bearer("s3cret"), "x-lora-router-actor": "bob"},
                       json={"reason": "r"})
        assert r.status_code == 200 and r.json()["state"]["updated_by"] == "token (claimed: bob)"
        assert (await call(app, REMOTE)).status_code == 401
        weak = await call(app, REMOTE, headers=bearer(token))
        assert weak.status_code == 403 and weak.json()["error"]["code"] == "insufficient_role"


async def test_insecure_open_admin_opens_nothing_once_a_key_exists(tmp_path: Path) -> None:
    app = keyed_admin_app(tmp_path, insecure_open_admin=True)
    async with app.router.lifespan_context(app):
        assert (await call(app, REMOTE)).status_code == 200  # no key: open, as asked
        await amint(tmp_path, Role.ONCALL, "ops")
        await until_refused(app, REMOTE)


async def test_a_key_store_that_cannot_be_read_fails_closed(tmp_path: Path) -> None:
    db = sqlite_keys_path(tmp_path)
    db.parent.mkdir()
    db.write_bytes(b"\x00not a database" * 64)
    app = keyed_admin_app(tmp_path)
    async with app.router.lifespan_context(app):
        for client in (LOCAL, REMOTE):
            r = await call(app, client)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "key_store_unavailable"


async def _probe() -> dict[str, str]:
    return {}


async def test_v1_needs_a_key_once_one_exists_unless_turned_off(tmp_path: Path) -> None:
    def v1_app(**settings: Any) -> FastAPI:
        app = keyed_admin_app(tmp_path, **settings)  # with the settings' /v1 key rule
        app.get("/v1/probe", dependencies=[Depends(require_app)])(_probe)
        return app

    auto, off, on = v1_app(), v1_app(require_app_key=False), v1_app(require_app_key=True)
    assert (await call(auto, REMOTE, path="/v1/probe")).status_code == 200  # no key yet
    missing = await call(on, REMOTE, path="/v1/probe")
    assert missing.status_code == 401 and "keys create --role app" in missing.text
    _, token = await amint(tmp_path, Role.APP, "web")
    for app, anonymous in ((auto, 401), (off, 200), (on, 401)):
        async with app.router.lifespan_context(app):
            if anonymous == 401:
                await until_refused(app, REMOTE, "/v1/probe")  # within keys_refresh_s
            else:
                assert (await call(app, REMOTE, path="/v1/probe")).status_code == 200
            assert (await call(app, REMOTE, path="/v1/probe",
                               headers=bearer(token))).status_code == 200
    (tmp_path / "access.yaml").write_text("require_app_key: false\n")
    home_off = v1_app()
    async with home_off.router.lifespan_context(home_off):
        assert (await call(home_off, REMOTE, path="/v1/probe")).status_code == 200
