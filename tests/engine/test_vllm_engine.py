"""The vLLM engine's parts that run without vLLM: the import guard, its settings, the mapping
of requests and adapters onto vLLM's API, results read back, and the in-flight ledger.

vLLM itself runs only in the contract suite's ``vllm`` entry (CUDA hosts with the extra).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest
from peft import PeftModel
from safetensors.torch import load_file

from lora_router.adapters.adapter_files import linear_shapes, read_adapter
from lora_router.adapters.engine import GenerationRequest, SamplingParams
from lora_router.adapters.inflight import InFlight
from lora_router.adapters.vllm_engine import VllmEngine, load_vllm
from lora_router.adapters.vllm_support import (
    VLLM_RANKS,
    Completion,
    LoraIds,
    VllmConfig,
    base_linear_shapes,
    engine_kwargs,
    eos_token_ids,
    logprob_floats,
    missing_vllm_message,
    render_chat,
    sampling_kwargs,
    vllm_rank,
    write_vllm_adapter,
)
from lora_router.ground.errors import ConfigError, EngineError, EngineOverloaded
from tests.engine.oracle import PROMPTS, Oracle
from tests.engine.tiny import TinyHome, load_base

# -- the import guard --------------------------------------------------------------------


def test_without_vllm_the_engine_refuses_to_build_in_one_line(
    tiny: TinyHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # absent, even where it is installed
    with pytest.raises(ConfigError) as err:
        VllmEngine.from_home(tiny.home, VllmConfig())
    msg = err.value.message
    assert "\n" not in msg
    assert "vllm" in msg and "pip install 'lora-router[vllm]'" in msg and "embedded" in msg
    with pytest.raises(ConfigError):
        load_vllm()


def test_a_broken_vllm_install_is_named_in_the_line() -> None:
    msg = missing_vllm_message(ImportError("libcudart.so.12: cannot open shared object file\nx"))
    assert "libcudart.so.12" in msg and "\n" not in msg
    assert "module vllm.lora is missing" in missing_vllm_message(
        ModuleNotFoundError("No module named 'vllm.lora'")
    )


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "needle"),
    [
        ({"max_adapters": 8, "max_cpu_loras": 4}, "max_cpu_loras"),
        ({"max_loras": 8, "max_cpu_loras": 6, "max_adapters": 4}, "max_cpu_loras"),
        ({"max_lora_rank": 0}, "max_lora_rank"),
        ({"max_lora_rank": 1024}, "max_lora_rank"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_loras": 0}, "max_loras"),
        ({"max_queue": 0}, "max_queue"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_settings_vllm_would_refuse_or_misuse_fail_at_start(
    knobs: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        VllmConfig(**knobs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ours", "theirs"), [(1, 1), (4, 8), (8, 8), (12, 16), (17, 32),
                                              (300, 320), (512, 512)])
def test_max_lora_rank_becomes_the_next_rank_vllm_accepts(ours: int, theirs: int) -> None:
    assert vllm_rank(ours) == theirs and theirs in VLLM_RANKS


def test_engine_args_enable_runtime_lora_and_keep_every_resident_adapter_cached() -> None:
    c = VllmConfig(max_adapters=6, max_loras=2, max_lora_rank=12, max_num_seqs=48,
                   gpu_memory_utilization=0.5, extra_args={"enforce_eager": True, "seed": 7})
    kw = engine_kwargs(c, Path("/home/base"), 4096)
    assert kw["model"] == kw["tokenizer"] == "/home/base"
    assert kw["enable_lora"] is True
    assert (kw["max_loras"], kw["max_lora_rank"], kw["max_cpu_loras"]) == (2, 16, 6)
    assert kw["max_model_len"] == 4096 and kw["max_num_seqs"] == 48
    assert kw["gpu_memory_utilization"] == 0.5
    assert kw["enforce_eager"] is True and kw["seed"] == 7  # extra_args win
    assert engine_kwargs(VllmConfig(max_adapters=2, max_loras=4), Path("/b"), 8)[
        "max_cpu_loras"] == 4  # vLLM needs max_cpu_loras >= max_loras


def test_sampling_params_map_onto_vllms() -> None:
    greedy = sampling_kwargs(SamplingParams(max_tokens=7))
    assert greedy == {
        "n": 1, "max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": None,
        "include_stop_str_in_output": False, "skip_special_tokens": True, "logprobs": 0,
    }
    sampled = sampling_kwargs(
        SamplingParams(max_tokens=3, temperature=0.7, top_p=0.9, seed=11, stop=("\n", "END"))
    )
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, 11)
    assert sampled["stop"] == ["\n", "END"]


def test_lora_int_ids_are_stable_per_adapter_and_never_shared() -> None:
    ids = LoraIds()
    a, b = ids("alpha@v1"), ids("beta@v1")
    assert (a, b) == (1, 2)  # vLLM wants ids >= 1
    assert ids("alpha@v1") == a and ids("beta@v1") == b
    assert ids("alpha@v2") == 3


# -- adapters ----------------------------------------------------------------------------


def test_base_shapes_read_from_the_config_equal_the_loaded_models(tiny: TinyHome) -> None:
    assert base_linear_shapes(tiny.home.base_dir) == linear_shapes(load_base(tiny.home.base_dir))


@pytest.mark.parametrize("adapter_id", ["alpha@v1", "beta@v1", "gamma@v1", "delta@v1"])
def test_the_adapter_vllm_reads_gives_peft_the_same_outputs(
    tiny: TinyHome, oracle: Oracle, tmp_path: Path, adapter_id: str
) -> None:
    # delta has rank_pattern / alpha_pattern and gamma rsLoRA, which vLLM would ignore or
    # apply globally: the rewritten adapter is a plain LoRA with the scaling folded in.
    shapes = base_linear_shapes(tiny.home.base_dir)
    weights = read_adapter(tiny.home.adapter_dir(adapter_id), shapes, 8)
    out = write_vllm_adapter(weights, tmp_path / "vllm")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == weights.rank and not cfg["use_rslora"]
    assert "rank_pattern" not in cfg and "alpha_pattern" not in cfg
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert all(t.shape[0 if ".lora_A." in k else 1] == weights.rank for k, t in tensors.items())
    model = PeftModel.from_pretrained(load_base(tiny.home.base_dir), out).eval()
    for prompt in PROMPTS:
        enc = oracle.tokenizer(prompt, return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=12, do_sample=False)
        got = oracle.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:],
                                      skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert got == oracle.greedy(adapter_id, prompt, 12), (adapter_id, prompt)


# -- results -----------------------------------------------------------------------------


class _Logprob:  # vllm.logprobs.Logprob's field the engine reads
    def __init__(self, logprob: float) -> None:
        self.logprob = logprob


def test_delta_outputs_sum_to_the_result() -> None:
    done = Completion(frozenset({1}))
    done.add("he", [5, 6], logprob_floats([{5: _Logprob(math.log(0.5))},
                                           {6: _Logprob(math.log(0.25)), 9: _Logprob(-1.0)}]),
             None)
    assert done.finish is None
    done.add("llo", [7, 1], [{7: math.log(0.75)}, {1: math.log(0.5)}], "stop")
    res = done.result(GenerationRequest("r1", "p", "alpha@v1"), prompt_tokens=4)
    assert (res.text, res.finish_reason, res.prompt_tokens) == ("hello", "stop", 4)
    assert res.completion_tokens == 3  # the EOS it stopped on is not counted
    assert res.confidence == pytest.approx((0.5 + 0.25 + 0.75 + 0.5) / 4)
    assert (res.request_id, res.adapter_id) == ("r1", "alpha@v1")
    capped = Completion(frozenset({1}))
    capped.add("x", [5], None, "length")
    assert capped.result(GenerationRequest("r", "p"), 1).completion_tokens == 1
    with pytest.raises(EngineError):
        Completion(frozenset()).add("", [], None, "abort")


def test_eos_ids_and_chat_prompt_follow_the_base(tiny: TinyHome, oracle: Oracle) -> None:
    tok = oracle.tokenizer
    assert eos_token_ids(tiny.home.base_dir, tok) == {tok.eos_token_id}
    msgs = [{"role": "system", "content": "triage"}, {"role": "user", "content": "jammed"}]
    assert render_chat(tok, msgs) == "system: triage\nuser: jammed\nassistant:"


# -- the in-flight ledger ----------------------------------------------------------------


async def test_the_queue_counts_admitted_requests_until_released() -> None:
    ledger = InFlight(max_queue=2)
    a, b = ledger.admit("alpha@v1"), ledger.admit(None)
    with pytest.raises(EngineOverloaded):
        ledger.admit("alpha@v1")
    batch = ledger.admit("alpha@v1", queued=False)  # generate_batch: not counted
    assert ledger.queued == 2 and ledger.running("alpha@v1") == 2
    ledger.release(a)
    ledger.release(a)  # again: no-op
    assert ledger.queued == 1 and ledger.running("alpha@v1") == 1
    ledger.admit(None)
    for t in (b, batch):
        ledger.release(t)
    assert ledger.running("alpha@v1") == 0


async def test_a_drain_waits_for_the_adapters_requests_only() -> None:
    ledger = InFlight(max_queue=8)
    assert await ledger.drain("alpha@v1", 0.0)  # nothing in flight
    t1, t2 = ledger.admit("alpha@v1"), ledger.admit("alpha@v1")
    other = ledger.admit("beta@v1")
    drain = asyncio.ensure_future(ledger.drain("alpha@v1", 30.0))
    ledger.release(t1)
    await asyncio.sleep(0)
    assert not drain.done()
    ledger.release(t2)
    assert await drain is True
    assert ledger.running("beta@v1") == 1 and not other.failed.is_set()
    assert await ledger.drain("beta@v1", 0.01) is False


async def test_failing_an_adapter_signals_its_requests_only() -> None:
    ledger = InFlight(max_queue=8)
    a, b = ledger.admit("alpha@v1"), ledger.admit("beta@v1")
    assert ledger.fail(EngineError("unloaded"), "alpha@v1") == 1
    assert a.failed.is_set() and isinstance(a.error, EngineError) and not b.failed.is_set()
    assert ledger.fail(EngineError("closed"), every=True) == 2
    assert a.error.message == "unloaded" and b.error is not None  # the first reason stays
