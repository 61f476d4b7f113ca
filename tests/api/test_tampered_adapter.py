"""Registry enforcement at load (issue 5): a tampered or unregistered adapter is never loaded.

Over real HTTP on a private copy of the demo home: a route change to a tampered adapter is
refused with the integrity reason and the route keeps serving what it had; a gateway whose
routes reference a tampered adapter refuses to start, and `lora-router serve` says why in
one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from lora_router.demo.task import format_prompt
from lora_router.ground.errors import AdapterIntegrityError
from lora_router.ground.home import Home
from lora_router.router.app import create_app
from lora_router.router.settings import Settings
from tests.api.conftest import Gateway, adapter_ids, start_gateway, write_routes
from tests.conftest import free_port

PROMPT = format_prompt("I was charged twice on my last invoice, please fix the payment")
WEIGHTS = "adapter_model.safetensors"


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def tampered(copy_home: Home) -> Home:
    """A copy of the demo home in which one byte of v2's weights differs from its card."""
    _, v2 = adapter_ids(copy_home)
    flip_byte(copy_home.adapter_dir(v2) / WEIGHTS)
    return copy_home


@pytest.fixture
def gw(tampered: Home, tmp_path: Path) -> Iterator[Gateway]:
    v1, _ = adapter_ids(tampered)
    routes = write_routes(tmp_path / "routes.yaml", {"support-triage": {"live": v1}})
    gw = start_gateway(Settings(home=tampered.root, port=free_port(), routes_file=routes,
                                torch_threads=1))
    yield gw
    gw.stop()


def served_by(gw: Gateway) -> str:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0,
                           timeout=60)
    raw = client.completions.with_raw_response.create(
        model="support-triage", prompt=PROMPT, max_tokens=3
    )
    assert raw.parse().model == raw.headers["x-model-id"]
    return raw.headers["x-model-id"]


@pytest.mark.parametrize("action", ["canary", "set-live"])
def test_a_change_to_a_tampered_adapter_is_refused_and_the_route_keeps_serving(
    gw: Gateway, tampered: Home, action: str
) -> None:
    v1, v2 = adapter_ids(tampered)
    body = {"adapter": v2, "reason": "try v2", "percent": 100}
    if action == "set-live":
        del body["percent"]
    r = httpx.post(f"{gw.url}/admin/routes/support-triage/{action}", json=body, timeout=60)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "route_change_refused"
    assert "adapter_integrity_error" in err["message"] and WEIGHTS in err["message"]
    assert v2 in err["message"]
    route = httpx.get(f"{gw.url}/admin/routes/support-triage", timeout=10).json()
    assert (route["version"], route["live"], route["canary"]) == (1, v1, None)
    assert v2 not in gw.components.engine.resident_adapters()
    assert [served_by(gw) for _ in range(3)] == [v1, v1, v1]
    assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
    audit = httpx.get(f"{gw.url}/admin/routes/support-triage/audit", timeout=10).json()
    assert [e["action"] for e in audit["entries"]] == ["seed"]


def test_an_adapter_without_a_model_card_cannot_be_routed_to(gw: Gateway, tampered: Home) -> None:
    _, v2 = adapter_ids(tampered)
    tampered.model_card_path(v2).unlink()
    r = httpx.post(f"{gw.url}/admin/routes/support-triage/set-live",
                   json={"adapter": v2, "reason": "unregistered"}, timeout=60)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "adapter_not_found"
    assert served_by(gw) == adapter_ids(tampered)[0]


async def test_a_gateway_whose_routes_reference_a_tampered_adapter_does_not_start(
    tampered: Home, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = adapter_ids(tampered)
    routes = write_routes(tmp_path / "routes.yaml",
                          {"support-triage": {"live": v1, "rollback_target": v2}})
    settings = Settings(home=tampered.root, port=free_port(), routes_file=routes,
                        torch_threads=1)
    app = create_app(settings, recorder=lambda record: None)
    with pytest.raises(AdapterIntegrityError, match=WEIGHTS):
        async with app.router.lifespan_context(app):
            pytest.fail("the gateway started with a tampered referenced adapter")
    assert f"gateway cannot start: adapter {v2} refused" in caplog.text


def test_serve_refuses_a_tampered_routed_adapter_in_one_line(
    tampered: Home, tmp_path: Path
) -> None:
    v1, v2 = adapter_ids(tampered)
    routes = write_routes(tmp_path / "routes.yaml",
                          {"support-triage": {"live": v1, "rollback_target": v2}})
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home", str(tampered.root),
         "--routes", str(routes), "--port", str(free_port())],
        env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"adapter {v2} refused" in proc.stderr and WEIGHTS in proc.stderr
