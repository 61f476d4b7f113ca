"""Configuring remote engines: the backends setting, the engine API's guard (an API key on
a non-loopback host, checked by ``serve --engine-api`` and by the server itself), and a
remote gateway that checks only the base files it reads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from lora_router.adapters.engine_server import create_engine_app
from lora_router.adapters.factory import build_engine
from lora_router.adapters.remote import NoBackend, RemoteConfig, RemoteEngine
from lora_router.ground.errors import BaseModelMismatch
from lora_router.ground.home import Home
from lora_router.router.engine_spec import engine_spec
from lora_router.router.settings import Settings
from tests.conftest import free_port

CLI = [sys.executable, "-m", "lora_router.router.cli.main", "serve"]
KEY = "engine-s3cret"


def test_backends_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORA_ROUTER_ENGINE", "remote")
    monkeypatch.setenv("LORA_ROUTER_ENGINE_BACKENDS", " http://a:8000/, https://b:9000 ")
    monkeypatch.setenv("LORA_ROUTER_ENGINE_API_KEY", KEY)
    settings = Settings()
    assert settings.engine_backends == ("http://a:8000", "https://b:9000")
    spec = engine_spec(settings)
    assert spec.kind == "remote" and spec.remote.backends == settings.engine_backends
    assert spec.remote.api_key == KEY and spec.remote.max_adapters == settings.max_adapters


@pytest.mark.parametrize("backends, why", [
    ("", "LORA_ROUTER_ENGINE_BACKENDS"),
    ("a:8000", r"http:// or https://"),
    ("http://a:1,http://a:1/", "listed twice"),
])
def test_a_remote_engine_without_usable_backends_is_refused(backends: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(engine="remote", engine_backends=backends)


def test_the_engine_api_on_a_public_host_needs_an_api_key(demo_home: Home) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_ROUTER_")}
    out = subprocess.run(
        [*CLI, "--engine-api", "--home", str(demo_home.root), "--host", "0.0.0.0",
         "--port", str(free_port())], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    assert "LORA_ROUTER_ENGINE_API_KEY" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def keyed_server(demo_home: Home) -> Iterator[str]:
    """The engine API with an API key, served by uvicorn in a thread of this process."""
    spec = engine_spec(Settings(home=demo_home.root, device="cpu", torch_threads=1))
    app = create_engine_app(lambda: build_engine(spec, demo_home), api_key=KEY)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                          log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=server.run, name="keyed-engine-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "engine API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(60)


async def test_the_engine_api_key_is_required_and_sent(
    demo_home: Home, keyed_server: str
) -> None:
    async with httpx.AsyncClient(base_url=keyed_server) as client:
        assert (await client.get("/v1/models")).status_code == 401
        wrong = await client.get("/v1/models", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get("/health")).status_code == 200
    config = RemoteConfig(backends=(keyed_server,), start_timeout_s=0.5, probe_interval_s=0.1)
    keyless = await asyncio.to_thread(RemoteEngine.from_home, demo_home, config)
    with pytest.raises(NoBackend, match="API key"):
        await keyless.start()
    keyed = await asyncio.to_thread(RemoteEngine.from_home, demo_home,
                                    RemoteConfig(backends=(keyed_server,), api_key=KEY))
    await keyed.start()
    try:
        assert [b["up"] for b in keyed.backends()] == [True]
    finally:
        await keyed.close()


def test_a_remote_gateway_checks_the_tokenizer_against_the_pin(copy_home: Home) -> None:
    (copy_home.base_dir / "model.safetensors").unlink()  # weights live with the backends
    RemoteEngine.from_home(copy_home, RemoteConfig(backends=("http://127.0.0.1:9",)))
    tokenizer = copy_home.base_dir / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + " ")
    with pytest.raises(BaseModelMismatch, match=r"tokenizer\.json"):
        RemoteEngine.from_home(copy_home, RemoteConfig(backends=("http://127.0.0.1:9",)))
