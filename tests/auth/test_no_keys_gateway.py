"""The real gateway with no key at all keeps the safe default: the admin API answers
loopback clients only (and records a claimed name as a claim), ``/v1`` needs no key; the
first key, made with the CLI while it runs, closes both to callers without a key, from
any address.

The gateway binds every interface; requests to 127.0.0.1 come from a loopback client,
requests to the machine's other address (when it has one) from a non-loopback one.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.settings import Settings
from tests.api.conftest import adapter_ids, serve_app
from tests.api.test_admin_access import non_loopback_address
from tests.auth.conftest import bearer, cli, error_of, private_home
from tests.conftest import free_port

COMPLETION = {"model": "support-triage", "prompt": "Ticket: refund please\nCategory:",
              "max_tokens": 2}


def until(status: int, url: str, body: dict[str, object]) -> httpx.Response:
    """POST ``body`` until the answer has ``status`` (the gateway re-reads its keys)."""
    deadline = time.monotonic() + 30
    while (r := httpx.post(url, json=body, timeout=60)).status_code != status:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)
    return r


def test_no_key_loopback_only_admin_and_an_open_v1_until_the_first_key(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(demo_home, tmp_path / "home")
    _, v2 = adapter_ids(home)
    addr = non_loopback_address()
    port = free_port()
    settings = Settings(home=home.root, host="0.0.0.0", port=port, keys_refresh_s=0.2,
                        admin_allowed_hosts=(addr,) if addr else ())
    served = serve_app(create_app(settings), "0.0.0.0", port)
    local, remote = f"http://127.0.0.1:{port}", f"http://{addr}:{port}"
    try:
        r = httpx.post(f"{local}/admin/routes/support-triage/canary", timeout=60,
                       json={"adapter": v2, "percent": 10, "reason": "try v2"},
                       headers={"x-lora-router-actor": "alice"})
        assert r.status_code == 200, r.text
        assert r.json()["state"]["updated_by"] == "loopback (claimed: alice)"
        if addr is not None:
            refused = httpx.get(f"{remote}/admin/routes", timeout=30)
            assert refused.status_code == 403, refused.text
            assert error_of(refused)["code"] == "forbidden"
            assert "loopback clients" in refused.text and "keys create" in refused.text
        assert httpx.post(f"{local}/v1/completions", json=COMPLETION,
                          timeout=60).status_code == 200

        out = cli("keys", "create", "--role", "oncall", "--name", "first", "--home",
                  str(home.root))
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        until(401, f"{local}/v1/completions", COMPLETION)  # keys_refresh_s
        missing = httpx.get(f"{local}/admin/routes", timeout=30)
        assert missing.status_code == 401 and error_of(missing)["code"] == "missing_api_key"
        assert httpx.post(f"{local}/v1/completions", json=COMPLETION, headers=bearer(token),
                          timeout=60).status_code == 200
        for base in (local, remote) if addr else (local,):  # a key works from any address
            r = httpx.get(f"{base}/admin/routes", headers=bearer(token), timeout=30)
            assert r.status_code == 200, (base, r.text)
    finally:
        served.stop()
