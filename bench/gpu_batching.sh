#!/usr/bin/env bash
# The embedded engine on a GPU, in one command:  bash bench/gpu_batching.sh
# Runs bench/gpu_batching.py (CUDA graphs, mixed adapters, adapter loads, stalls) on a ~888M
# Llama shape, then prints its ONE JSON line on stdout. Needs only the machine's python3 with
# torch, transformers, peft and safetensors: no network (model, tokenizer and adapters are
# built locally) and no install of this repo (the script maps lora_router onto the folders).
# Logs go to $OUT (or ./gpu-out). Extra flags are passed on, e.g. --rounds 5 --skip-eager.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=${PYTHON:-python3}
nvidia-smi -L >&2 || true
timeout 540 $py bench/gpu_batching.py --device cuda --dtype bfloat16 --batch 32 \
  --prompt-tokens 128 --new-tokens 64 --rounds 3 --hidden 2048 --layers 16 \
  --intermediate 5632 --heads 16 --kv-heads 16 "$@" 2>"$out/gpu_batching.log" \
  | tee "$out/gpu_batching.json"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { tail -40 "$out/gpu_batching.log" >&2; exit "$rc"; }
