"""The embedded engine on a GPU: CUDA-graph decoding, mixed adapters, adapter loads.

Everything is built locally (no network): a Llama-shaped model with random weights, a
word-level tokenizer over its vocabulary, and eight rank-``r`` LoRA adapters on every linear
layer made by peft and saved to a temporary directory, which the engine loads from disk.
In one run, on the same weights and prompts, with rounds interleaved across cases:

- tokens/s of ``transformers`` ``generate`` on the plain base (``hf_base``) and of the engine
  (CUDA graphs on a GPU) on the plain base, one adapter, 4 and 8 adapters mixed per batch;
  and of the eager engine (``cuda_graphs`` off) on the plain base and 4 mixed;
- adapter loads: ``load_adapter`` until its copies are done on the device, against the floor
  of reading the same safetensors file straight to the device, and the pinned copy alone;
- stalls: the longest gap between tokens of streaming (mixed-4) rows while other adapters
  are unloaded and loaded, over the median gap (one decode step);
- correctness: mixed-4 greedy rows of the graph engine against the eager one, on the big
  model (bf16) and on a small float32 one, where they must be equal.

Ends by printing ONE JSON line (medians, spread = [min, max] over rounds, ratios).

    python bench/gpu_batching.py           # ~888M Llama shape, batch 32, prompt 128, 64 tokens
    python bench/gpu_batching.py --tiny    # seconds on a CPU: the smoke test's run
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("bench.gpu_batching")
_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=16)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loads", type=int, default=6, help="adapter loads timed")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--static", action="store_true", help="static-shape decoding on a CPU too (eagerly)"
    )
    p.add_argument("--skip-eager", action="store_true", help="no eager-engine comparison")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, CPU smoke run (--static)")
    args = p.parse_args(argv)
    if args.tiny:
        args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads = 64, 2, 128, 4, 2
        args.vocab, args.rank, args.batch, args.prompt_tokens, args.new_tokens = 512, 4, 4, 8, 8
        args.rounds, args.loads, args.static = 2, 2, True
    return args


def _ensure_namespace() -> None:
    """Where the repo is not installed (the GPU machine), map ``lora_router.<folder>`` onto
    the repo's folders through a link tree in a temporary directory."""
    try:
        import lora_router.adapters.peft_engine  # noqa: F401
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("lora_router"):
            raise
        root = Path(__file__).resolve().parents[1]
        tree = Path(tempfile.mkdtemp(prefix="lora-router-ns-")) / "lora_router"
        tree.mkdir()
        for folder in ("ground", "registry", "adapters"):
            (tree / folder).symlink_to(root / folder, target_is_directory=True)
        sys.path.insert(0, str(tree.parent))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- what is measured ---------------------------------------------------------------------
def _tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="t0", pad_token="t0", padding_side="left"
    )


