#!/usr/bin/env bash
# Mixed-adapter batching on a GPU: bench/batching.py at two model sizes, one run each.
# Used on the lent GPU machine (its python3 has torch/transformers/peft; the repo is not
# installed there, hence PYTHONPATH). Logs go to $OUT (or ./gpu-out), the JSON lines to stdout.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
nvidia-smi -L
$py -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
common=(--device cuda --dtype bfloat16 --batch 32 --prompt-tokens 128 --new-tokens 64 --repeats 3)
# ~110M Llama shape (the CPU bench's default shape)
timeout 180 $py bench/batching.py "${common[@]}" >"$out/small.log" 2>&1; tail -1 "$out/small.log"
# ~1.1B Llama shape (hidden 2048, 16 layers)
timeout 300 $py bench/batching.py "${common[@]}" --hidden 2048 --layers 16 --intermediate 5632 \
  --heads 16 --kv-heads 16 >"$out/large.log" 2>&1; tail -1 "$out/large.log"
