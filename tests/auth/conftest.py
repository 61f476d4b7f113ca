"""Helpers for the access tests: keys minted into a home's key store, the CLI, and one
gateway guarded by keys shared by the tests of this folder.

Keys are created through the same function the CLI calls (``create_key``) on the home's
real store; gateways are the real app (``create_app``, the real log) served by uvicorn on
a free port, on a private copy of the demo home.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.auth.factory import sqlite_keys_path
from lora_router.router.auth.keys import ApiKey
from lora_router.router.auth.roles import Role
from lora_router.router.auth.sqlite_store import SqliteKeyStore
from lora_router.router.auth.store import create_key
from lora_router.router.settings import Settings
from tests.api.conftest import adapter_ids, serve_app, write_routes
from tests.conftest import free_port

CLI = [sys.executable, "-m", "lora_router.router.cli.main"]
CREDS = ("none", "app", "oncall", "admin")  # no key, then a key of each role
OPS = ("rollback", "canary", "shadow", "promote", "set-live")


def private_home(demo_home: Home, dst: Path) -> Home:
    """A writable copy of the demo home with no log, no keys and no access.yaml (so the
    tests behave the same on a demo home built before access.yaml existed)."""
    shutil.copytree(demo_home.root, dst,
                    ignore=shutil.ignore_patterns("log", "flags", "auth", "access.yaml"))
    return Home.at(dst)


async def amint(home: Path, role: Role, name: str) -> tuple[ApiKey, str]:
    """A new key in ``home``'s key store: the record and the key."""
    return await create_key(SqliteKeyStore(sqlite_keys_path(home)), role=role, name=name,
                            by="test")


def mint(home: Path, role: Role, name: str) -> tuple[ApiKey, str]:
    """:func:`amint` outside an event loop."""
    return asyncio.run(amint(home, role, name))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``lora-router ARGS`` in a subprocess, with the test's environment (plus ``env``)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("LORA_ROUTER_ADMIN_TOKEN", "LORA_ROUTER_API_KEY", "DATABASE_URL",
                         "LORA_ROUTER_REQUIRE_APP_KEY", "REDIS_URL")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, "COLUMNS": "200", **(env or {})})


def error_of(r: httpx.Response) -> dict[str, object]:
    """The OpenAI-style error object of an answer (asserting its shape)."""
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, object] = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert err["type"] == "invalid_request_error"
    return err


@dataclass
class Keyed:
    """A gateway that requires keys: its URL, home, one key per role, the adapters."""

    url: str
    home: Home
    tokens: dict[str, str]  # role -> key
    keys: dict[str, ApiKey]  # role -> record
    v1: str
    v2: str
    request_id: str  # a request it served (for feedback)

    def headers(self, cred: str) -> dict[str, str]:
        return {} if cred == "none" else bearer(self.tokens[cred])


def _routes(v1: str, v2: str) -> dict[str, dict[str, object]]:
    """One route per (operation, credential), in a state where that operation succeeds;
    and routes for the audit and CLI tests."""
    canary: dict[str, object] = {"live": v1, "canary": {"adapter": v2, "percent": 10}}
    live: dict[str, object] = {"live": v1}
    start = {"rollback": canary, "canary": live, "shadow": live, "promote": canary,
             "set-live": live}
    routes: dict[str, dict[str, object]] = {
        f"t-{op}-{cred}": start[op] for op in OPS for cred in CREDS}
    routes.update({"audit-route": live, "url-route": canary, "support-triage": live})
    return routes


@pytest.fixture(scope="session")
def keyed(demo_build: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """The real gateway on a private home with one key per role, ``require_app_key`` on."""
    home = private_home(demo_build, tmp_path_factory.mktemp("keyed") / "home")
    minted = {role.value: mint(home.root, role, f"{role.value}-owner") for role in Role}
    v1, v2 = adapter_ids(home)
    routes = write_routes(home.root / "test-routes.yaml", _routes(v1, v2))
    settings = Settings(home=home.root, port=free_port(), routes_file=routes,
                        require_app_key=True, keys_refresh_s=0.5, request_timeout_s=30)
    served = serve_app(create_app(settings), settings.host, settings.port)
    try:
        r = httpx.post(f"{served.url}/v1/completions", headers=bearer(minted["app"][1]),
                       json={"model": "support-triage", "prompt": "Ticket: hi\nCategory:",
                             "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text
        yield Keyed(served.url, home, {k: t for k, (_, t) in minted.items()},
                    {k: rec for k, (rec, _) in minted.items()}, v1, v2, r.json()["id"])
    finally:
        served.stop()
