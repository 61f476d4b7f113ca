"""``lora-router serve`` on a non-loopback address: refused without a key (unless the
insecure flag), started when a key exists, and it says how the gateway is guarded."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from lora_router.ground.home import Home
from lora_router.router.auth.roles import Role
from tests.auth.conftest import CLI, cli, mint, private_home
from tests.conftest import free_port


def test_a_non_loopback_host_without_a_key_is_refused(demo_home: Home, tmp_path: Path) -> None:
    home = private_home(demo_home, tmp_path / "home").root
    out = cli("serve", "--home", str(home), "--host", "0.0.0.0", "--port", str(free_port()))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr + out.stdout
    assert "refusing to serve on 0.0.0.0 with no API key" in lines[0]
    assert "keys create" in lines[0] and "--insecure-open-admin" in lines[0]


def test_a_non_loopback_host_with_a_key_starts_and_says_how_it_is_guarded(
    demo_home: Home, tmp_path: Path
) -> None:
    home = private_home(demo_home, tmp_path / "home").root
    mint(home, Role.ADMIN, "root-owner")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LORA_ROUTER_ADMIN_TOKEN", "DATABASE_URL", "LORA_ROUTER_REQUIRE_APP_KEY")}
    proc = subprocess.Popen(
        [*CLI, "serve", "--home", str(home), "--host", "0.0.0.0", "--port", str(free_port()),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed before the model loads
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert first.startswith("access: 1 API key(s)"), (first, err)
    assert "needs an oncall or admin key from any address" in first
    assert "/v1 needs an app key" in first
    assert "Traceback" not in err
