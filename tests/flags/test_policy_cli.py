"""``lora-router policy set/show/clear`` against the real Redis, directly (REDIS_URL) and
through an admin API (--url): the text from a file, byte for byte; errors in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lora_router.router.flags.factory import home_known_adapters
from lora_router.router.flags.policy_text import DEFAULT_MAX_POLICY_CHARS
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState
from tests.flags.admin_app import serve_admin
from tests.flags.test_cli import (  # noqa: F401 (fixtures)
    cli,
    home,
    stored,
    two_replicas,
)

POLICY = "Refunds: only within 30 days of delivery.\r\nNever promise one outside it.\n"


def policy_file(tmp_path: Path, text: str = POLICY, name: str = "policy.txt") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


def test_set_show_and_clear_directly(
    cli: Any, redis_url: str, tmp_path: Path, two_replicas: None  # noqa: F811
) -> None:
    r = cli("policy", "set", "support", "--file", policy_file(tmp_path), "--reason",
            "refund rule R-12", "--actor", "ann")
    assert r.exit_code == 0, r.output
    sha = hashlib.sha256(POLICY.encode()).hexdigest()
    assert "set-policy support: version 2" in r.stdout
    assert "policy=support/policy@1" in r.stdout and "applied by all 2 replicas" in r.stdout
    assert f"policy: support/policy@1 sha256 {sha}" in r.stdout
    state = stored(redis_url, "support")
    assert state.policy is not None and state.policy.text == POLICY  # \r\n kept as sent
    assert (state.updated_by, state.reason) == ("ann", "refund rule R-12")

    shown = cli("policy", "show", "support")
    assert shown.exit_code == 0, shown.output
    assert "support/policy@1" in shown.stdout and sha in shown.stdout
    assert "Never promise one outside it." in shown.stdout
    data = json.loads(cli("policy", "show", "support", "--json").stdout)
    assert data["policy_version"] == "support/policy@1" and data["route_version"] == 2
    assert data["policy"] == {"version": 1, "sha256": sha, "text": POLICY}
    assert "support/policy@1" in cli("route", "show", "support").stdout
    audit = cli("audit", "support")
    assert "set-policy" in audit.stdout and "policy - -> support/policy@1" in audit.stdout

    r = cli("policy", "clear", "support", "--reason", "legal review")
    assert r.exit_code == 0, r.output
    assert "clear-policy support: version 3" in r.stdout and "policy: none" in r.stdout
    assert stored(redis_url, "support").policy is None
    data = json.loads(cli("policy", "show", "support", "--json").stdout)
    assert (data["policy"], data["last_policy_version"]) == (None, 1)


def test_errors_are_one_line_without_traceback(
    cli: Any, redis_url: str, tmp_path: Path, two_replicas: None  # noqa: F811
) -> None:
    big = policy_file(tmp_path, "x" * (DEFAULT_MAX_POLICY_CHARS + 1), "big.txt")
    r = cli("policy", "set", "support", "--file", big, "--reason", "r")
    assert r.exit_code == 2
    assert (f"error: policy text is {DEFAULT_MAX_POLICY_CHARS + 1:,} characters, over the "
            f"limit of {DEFAULT_MAX_POLICY_CHARS:,} characters") in r.stderr
    assert "Traceback" not in r.output
    r = cli("policy", "set", "support", "--file", str(tmp_path / "nope.txt"), "--reason", "r")
    assert r.exit_code == 2 and "nope.txt" in r.stderr and "Traceback" not in r.output
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    r = cli("policy", "set", "support", "--file", str(tmp_path / "latin1.txt"), "--reason", "r")
    assert r.exit_code == 2 and "not UTF-8 text" in r.stderr
    r = cli("policy", "clear", "support", "--reason", "r")
    assert r.exit_code == 2 and "has no policy text to clear" in r.stderr
    r = cli("policy", "set", "support", "--file", policy_file(tmp_path), "--reason", "r")
    assert r.exit_code == 0, r.output
    r = cli("policy", "set", "support", "--file", policy_file(tmp_path, "new"), "--reason", "r",
            "--expected-version", "1")
    assert r.exit_code == 2 and "at version 2, not 1" in r.stderr  # compare-and-set
    assert stored(redis_url, "support").policy_version == "support/policy@1"


def test_policy_through_a_running_gateway(cli: Any, redis_url: str, home: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    from lora_router.ground.home import Home

    async def make_service() -> RouteService:
        store = RedisRouteStore(redis_url)
        await store.start()
        await store.put(RouteState(route="support", live="support@v1"), 0)
        return RouteService(store, known_adapters=home_known_adapters(Home.at(home)),
                            max_policy_chars=100)

    with serve_admin(make_service) as url:
        r = cli("policy", "set", "support", "--file", policy_file(tmp_path), "--reason", "http",
                "--url", url, "--actor", "bob", REDIS_URL=None)
        assert r.exit_code == 0, r.output
        assert "policy: support/policy@1" in r.stdout
        assert stored(redis_url, "support").updated_by == "loopback (claimed: bob)"
        shown = cli("policy", "show", "support", "--url", url, REDIS_URL=None)
        assert shown.exit_code == 0 and "Never promise one outside it." in shown.stdout
        big = policy_file(tmp_path, "y" * 101, "big.txt")
        r = cli("policy", "set", "support", "--file", big, "--reason", "r", "--url", url,
                REDIS_URL=None)
        assert r.exit_code == 2 and "over the limit of 100 characters" in r.stderr
        assert "Traceback" not in r.output
        r = cli("policy", "clear", "support", "--reason", "r", "--url", url, REDIS_URL=None)
        assert r.exit_code == 0 and "policy: none" in r.stdout
