"""The engine refuses to start on a base whose files no longer match the pinned hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lora_router.adapters.factory import build_engine
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.ground.errors import BaseModelMismatch, ConfigError, HomeNotInitialised
from lora_router.ground.home import Home
from lora_router.router.engine_spec import engine_spec
from lora_router.router.settings import Settings
from tests.engine.conftest import CONFIG
from tests.engine.tiny import TinyHome


def _copy_home(tiny: TinyHome, tmp_path: Path) -> Home:
    shutil.copytree(tiny.home.root, tmp_path / "home")
    return Home.at(tmp_path / "home")


def test_changed_base_file_refuses_to_start(tiny: TinyHome, tmp_path: Path) -> None:
    home = _copy_home(tiny, tmp_path)
    cfg = home.base_dir / "config.json"
    before = cfg.read_text()
    cfg.write_text(before.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert cfg.read_text() != before
    with pytest.raises(BaseModelMismatch) as err:
        EmbeddedEngine.from_home(home, CONFIG)
    assert "config.json" in err.value.message
    assert err.value.detail["changed"] == ["config.json"]


def test_changed_weights_refuse_to_start_through_the_factory(
    tiny: TinyHome, tmp_path: Path
) -> None:
    home = _copy_home(tiny, tmp_path)
    weights = home.base_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BaseModelMismatch):
        build_engine(engine_spec(Settings(home=home.root)), home)


def test_unpinned_home_refuses_to_start(tiny: TinyHome, tmp_path: Path) -> None:
    home = _copy_home(tiny, tmp_path)
    home.base_lock.unlink()
    with pytest.raises(HomeNotInitialised):
        EmbeddedEngine.from_home(home, CONFIG)


def test_factory_builds_the_embedded_engine_from_settings(tiny: TinyHome) -> None:
    settings = Settings(home=tiny.home.root, max_adapters=3, max_lora_rank=8, device="cpu")
    engine = build_engine(engine_spec(settings), tiny.home)
    assert isinstance(engine, EmbeddedEngine)
    assert engine.base.name == "tiny-llama"
    assert engine.base.sha256.startswith("sha256:")
    assert engine.base.device == "cpu" and engine.base.dtype == "float32"
    assert engine.base.max_context == 96
    assert engine.config.max_adapters == 3


def test_factory_refuses_vllm(tiny: TinyHome) -> None:
    class VllmSettings(Settings):
        engine: str = "vllm"

    with pytest.raises(ConfigError, match=r"needs the vLLM package.*vllm. extra"):
        build_engine(engine_spec(VllmSettings(home=tiny.home.root)), tiny.home)
