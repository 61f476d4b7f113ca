"""Mixed-adapter batching: the engine's slot path against the plain base and peft.

Builds a Llama-shaped model with random weights (~100M parameters by default) and rank-16
LoRA adapters on every linear layer (made and saved by peft, loaded by the engine from
disk), then measures greedy tokens/s at a fixed batch for:

- the engine (one worker thread, LoRA from slot tensors): plain base, one adapter,
  4 adapters mixed, 8 adapters mixed, and the 4-adapter requests served per adapter group
  one after another;
- transformers ``generate`` on the plain base, peft with one adapter, and peft's own
  mixed-batch path (``generate(adapter_names=...)``) on the same weights.

Repeats are interleaved across configurations (the CPU is shared) and the median is kept.
Ends by printing ONE JSON line with the figures and ratios.

    python bench/batching.py            # ~100M model, batch 32, 32 new tokens
    python bench/batching.py --quick    # smaller model, fewer repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import copy
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


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "cat", "bmm", "segment"],
        help="how the engine applies a mixed batch's adapters",
    )
    p.add_argument("--skip-peft", action="store_true", help="engine figures only")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller model (hidden 384, 6 layers, vocab 8000), 2 repeats",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.intermediate = 384, 6, 1024
        args.heads = args.kv_heads = 6
        args.vocab, args.repeats = 8000, 2
    return args


def _tokenizer(vocab: int) -> Any:
    """A word-level tokenizer whose vocabulary is the model's: ``t0 .. t{V-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="t0"))
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
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _adapters(base: Any, n: int, rank: int, out: Path) -> tuple[Any, list[Path]]:
    """``n`` random rank-``rank`` adapters on every linear layer, saved by peft."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(base, cfg, adapter_name="a0")
    for i in range(1, n):
        peft_model.add_adapter(f"a{i}", cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # small but non-zero, so each adapter changes the output
                param.normal_(std=0.02)
    peft_model.save_pretrained(out)
    return peft_model.eval(), [out / f"a{i}" for i in range(n)]


def _prompts(args: argparse.Namespace) -> list[str]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, args.vocab, (args.batch, args.prompt_tokens), generator=g)
    return [" ".join(f"t{i}" for i in row) for row in ids.tolist()]


class Runs:
    """Interleaved repeats: every configuration once per round, median per configuration."""

    def __init__(self) -> None:
        self.cases: dict[str, Callable[[int], Awaitable[int]]] = {}
        self.times: dict[str, list[float]] = {}  # wall-clock tokens/s
        self.cpu: dict[str, list[float]] = {}  # tokens per CPU-second of this process

    def add(self, name: str, fn: Callable[[int], Awaitable[int]]) -> None:
        self.cases[name] = fn
        self.times[name] = []
        self.cpu[name] = []

    async def run(self, repeats: int, new_tokens: int, log: logging.Logger) -> dict[str, float]:
        for fn in self.cases.values():  # warm-up: same shapes, a few tokens
            await fn(min(4, new_tokens))
        log.info("warmed up %s", list(self.cases))
        for r in range(repeats):
            for name, fn in self.cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                tokens = await fn(new_tokens)
                self.times[name].append(tokens / (time.perf_counter() - t0))
                self.cpu[name].append(tokens / (time.process_time() - c0))
            log.info("round %d: %s", r + 1, {k: round(v[-1], 1) for k, v in self.times.items()})
        return {k: statistics.median(v) for k, v in self.times.items()}

    def cpu_medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.cpu.items()}


async def _bench(args: argparse.Namespace, log: logging.Logger) -> dict[str, Any]:
    from lora_router.adapters.engine import BaseInfo, GenerationRequest, SamplingParams
    from lora_router.adapters.peft_engine import (
        EmbeddedEngine,
        EngineConfig,
        resolve_device,
        resolve_dtype,
    )

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = _tokenizer(args.vocab)
    model = _model(args, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    plain = copy.deepcopy(model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    peft_model, paths = _adapters(copy.deepcopy(model), 8, args.rank, tmp)
    base = BaseInfo(
        name="bench",
        sha256="-",
        max_context=1024,
        vocab_size=args.vocab,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
    )
    config = EngineConfig(
        max_batch_size=args.batch,
        max_lora_rank=args.rank,
        max_adapters=8,
        request_timeout_s=3600.0,
        mixed_strategy=args.strategy,
    )
    engine = EmbeddedEngine(model, tokenizer, base, config)
    await engine.start()
    for i, path in enumerate(paths):
        await engine.load_adapter(f"a{i}@v1", path)
    prompts = _prompts(args)
    n = args.new_tokens

    def requests(groups: int, tokens: int = n) -> list[GenerationRequest]:
        params = SamplingParams(max_tokens=tokens)
        return [
            GenerationRequest(f"r{i}", p, None if groups == 0 else f"a{i % groups}@v1", params)
            for i, p in enumerate(prompts)
        ]

    def engine_case(groups: int, serial: bool = False) -> Callable[[int], Awaitable[int]]:
        async def go(tokens: int) -> int:
            reqs = requests(groups, tokens)
            parts = [[r for r in reqs if r.adapter_id == f"a{g}@v1"] for g in range(groups)]
            total = 0
            for part in parts if serial else [reqs]:
                total += sum(r.completion_tokens for r in await engine.generate_batch(part))
            return total

        return go

    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)

    def hf(m: Any, adapter: str | None = None, **kw: Any) -> Callable[[int], Awaitable[int]]:
        async def go(tokens: int) -> int:
            if adapter is not None:
                m.set_adapter(adapter)
            with torch.inference_mode():
                out = m.generate(
                    **enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **kw
                )
            if out.is_cuda:
                torch.cuda.synchronize()
            return int((out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0])

        return go

    runs = Runs()
    runs.add("base", engine_case(0))
    runs.add("single", engine_case(1))
    runs.add("mixed4", engine_case(4))
    runs.add("mixed8", engine_case(8))
    runs.add("serial4", engine_case(4, serial=True))
    if not args.skip_peft:
        runs.add("hf_base", hf(plain))
        runs.add("peft_single", hf(peft_model, adapter="a0"))
        runs.add(
            "peft_mixed4", hf(peft_model, adapter_names=[f"a{i % 4}" for i in range(args.batch)])
        )

    # Sanity: the slot path and peft agree on the mixed batch (greedy, same weights).
    agree = None
    if not args.skip_peft:
        got = [r.text for r in await engine.generate_batch(requests(4))]
        with torch.inference_mode():
            ref = peft_model.generate(
                **enc,
                max_new_tokens=n,
                do_sample=False,
                adapter_names=[f"a{i % 4}" for i in range(args.batch)],
            )
        want = tokenizer.batch_decode(ref[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        agree = sum(g == w for g, w in zip(got, want, strict=True)) / len(got)

    tps = await runs.run(args.repeats, n, log)
    await engine.close()
    return {
        "tps": tps,
        "cpu_tps": runs.cpu_medians(),
        "n_params": n_params,
        "mixed4_rows_equal_peft": agree,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _ratio(tps: dict[str, float], a: str, b: str) -> float | None:
    return round(tps[a] / tps[b], 3) if a in tps and b in tps else None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    log = logging.getLogger("bench.batching")
    args = _args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = asyncio.run(_bench(args, log))
    tps = res["tps"]
    out = {
        "bench": "batching",
        "model": {
            "params_m": round(res["n_params"] / 1e6, 1),
            "hidden": args.hidden,
            "layers": args.layers,
            "vocab": args.vocab,
            "rank": args.rank,
            "device": res["device"],
            "dtype": res["dtype"],
        },
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "prompt_tokens": args.prompt_tokens,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "strategy": args.strategy,
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        # less sensitive to other processes on a shared CPU (CPU time of this process, not wall)
        "tokens_per_cpu_s": {k: round(v, 1) for k, v in res["cpu_tps"].items()},
        "mixed4_over_single": _ratio(tps, "mixed4", "single"),
        "mixed8_over_single": _ratio(tps, "mixed8", "single"),
        "single_over_base": _ratio(tps, "single", "base"),
        "mixed4_over_base": _ratio(tps, "mixed4", "base"),
        "mixed4_over_serial4": _ratio(tps, "mixed4", "serial4"),
        "mixed4_over_peft_mixed4": _ratio(tps, "mixed4", "peft_mixed4"),
        "single_over_peft_single": _ratio(tps, "single", "peft_single"),
        "base_over_hf_base": _ratio(tps, "base", "hf_base"),
        "peft_single_over_base": _ratio(tps, "peft_single", "hf_base"),
        "peft_mixed4_over_peft_single": _ratio(tps, "peft_mixed4", "peft_single"),
        "mixed4_rows_equal_peft": res["mixed4_rows_equal_peft"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
