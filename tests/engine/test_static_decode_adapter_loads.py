"""Adapter loads as one buffer (the weights file read once): one transfer per adapter, the
same slot contents as before, the same refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_router.adapters.adapter_files import WEIGHTS_FILE, linear_shapes, read_adapter
from lora_router.adapters.packing import read_packed
from lora_router.adapters.peft_engine import EmbeddedEngine
from lora_router.adapters.slots import SlotBank
from lora_router.ground.errors import AdapterIncompatible
from tests.engine.tiny import TinyHome, load_base

CPU = torch.device("cpu")


def _slots(bank: SlotBank) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{part}": t.clone()
        for name, mod in bank.modules.items()
        for part, t in (("a", mod.lora_a), ("b", mod.lora_b))
        if t is not None
    }


def test_every_module_is_a_view_of_one_flat_buffer(tiny: TinyHome) -> None:
    for adapter_id in tiny.adapter_ids:
        path = tiny.home.adapter_dir(adapter_id)
        packed = read_packed(path, linear_shapes(load_base(tiny.home.base_dir)), 8, CPU)
        stored = load_file(str(path / WEIGHTS_FILE))
        assert len(packed.entries) * 2 == len(stored)
        base, end = packed.flat.data_ptr(), packed.flat.data_ptr() + packed.nbytes
        assert packed.nbytes == (path / WEIGHTS_FILE).stat().st_size  # the file, read once
        for entry, a, b in packed.modules():
            for view in (a, b):
                assert base <= view.data_ptr() < end  # no tensor of its own
            key = f"base_model.model.{entry.name}.lora_{{}}.weight"
            assert torch.equal(a, stored[key.format("A")])
            assert torch.equal(b, stored[key.format("B")])
        assert not packed.flat.is_pinned()  # pinned (page-locked) only for a CUDA engine
        assert packed.ready is None and packed.upload(CPU) is packed


def test_packed_install_gives_the_slots_read_adapter_gives(tiny: TinyHome) -> None:
    banks = []
    for packed in (True, False):
        model = load_base(tiny.home.base_dir)
        shapes = linear_shapes(model)
        bank = SlotBank(model, num_slots=4, max_rank=8)
        for a in tiny.adapter_ids:  # ranks 4, 8, 2 (rslora), 8 with rank/alpha patterns
            path = tiny.home.adapter_dir(a)
            bank.install(
                a, read_packed(path, shapes, 8, CPU) if packed else read_adapter(path, shapes, 8)
            )
        banks.append(_slots(bank))
    assert banks[0].keys() == banks[1].keys()
    assert all(torch.equal(banks[0][k], banks[1][k]) for k in banks[0])


def test_a_reused_slot_holds_only_the_new_adapter(tiny: TinyHome) -> None:
    model = load_base(tiny.home.base_dir)
    shapes = linear_shapes(model)
    bank = SlotBank(model, num_slots=1, max_rank=8)
    slot = bank.install("beta@v1", read_packed(tiny.home.adapter_dir("beta@v1"), shapes, 8, CPU))
    bank.free(slot)
    # alpha (rank 4, two modules) lands where beta (rank 8, every module) was
    alpha = read_packed(tiny.home.adapter_dir("alpha@v1"), shapes, 8, CPU)
    assert bank.install("alpha@v1", alpha) == slot
    fresh_model = load_base(tiny.home.base_dir)
    fresh = SlotBank(fresh_model, num_slots=1, max_rank=8)
    fresh.install("beta@v1", read_packed(tiny.home.adapter_dir("beta@v1"), shapes, 8, CPU))
    fresh.free(slot)
    fresh.install("alpha@v1", read_adapter(tiny.home.adapter_dir("alpha@v1"), shapes, 8))
    got, want = _slots(bank), _slots(fresh)
    assert all(torch.equal(got[k], want[k]) for k in want)
    beta_only = "model.layers.0.mlp.down_proj.a"
    assert not got[beta_only].any()


@pytest.mark.parametrize("adapter_id", ["gamma@v1", "delta@v1"])
async def test_engine_loads_report_the_packed_adapter(
    roomy_engine: EmbeddedEngine, tiny: TinyHome, adapter_id: str
) -> None:
    info = await roomy_engine.load_adapter(adapter_id, tiny.home.adapter_dir(adapter_id))
    path = tiny.home.adapter_dir(adapter_id)
    want = read_adapter(path, linear_shapes(load_base(tiny.home.base_dir)), 8)
    assert (info.rank, info.alpha, info.target_modules, info.size_bytes) == (
        want.rank, want.alpha, want.target_modules, want.size_bytes
    )


def _rewritten(tiny: TinyHome, tmp_path: Path, src: str, change: object) -> Path:
    out = tmp_path / src
    shutil.copytree(tiny.home.adapter_dir(src), out)
    tensors = load_file(str(out / WEIGHTS_FILE))
    save_file(change(tensors), str(out / WEIGHTS_FILE))  # type: ignore[operator]
    return out


def _half_precision(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # lora_A in bfloat16, lora_B in float16: two dtypes in one file
    return {
        k: t.to(torch.bfloat16 if ".lora_A" in k else torch.float16) for k, t in tensors.items()
    }


def test_half_precision_files_give_the_slots_read_adapter_gives(
    tiny: TinyHome, tmp_path: Path
) -> None:
    path = _rewritten(tiny, tmp_path, "delta@v1", _half_precision)
    got = []
    for packed in (True, False):
        model = load_base(tiny.home.base_dir)
        shapes = linear_shapes(model)
        bank = SlotBank(model, num_slots=1, max_rank=8)
        weights = read_packed(path, shapes, 8, CPU) if packed else read_adapter(path, shapes, 8)
        bank.install("d", weights)
        got.append(_slots(bank))
    assert all(torch.equal(got[0][k], got[1][k]) for k in got[1])


def test_a_non_finite_value_is_refused_naming_its_module(
    tiny: TinyHome, tmp_path: Path
) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"
        tensors[key][3, 1] = float("nan")
        return tensors

    shapes = linear_shapes(load_base(tiny.home.base_dir))
    for i, dtypes in enumerate([poison, lambda t: _half_precision(poison(t))]):
        # one dtype: one pass over the data; mixed: tensor by tensor
        path = _rewritten(tiny, tmp_path / str(i), "alpha@v1", dtypes)
        with pytest.raises(AdapterIncompatible) as err:
            read_packed(path, shapes, 8, CPU)
        assert "layers.2.self_attn.v_proj" in err.value.message
        assert "non-finite" in err.value.message


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) - 3], id="truncated"),
        pytest.param(lambda b: b + b"\0" * 4, id="trailing-bytes"),
        pytest.param(lambda b: (10**9).to_bytes(8, "little") + b[8:], id="header-length"),
        pytest.param(lambda b: b[:8] + b"[" + b[9:], id="header-json"),
    ],
)
def test_a_malformed_weights_file_is_refused(
    tiny: TinyHome, tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "bad"
    shutil.copytree(tiny.home.adapter_dir("alpha@v1"), path)
    raw = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(damage(raw))  # type: ignore[operator]
    shapes = linear_shapes(load_base(tiny.home.base_dir))
    with pytest.raises(AdapterIncompatible) as err:
        read_packed(path, shapes, 8, CPU)
    assert "unreadable" in err.value.message
