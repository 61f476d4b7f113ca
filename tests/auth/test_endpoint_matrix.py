"""Every endpoint, every role, over real HTTP: 401 without a key, 403 with too weak a role,
200 with a strong enough one; the open endpoints answer everyone.

The gateway (``keyed``: the real app with keys of each role, ``require_app_key`` on)
serves one route per (operation, credential) in a state where the operation succeeds, so
every case that passes the check really changes something, in any order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lora_router.router.auth.roles import Role
from tests.auth.conftest import CREDS, Keyed, error_of, mint


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: Callable[[Keyed, str], str]  # (gateway, credential) -> path
    needs: Role | None  # None: open to all
    body: Callable[[Keyed], dict[str, Any]] | None = None

    def call(self, gw: Keyed, cred: str) -> httpx.Response:
        json = self.body(gw) if self.body is not None else None
        return httpx.request(self.method, f"{gw.url}{self.path(gw, cred)}", json=json,
                             headers=gw.headers(cred), timeout=60)


def _fixed(path: str) -> Callable[[Keyed, str], str]:
    return lambda gw, cred: path


def _route(op: str, suffix: str = "") -> Callable[[Keyed, str], str]:
    return lambda gw, cred: f"/admin/routes/t-{op}-{cred}{suffix}"


def _change(op: str) -> Callable[[Keyed, str], str]:
    return lambda gw, cred: f"/admin/routes/t-{op}-{cred}/{op}"


_PROMPT = "Ticket: I was charged twice.\nCategory:"
ENDPOINTS: dict[str, Endpoint] = {
    "completions": Endpoint("POST", _fixed("/v1/completions"), Role.APP, lambda gw: {
        "model": "support-triage", "prompt": _PROMPT, "max_tokens": 2}),
    "chat": Endpoint("POST", _fixed("/v1/chat/completions"), Role.APP, lambda gw: {
        "model": "support-triage", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2}),
    "models": Endpoint("GET", _fixed("/v1/models"), Role.APP),
    "model": Endpoint("GET", _fixed("/v1/models/support-triage"), Role.APP),
    "feedback": Endpoint("POST", _fixed("/v1/feedback"), Role.APP, lambda gw: {
        "request_id": gw.request_id, "was_correct": True}),
    "routes": Endpoint("GET", _fixed("/admin/routes"), Role.ONCALL),
    "route": Endpoint("GET", _route("canary"), Role.ONCALL),
    "audit": Endpoint("GET", _route("canary", "/audit"), Role.ONCALL),
    "rollback": Endpoint("POST", _change("rollback"), Role.ONCALL, lambda gw: {
        "reason": "matrix"}),
    "canary": Endpoint("POST", _change("canary"), Role.ONCALL, lambda gw: {
        "adapter": gw.v2, "percent": 10, "reason": "matrix"}),
    "shadow": Endpoint("POST", _change("shadow"), Role.ONCALL, lambda gw: {
        "adapter": gw.v2, "percent": 10, "reason": "matrix"}),
    "promote": Endpoint("POST", _change("promote"), Role.ONCALL, lambda gw: {
        "reason": "matrix"}),
    "set-live": Endpoint("POST", _change("set-live"), Role.ONCALL, lambda gw: {
        "adapter": gw.v2, "reason": "matrix"}),
    "keys": Endpoint("GET", _fixed("/admin/keys"), Role.ADMIN),
    "revoke-key": Endpoint("POST", lambda gw, cred: f"/admin/keys/{_victim(gw, cred)}/revoke",
                           Role.ADMIN),
    "healthz": Endpoint("GET", _fixed("/healthz"), None),
    "readyz": Endpoint("GET", _fixed("/readyz"), None),
    "metrics": Endpoint("GET", _fixed("/metrics"), None),
    "openapi": Endpoint("GET", _fixed("/openapi.json"), None),
}

_VICTIMS: dict[str, str] = {}


def _victim(gw: Keyed, cred: str) -> str:
    """A key of its own for each credential to revoke."""
    if cred not in _VICTIMS:
        _VICTIMS[cred] = mint(gw.home.root, Role.APP, f"victim-{cred}")[0].id
    return _VICTIMS[cred]


def expected(needs: Role | None, cred: str) -> int:
    if needs is None:
        return 200
    if cred == "none":
        return 401
    return 200 if Role(cred).allows(needs) else 403


@pytest.mark.parametrize("cred", CREDS)
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_each_endpoint_answers_each_role_as_the_matrix_says(
    keyed: Keyed, name: str, cred: str
) -> None:
    endpoint = ENDPOINTS[name]
    r = endpoint.call(keyed, cred)
    status = expected(endpoint.needs, cred)
    assert r.status_code == status, (name, cred, r.text)
    if status == 401:
        assert error_of(r)["code"] == "missing_api_key"
        assert "Authorization: Bearer" in str(error_of(r)["message"])
    if status == 403:
        err = error_of(r)
        assert err["code"] == "insufficient_role"
        assert f"has role {cred}" in str(err["message"])
        assert f"needs {endpoint.needs}" in str(err["message"])


# answered without a key (the dashboard's page is static: its data comes from the admin
# API, with the person's key)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/dashboard"})


def test_every_other_operation_refuses_a_caller_without_a_key_or_with_too_weak_a_one(
    keyed: Keyed,
) -> None:
    """Beyond the matrix above: any operation the app declares (one added later too) is
    401 without a key and, outside /v1, 403 with an app key, before it reads its input."""
    doc = httpx.get(f"{keyed.url}/openapi.json", timeout=30).json()
    checked = 0
    for template, ops in doc["paths"].items():
        if template in OPEN_PATHS:
            continue
        path = re.sub(r"\{[^}]+\}", "t-canary-none", template)
        for method in ops:
            url = f"{keyed.url}{path}"
            r = httpx.request(method.upper(), url, timeout=30)
            assert r.status_code == 401, (method, template, r.text)
            if not template.startswith("/v1/"):
                weak = httpx.request(method.upper(), url, headers=keyed.headers("app"),
                                     timeout=30)
                assert weak.status_code == 403, (method, template, weak.text)
            checked += 1
    assert checked >= len([e for e in ENDPOINTS.values() if e.needs is not None])


def _template(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/admin/routes/") and len(parts) > 3:
        parts[3] = "{route}"
    if path.startswith("/admin/keys/"):
        parts[3] = "{key_id}"
    if path.startswith("/v1/models/"):
        parts[3] = "{model_id}"
    return "/".join(parts)


def test_the_document_declares_the_bearer_scheme_and_the_refusals(keyed: Keyed) -> None:
    doc = httpx.get(f"{keyed.url}/openapi.json", timeout=30).json()
    scheme = doc["components"]["securitySchemes"]["api_key"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for endpoint in ENDPOINTS.values():
        path = _template(endpoint.path(keyed, "admin"))
        op = doc["paths"].get(path, {}).get(endpoint.method.lower())
        if op is None:  # /openapi.json itself
            continue
        declared = {int(s) for s in op["responses"]}
        if endpoint.needs is None:
            assert "security" not in op and not {401, 403} & declared, path
            continue
        assert op["security"] == [{"api_key": []}], path
        refusals = {401} if endpoint.needs is Role.APP else {401, 403}
        assert refusals <= declared, (path, declared)
