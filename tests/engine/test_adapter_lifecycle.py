"""Adapters load and unload at run time; bad ones are refused with nothing half-loaded."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_router.adapters.engine import GenerationRequest, SamplingParams
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.ground.errors import (
    AdapterIncompatible,
    AdapterNotFound,
    AdapterNotResident,
    NoFreeSlot,
)
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import ADAPTERS, TinyHome, build_adapter

WEIGHTS = "adapter_model.safetensors"


def _req(adapter_id: str | None, prompt: str = PROMPTS[0], n: int = 8) -> GenerationRequest:
    return GenerationRequest("rid", prompt, adapter_id, SamplingParams(max_tokens=n))


def _slot_state(engine: EmbeddedEngine) -> dict[str, torch.Tensor]:
    bank = engine._bank
    return {
        f"{name}.{part}": t.clone()
        for name, mod in bank.modules.items()
        for part, t in (("a", mod.lora_a), ("b", mod.lora_b))
        if t is not None
    }


async def test_load_and_unload_while_another_adapter_serves(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, oracle: Oracle
) -> None:
    engine = roomy_engine
    await engine.load_adapter("alpha@v1", tiny.home.adapter_dir("alpha@v1"))
    want = oracle.greedy("alpha@v1", PROMPTS[1], 8)
    stop = asyncio.Event()
    served: list[str] = []

    async def serve_alpha() -> None:
        while not stop.is_set():
            served.append((await engine.generate(_req("alpha@v1", PROMPTS[1]))).text)

    async def churn() -> None:
        for _ in range(3):
            for adapter_id in ("beta@v1", "gamma@v1"):
                await engine.load_adapter(adapter_id, tiny.home.adapter_dir(adapter_id))
                res = await engine.generate(_req(adapter_id))
                assert res.adapter_id == adapter_id
                await engine.unload_adapter(adapter_id)
        stop.set()

    await asyncio.gather(churn(), serve_alpha(), serve_alpha(), serve_alpha())
    assert len(served) >= 3
    assert set(served) == {want}  # zero failures, and every answer unchanged
    assert set(engine.resident_adapters()) == {"alpha@v1"}


async def test_unload_drains_in_flight_requests_then_frees_the_slot(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, oracle: Oracle
) -> None:
    engine = roomy_engine
    info = await engine.load_adapter("beta@v1", tiny.home.adapter_dir("beta@v1"))
    in_flight = asyncio.ensure_future(engine.generate(_req("beta@v1", PROMPTS[2], 40)))
    await asyncio.sleep(0.02)  # admitted
    await engine.unload_adapter("beta@v1")
    result = await in_flight  # drained: it finished before the slot was freed
    assert result.text == oracle.greedy("beta@v1", PROMPTS[2], 40)
    assert "beta@v1" not in engine.resident_adapters()
    with pytest.raises(AdapterNotResident):
        await engine.generate(_req("beta@v1"))
    for mod in engine._bank.modules.values():
        if mod.lora_a is not None and mod.lora_b is not None:
            assert not mod.lora_a[info.slot].any() and not mod.lora_b[info.slot].any()
    assert info.slot in engine._bank.free_slots()
    await engine.unload_adapter("beta@v1")  # unknown id: no-op


async def test_loading_a_resident_id_returns_its_info(
    engine: EmbeddedEngine, tiny: TinyHome
) -> None:
    before = engine.resident_adapters()["alpha@v1"]
    again = await engine.load_adapter("alpha@v1", tiny.home.adapter_dir("alpha@v1"))
    assert again == before
    assert before.rank == 4 and before.target_modules == ("q_proj", "v_proj")


async def test_no_free_slot_when_full(engine: EmbeddedEngine, tiny: TinyHome) -> None:
    resident, free = set(engine.resident_adapters()), engine._bank.free_slots()
    assert free == []
    with pytest.raises(NoFreeSlot):
        await engine.load_adapter("extra@v1", tiny.home.adapter_dir("alpha@v1"))
    assert set(engine.resident_adapters()) == resident
    res = await engine.generate(_req("gamma@v1"))
    assert res.adapter_id == "gamma@v1"


def _copy(tiny: TinyHome, tmp_path: Path, name: str, src: str = "alpha@v1") -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny.home.adapter_dir(src), dst)
    return dst


def _edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def _edit_weights(
    path: Path, rename: tuple[str, str] | None = None, reshape: str | None = None
) -> None:
    tensors = load_file(str(path / WEIGHTS))
    if rename is not None:
        for key in [k for k in tensors if rename[0] in k]:
            tensors[key.replace(*rename)] = tensors.pop(key)
    if reshape is not None:
        key = next(k for k in tensors if reshape in k)
        tensors[key] = torch.randn(tensors[key].shape[0], 32)
    save_file(tensors, str(path / WEIGHTS))


def _wrong_shape(tiny: TinyHome, tmp_path: Path) -> Path:
    p = _copy(tiny, tmp_path, "wrong-shape")
    _edit_weights(p, reshape="layers.1.self_attn.q_proj.lora_A")
    return p


def _missing_target(tiny: TinyHome, tmp_path: Path) -> Path:
    p = _copy(tiny, tmp_path, "missing-target")
    _edit_config(p, target_modules=["q_proj", "v_proj", "w_proj"])
    return p


def _module_not_in_base(tiny: TinyHome, tmp_path: Path) -> Path:
    p = _copy(tiny, tmp_path, "foreign-module")
    _edit_weights(p, rename=("layers.2.", "layers.9."))
    return p


def _rank_too_big(tiny: TinyHome, tmp_path: Path) -> Path:
    p = tmp_path / "rank16"
    build_adapter(tiny.home.base_dir, p, seed=7, r=16, lora_alpha=16, target_modules=["q_proj"])
    return p


def _dora(tiny: TinyHome, tmp_path: Path) -> Path:
    p = _copy(tiny, tmp_path, "dora")
    _edit_config(p, use_dora=True)
    return p


def _not_lora(tiny: TinyHome, tmp_path: Path) -> Path:
    p = _copy(tiny, tmp_path, "ia3")
    _edit_config(p, peft_type="IA3")
    return p


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_wrong_shape, "q_proj"),
        (_missing_target, "w_proj"),
        (_module_not_in_base, "layers.9"),
        (_rank_too_big, "max_lora_rank"),
        (_dora, "use_dora"),
        (_not_lora, "IA3"),
    ],
)
async def test_mismatched_adapter_is_refused_and_nothing_changes(
    roomy_engine: EmbeddedEngine,
    tiny: TinyHome,
    tmp_path: Path,
    make: object,
    needle: str,
    oracle: Oracle,
) -> None:
    engine = roomy_engine
    await engine.load_adapter("alpha@v1", tiny.home.adapter_dir("alpha@v1"))
    resident, free = engine.resident_adapters(), engine._bank.free_slots()
    slots = _slot_state(engine)
    path = make(tiny, tmp_path)  # type: ignore[operator]
    with pytest.raises(AdapterIncompatible) as err:
        await engine.load_adapter("bad@v1", path)
    assert needle in err.value.message
    assert engine.resident_adapters() == resident
    assert engine._bank.free_slots() == free
    after = _slot_state(engine)
    assert after.keys() == slots.keys()
    assert all(torch.equal(after[k], slots[k]) for k in slots)
    res = await engine.generate(_req("alpha@v1", PROMPTS[1]))
    assert res.text == oracle.greedy("alpha@v1", PROMPTS[1], 8)


async def test_wrong_shape_error_names_module_and_shapes(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, tmp_path: Path
) -> None:
    with pytest.raises(AdapterIncompatible) as err:
        await roomy_engine.load_adapter("bad@v1", _wrong_shape(tiny, tmp_path))
    msg = err.value.message
    assert "model.layers.1.self_attn.q_proj" in msg and "(4, 32)" in msg and "(4, 64)" in msg


async def test_missing_adapter_directory(roomy_engine: EmbeddedEngine, tmp_path: Path) -> None:
    with pytest.raises(AdapterNotFound):
        await roomy_engine.load_adapter("ghost@v1", tmp_path / "nope")
    assert roomy_engine.resident_adapters() == {}


def test_every_fixture_adapter_has_its_own_rank() -> None:
    assert sorted({cfg["r"] for cfg in ADAPTERS.values()}) == [2, 4, 8]