def _model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=1024,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    with torch.device(device):  # initialised where it runs: seconds, not minutes, at ~1B
        model = LlamaForCausalLM(cfg)
    model = model.to(dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _adapters(base: Any, rank: int, out: Path) -> list[Path]:
    """Eight random rank-``rank`` adapters on every linear layer, saved by peft."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=_TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(base, cfg, adapter_name="a0")
    for i in range(1, 8):
        peft_model.add_adapter(f"a{i}", cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # small but non-zero, so each adapter changes the output
                param.normal_(std=0.02)
    peft_model.save_pretrained(out)
    return [out / f"a{i}" for i in range(8)]


def _prompts(args: argparse.Namespace, n: int) -> list[str]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, args.vocab, (n, args.prompt_tokens), generator=g)
    return [" ".join(f"t{i}" for i in row) for row in ids.tolist()]


class Rounds:
    """Each case once per round, rounds interleaved; tokens/s per run kept."""

    def __init__(self) -> None:
        self.cases: dict[str, Callable[[int], Awaitable[int]]] = {}
        self.tps: dict[str, list[float]] = {}
        self.cpu_tps: dict[str, list[float]] = {}

    def add(self, name: str, fn: Callable[[int], Awaitable[int]]) -> None:
        self.cases[name], self.tps[name], self.cpu_tps[name] = fn, [], []

    async def run(self, rounds: int, tokens: int) -> None:
        for fn in self.cases.values():  # warm-up: the same shapes, fewer tokens
            await fn(min(4, tokens))
        for r in range(rounds):
            for name, fn in self.cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                n = await fn(tokens)
                self.tps[name].append(n / (time.perf_counter() - t0))
                self.cpu_tps[name].append(n / max(time.process_time() - c0, 1e-9))
            log.info("round %d: %s", r + 1, {k: round(v[-1], 1) for k, v in self.tps.items()})

    def summary(self) -> dict[str, Any]:
        return {
            "tokens_per_s": {k: round(statistics.median(v), 1) for k, v in self.tps.items()},
            "tokens_per_cpu_s": {
                k: round(statistics.median(v), 1) for k, v in self.cpu_tps.items()
            },
            "spread": {k: [round(min(v), 1), round(max(v), 1)] for k, v in self.tps.items()},
        }


def _requests(prompts: list[str], groups: int, tokens: int) -> list[Any]:
    from lora_router.adapters.engine import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=tokens)
    return [
        GenerationRequest(f"r{i}", p, None if groups == 0 else f"a{i % groups}@v1", params)
        for i, p in enumerate(prompts)
    ]


def _engine_case(engine: Any, prompts: list[str], groups: int) -> Callable[[int], Awaitable[int]]:
    async def go(tokens: int) -> int:
        results = await engine.generate_batch(_requests(prompts, groups, tokens))
        return sum(r.completion_tokens for r in results)

    return go


def _hf_case(model: Any, enc: Any) -> Callable[[int], Awaitable[int]]:
    async def go(tokens: int) -> int:
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
        _sync(out.device)
        return int((out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0])

    return go


async def _agreement(a: Any, b: Any, prompts: list[str], tokens: int) -> dict[str, float]:
    """Mixed-4 greedy rows of two engines: whole rows equal, and the share of leading tokens
    equal before the first difference (bf16 on random weights can flip near-ties)."""
    ra = await a.generate_batch(_requests(prompts, 4, tokens))
    rb = await b.generate_batch(_requests(prompts, 4, tokens))
    rows, lead = 0, 0.0
    for x, y in zip(ra, rb, strict=True):
        tx, ty = x.text.split(), y.text.split()
        rows += tx == ty
        same = next((i for i, (p, q) in enumerate(zip(tx, ty, strict=False)) if p != q), len(tx))
        lead += same / max(len(tx), 1)
    return {"rows": round(rows / len(ra), 3), "leading_tokens": round(lead / len(ra), 3)}


async def _loads(engine: Any, paths: list[Path], n: int, device: torch.device) -> dict[str, Any]:
    """``load_adapter`` (until the device has the weights) against reading to the device."""
    from safetensors.torch import load_file

    weights = [p / "adapter_model.safetensors" for p in paths]
    total, reported, floor = [], [], []
    for i in range(n + 1):  # the first of each is a warm-up (page cache, allocator)
        aid, path = f"a{i % len(paths)}@v1", paths[i % len(paths)]
        await engine.unload_adapter(aid)
        t0 = time.perf_counter()
        info = await engine.load_adapter(aid, path)
        _sync(device)
        total.append((time.perf_counter() - t0) * 1000)
        reported.append(info.load_ms)
        t0 = time.perf_counter()
        load_file(str(weights[i % len(paths)]), device=str(device))
        _sync(device)
        floor.append((time.perf_counter() - t0) * 1000)
    nbytes = weights[0].stat().st_size
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=device.type == "cuda")
    copies = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        host.to(device, non_blocking=True)
        _sync(device)
        copies.append((time.perf_counter() - t0) * 1000)
    med = statistics.median
    return {
        "ms_median": round(med(total[1:]), 2),
        "ms_min": round(min(total[1:]), 2),
        "ms_max": round(max(total[1:]), 2),
        "engine_reported_ms_median": round(med(reported[1:]), 2),
        "safetensors_to_device_ms": round(med(floor[1:]), 2),
        "pinned_copy_ms": round(med(copies[1:]), 3),
        "adapter_mb": round(nbytes / 1e6, 2),
    }


async def _stall(engine: Any, prompts: list[str], paths: list[Path], tokens: int) -> dict[str, Any]:
    """Streaming mixed-4 rows while adapters a4..a7 are unloaded and loaded again."""
    arrivals: list[float] = []

    async def consume(i: int, req: Any) -> None:
        async for _ in engine.stream(req):
            if i == 0:
                arrivals.append(time.perf_counter())

    reqs = _requests(prompts, 4, tokens)
    streams = asyncio.gather(*(consume(i, r) for i, r in enumerate(reqs)))
    loads = 0
    while loads == 0 or not streams.done():  # at least one load, however fast the rows
        i = 4 + loads % 4
        await engine.unload_adapter(f"a{i}@v1")
        await engine.load_adapter(f"a{i}@v1", paths[i])
        loads += 1
    await streams
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    step = statistics.median(gaps) if gaps else 0.0
    worst = max(gaps, default=0.0)
    return {
        "step_ms_p50": round(step, 3),
        "max_gap_ms": round(worst, 3),
        "loads_during": loads,
        "max_gap_over_step": round(worst / step, 2) if step else None,
    }


# -- the run ------------------------------------------------------------------------------
async def _engine(model: Any, tokenizer: Any, args: argparse.Namespace, **cfg: Any) -> Any:
    from lora_router.adapters.engine import BaseInfo
    from lora_router.adapters.peft_engine import EmbeddedEngine, EngineConfig

    p = next(model.parameters())
    base = BaseInfo("bench", "-", 1024, args.vocab, str(p.device), str(p.dtype)[6:])
    cfg.setdefault("static_decode", True if args.static else None)
    config = EngineConfig(
        max_batch_size=args.batch,
        max_lora_rank=args.rank,
        max_adapters=8,
        request_timeout_s=3600.0,
        **cfg,
    )
    engine = EmbeddedEngine(model, tokenizer, base, config)
    await engine.start()
    return engine


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from lora_router.adapters.peft_engine import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = _tokenizer(args.vocab)
    model = _model(args, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    plain = copy.deepcopy(model)
    eager_model = None if args.skip_eager else copy.deepcopy(model)
    paths = _adapters(copy.deepcopy(model), args.rank, Path(tempfile.mkdtemp(prefix="gpu-b-")))
    _sync(device)
    t0 = time.perf_counter()
    engine = await _engine(model, tokenizer, args)
    prepare_s = time.perf_counter() - t0
    engines = [engine]
    if eager_model is not None:
        engines.append(await _engine(eager_model, tokenizer, args, cuda_graphs=False,
                                     static_decode=False))
    for e in engines:
        for i, path in enumerate(paths):
            await e.load_adapter(f"a{i}@v1", path)
    prompts = _prompts(args, args.batch)
    rounds = Rounds()
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    rounds.add("hf_base", _hf_case(plain, enc))
    for name, groups in (("base", 0), ("single", 1), ("mixed4", 4), ("mixed8", 8)):
        rounds.add(name, _engine_case(engine, prompts, groups))
    if len(engines) > 1:
        rounds.add("eager_base", _engine_case(engines[1], prompts, 0))
        rounds.add("eager_mixed4", _engine_case(engines[1], prompts, 4))
    await rounds.run(args.rounds, args.new_tokens)
    out: dict[str, Any] = {"decode_mode": engine.decode_mode, "prepare_s": round(prepare_s, 2)}
    out |= rounds.summary()
    if len(engines) > 1:
        out["mixed4_vs_eager"] = await _agreement(engine, engines[1], prompts, args.new_tokens)
    out["load"] = await _loads(engine, paths, args.loads, device)
    out["stall"] = await _stall(engine, prompts, paths, 4 * args.new_tokens)
    for e in engines:
        await e.close()
    out["fp32_graphs_vs_eager"] = await _fp32_check(args, device)
    out["n_params"] = n_params
    out["device"], out["dtype"] = str(device), str(dtype).removeprefix("torch.")
    return out


async def _fp32_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Graphs against eager decoding in float32 on a small model: rows must be equal (bf16
    on the big one can flip near-ties; float32 here leaves only summation order)."""
    small = argparse.Namespace(**vars(args))
    small.hidden, small.layers, small.intermediate, small.heads, small.kv_heads = 256, 4, 512, 4, 2
    small.vocab, small.rank = 2048, 8
    tokenizer = _tokenizer(small.vocab)
    model = _model(small, device, torch.float32)
    twin = copy.deepcopy(model)
    paths = _adapters(copy.deepcopy(model), small.rank, Path(tempfile.mkdtemp(prefix="gpu-b-")))
    engines = [
        await _engine(model, tokenizer, small),
        await _engine(twin, tokenizer, small, cuda_graphs=False, static_decode=False),
    ]
    for e in engines:
        for i, path in enumerate(paths[:4]):
            await e.load_adapter(f"a{i}@v1", path)
    out = await _agreement(engines[0], engines[1], _prompts(small, small.batch), 24)
    out["decode_mode"] = engines[0].decode_mode
    for e in engines:
        await e.close()
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _report(args: argparse.Namespace, res: dict[str, Any], wall_s: float) -> dict[str, Any]:
    import transformers

    tps = res["tokens_per_s"]
    load = res["load"]
    return {
        "bench": "gpu_batching",
        "device": res["device"],
        "gpu": torch.cuda.get_device_name() if res["device"].startswith("cuda") else None,
        "dtype": res["dtype"],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": {
            "params_m": round(res["n_params"] / 1e6, 1),
            "hidden": args.hidden,
            "layers": args.layers,
            "vocab": args.vocab,
            "rank": args.rank,
        },
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "decode_mode": res["decode_mode"],
        "prepare_s": res["prepare_s"],
        "tokens_per_s": tps,
        "tokens_per_cpu_s": res["tokens_per_cpu_s"],
        "spread": res["spread"],
        "base_over_hf_base": _ratio(tps.get("base"), tps.get("hf_base")),
        "mixed4_over_base": _ratio(tps.get("mixed4"), tps.get("base")),
        "single_over_base": _ratio(tps.get("single"), tps.get("base")),
        "mixed8_over_base": _ratio(tps.get("mixed8"), tps.get("base")),
        "base_over_eager_base": _ratio(tps.get("base"), tps.get("eager_base")),
        "mixed4_over_eager_mixed4": _ratio(tps.get("mixed4"), tps.get("eager_mixed4")),
        "mixed4_vs_eager": res.get("mixed4_vs_eager"),
        "fp32_graphs_vs_eager": res["fp32_graphs_vs_eager"],
        "load": load,
        "load_over_safetensors_floor": _ratio(load["ms_median"], load["safetensors_to_device_ms"]),
        "load_over_pinned_copy": _ratio(load["ms_median"], load["pinned_copy_ms"]),
        "stall": res["stall"],
        "wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = _args(argv)
    _ensure_namespace()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = asyncio.run(_bench(args))
    print(json.dumps(_report(args, res, time.perf_counter() - t0)))


if __name__ == "__main__":
    main()
