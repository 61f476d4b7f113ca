"""The LoRA trainer is bit-for-bit deterministic and independent of where the home lives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lora_router.demo import build as B
from lora_router.ground.errors import BaseModelMismatch, RegistryError
from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from lora_router.training.loop import deterministic_torch
from lora_router.training.lora import ADAPTER_FILES, TrainConfig, train_from_config, train_lora


def _short_config(home: Home, **update: object) -> dict[str, object]:
    """v1's recorded config, cut to a few steps (the same code path, cheaply)."""
    card = RegistryStore(home).get_model_card(B.V1)
    config = dict(RegistryStore(home).get_run_manifest(card.run_manifest).config)
    config.update({"steps": 3, "batch_size": 16, **update})
    return config


def test_same_config_gives_identical_bytes_in_two_homes(demo_home: Home, tmp_path: Path) -> None:
    other = Home.at(shutil.copytree(demo_home.root, tmp_path / "elsewhere" / "home",
                                    ignore=shutil.ignore_patterns("log", "adapters")))
    config = _short_config(demo_home)
    a = train_from_config(config, demo_home, tmp_path / "a")
    b = train_from_config(config, other, tmp_path / "b")
    assert a.files == b.files and a.adapter_hash == b.adapter_hash
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(ADAPTER_FILES)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == B.BASE_NAME
    assert str(tmp_path) not in (tmp_path / "a" / "adapter_config.json").read_text()


def test_a_changed_seed_changes_the_bytes(demo_home: Home, tmp_path: Path) -> None:
    a = train_from_config(_short_config(demo_home), demo_home, tmp_path / "a")
    b = train_from_config(_short_config(demo_home, seed=99), demo_home, tmp_path / "b")
    assert a.files["adapter_model.safetensors"] != b.files["adapter_model.safetensors"]


def test_training_restores_the_callers_torch_state(demo_home: Home, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train_from_config(_short_config(demo_home, torch_threads=1, steps=1), demo_home,
                      tmp_path / "a")
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.rand(3), expected)


def test_refuses_a_different_base_or_dataset(copy_home: Home, tmp_path: Path) -> None:
    config = TrainConfig.model_validate(_short_config(copy_home))
    bad_base = config.model_copy(update={"base_hash": "sha256:" + "0" * 64})
    with pytest.raises(BaseModelMismatch):
        train_lora(bad_base, copy_home, tmp_path / "a")
    train_file = copy_home.dataset_dir(config.dataset_id) / "train.jsonl"
    train_file.write_text(train_file.read_text().replace("billing", "refund", 1))
    with pytest.raises(RegistryError, match="does not match"):
        train_lora(config, copy_home, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_deterministic_torch_fixes_threads_and_seed() -> None:
    with deterministic_torch(3, 1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        first = torch.rand(2)
    with deterministic_torch(3, 1):
        assert torch.equal(torch.rand(2), first)


def test_tokenizer_and_pretraining_are_deterministic(tmp_path: Path) -> None:
    from lora_router.demo import data as D
    from lora_router.demo.pretrain import PretrainConfig, pretrain_base
    from lora_router.demo.tokenizer import save_tokenizer, train_tokenizer
    from lora_router.ground.hashing import sha256_file

    lines = D.pretrain_lines(1, 30)
    cfg = PretrainConfig(steps=2, batch_size=4, block_size=32, warmup_steps=1)
    for name in ("a", "b"):
        tok = train_tokenizer(D.tokenizer_corpus(lines), vocab_size=400)
        save_tokenizer(tok, tmp_path / name)
        pretrain_base(tok, lines, tmp_path / name, cfg)
    for f in ("tokenizer.json", "model.safetensors", "config.json"):
        assert sha256_file(tmp_path / "a" / f) == sha256_file(tmp_path / "b" / f)
