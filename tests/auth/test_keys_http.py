"""Keys over real HTTP: revoked, wrong and malformed keys are refused; the audit and the
model cards name the key's owner, never a name the caller sends; the CLI's ``--url`` mode
sends ``LORA_ROUTER_API_KEY``; the official openai client authenticates with an app key."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from lora_router.registry.store import RegistryStore
from lora_router.router.auth.roles import Role
from tests.auth.conftest import Keyed, bearer, cli, error_of, mint


def _models(gw: Keyed, token: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/v1/models", headers=bearer(token), timeout=30)


def test_a_key_revoked_through_the_api_is_refused_at_once(keyed: Keyed) -> None:
    key, token = mint(keyed.home.root, Role.APP, "leaver")
    assert _models(keyed, token).status_code == 200
    r = httpx.post(f"{keyed.url}/admin/keys/{key.id}/revoke",
                   headers=keyed.headers("admin"), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["revoked_by"] == "key:admin-owner"
    refused = _models(keyed, token)
    assert refused.status_code == 401
    err = error_of(refused)
    assert err["code"] == "invalid_api_key" and "revoked" in str(err["message"])
    listed = httpx.get(f"{keyed.url}/admin/keys", headers=keyed.headers("admin"), timeout=30)
    assert {k["id"]: k["active"] for k in listed.json()["keys"]}[key.id] is False
    assert "key_hash" not in listed.text and token not in listed.text
    again = httpx.post(f"{keyed.url}/admin/keys/{key.id}/revoke",
                       headers=keyed.headers("admin"), timeout=30)
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    unknown = httpx.post(f"{keyed.url}/admin/keys/0123456789ab/revoke",
                         headers=keyed.headers("admin"), timeout=30)
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "key_not_found"


def test_a_key_revoked_with_the_cli_is_refused_within_the_refresh_interval(
    keyed: Keyed,
) -> None:
    key, token = mint(keyed.home.root, Role.ONCALL, "laptop")
    assert _models(keyed, token).status_code == 200  # known to the gateway
    out = cli("keys", "revoke", key.id, "--home", str(keyed.home.root))
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 30  # keys_refresh_s is 0.5 here
    while (r := _models(keyed, token)).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.05)
    assert r.status_code == 401 and "revoked" in str(error_of(r)["message"])


def test_a_key_created_while_the_gateway_runs_works_on_its_first_request(keyed: Keyed) -> None:
    _, token = mint(keyed.home.root, Role.APP, "newcomer")
    assert _models(keyed, token).status_code == 200


@pytest.mark.parametrize("mangle", ["wrong secret", "other role", "malformed", "not a key"])
def test_a_wrong_or_malformed_key_is_refused(keyed: Keyed, mangle: str) -> None:
    token = keyed.tokens["oncall"]
    bad = {
        "wrong secret": token[:-4] + ("0000" if not token.endswith("0000") else "1111"),
        "other role": token.replace("lr_oncall_", "lr_admin_"),
        "malformed": token + "x",
        "not a key": "sk-unused",
    }[mangle]
    for path in ("/v1/models", "/admin/routes"):
        r = httpx.get(f"{keyed.url}{path}", headers=bearer(bad), timeout=30)
        assert r.status_code == 401, (path, r.text)
        assert error_of(r)["code"] == "invalid_api_key"


def test_the_audit_and_the_model_card_name_the_key_owner_never_a_claimed_name(
    keyed: Keyed,
) -> None:
    r = httpx.post(f"{keyed.url}/admin/routes/audit-route/canary",
                   json={"adapter": keyed.v2, "percent": 5, "reason": "INC-7 canary",
                         "actor": "somebody-else"},
                   headers={**keyed.headers("oncall"), "x-lora-router-actor": "mallory"},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["state"]["updated_by"] == "key:oncall-owner"
    audit = httpx.get(f"{keyed.url}/admin/routes/audit-route/audit",
                      headers=keyed.headers("oncall"), timeout=30).json()["entries"]
    assert audit[-1]["by"] == "key:oncall-owner" and audit[-1]["reason"] == "INC-7 canary"
    assert "mallory" not in str(audit) and "somebody-else" not in str(audit)
    # v2's card moves when its status changes (registered -> canary here, unless another
    # test of this gateway moved it already): every move names a key's owner
    history = RegistryStore(keyed.home).get_model_card(keyed.v2).history
    by_keys = [c.by for c in history if c.by.startswith("key:")]
    assert "key:oncall-owner" in by_keys, history
    assert not [c for c in history if "mallory" in c.by or "somebody-else" in c.by]


def test_the_cli_url_mode_sends_lora_router_api_key(keyed: Keyed) -> None:
    args = ("rollback", "url-route", "--reason", "INC-9 from the CLI", "--url", keyed.url,
            "--home", str(keyed.home.root))
    refused = cli(*args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "API key" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    weak = cli(*args, env={"LORA_ROUTER_API_KEY": keyed.tokens["app"]})
    assert weak.returncode == 2 and "has role app" in weak.stderr
    done = cli(*args, env={"LORA_ROUTER_API_KEY": keyed.tokens["oncall"]})
    assert done.returncode == 0, done.stderr
    audit = cli("audit", "url-route", "--json", "--url", keyed.url,
                env={"LORA_ROUTER_API_KEY": keyed.tokens["oncall"]})
    assert audit.returncode == 0, audit.stderr
    assert '"by": "key:oncall-owner"' in audit.stdout


def test_the_openai_client_authenticates_with_an_app_key(keyed: Keyed) -> None:
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=keyed.tokens["app"],
                           max_retries=0, timeout=60)
    r = client.completions.create(model="support-triage", prompt="Ticket: refund\nCategory:",
                                  max_tokens=2)
    assert r.model.startswith("support-triage@")
    assert any(m.id == "support-triage" for m in client.models.list())
    anonymous = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="unused", max_retries=0,
                              timeout=60)
    with pytest.raises(openai.AuthenticationError) as caught:
        anonymous.completions.create(model="support-triage", prompt="x", max_tokens=1)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
