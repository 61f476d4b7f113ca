"""``engine=vllm`` without the extra: one clear line, from the factory and from ``serve``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from lora_router.adapters.factory import EngineSpec, build_engine
from lora_router.ground.errors import ConfigError
from lora_router.ground.home import Home
from lora_router.router.engine_spec import engine_spec
from lora_router.router.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                                reason="vLLM is installed here: these check its absence")


def test_the_factory_names_the_missing_extra(copy_home: Home) -> None:
    with pytest.raises(ConfigError, match="vllm"):
        build_engine(EngineSpec(kind="vllm"), copy_home)


def test_vllm_settings_reach_its_config_and_bad_ones_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, copy_home: Home
) -> None:
    monkeypatch.setenv("LORA_ROUTER_ENGINE", "vllm")
    monkeypatch.setenv("LORA_ROUTER_VLLM_MAX_LORAS", "3")
    spec = engine_spec(Settings(home=copy_home.root))
    assert spec.kind == "vllm" and spec.vllm is not None and spec.vllm.max_loras == 3
    monkeypatch.setenv("LORA_ROUTER_VLLM_MAX_CPU_LORAS", "2")  # < max_adapters (8)
    with pytest.raises(ConfigError, match="max_cpu_loras"):
        engine_spec(Settings(home=copy_home.root))


def test_serve_with_engine_vllm_fails_in_one_line(copy_home: Home) -> None:
    env = dict(os.environ, LORA_ROUTER_ENGINE="vllm", HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "lora_router.router.cli.main", "serve", "--home",
         str(copy_home.root), "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "vllm" in out and "Traceback" not in out, out
