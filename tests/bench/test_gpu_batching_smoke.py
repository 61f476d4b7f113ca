"""``bench/gpu_batching.py`` runs end to end (tiny sizes, CPU) and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_tiny_run_prints_one_json_line_with_every_figure(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_batching.py"), "--tiny", "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON line, nothing else on stdout
    out = json.loads(lines[0])
    assert out["bench"] == "gpu_batching" and out["device"] == "cpu"
    assert out["decode_mode"] == "static"  # --tiny runs the static-shape path eagerly
    cases = {"hf_base", "base", "single", "mixed4", "mixed8", "eager_base", "eager_mixed4"}
    assert set(out["tokens_per_s"]) == cases == set(out["spread"])
    for lo, hi in out["spread"].values():
        assert 0 < lo <= hi
    for ratio in (
        "base_over_hf_base",
        "mixed4_over_base",
        "base_over_eager_base",
        "load_over_safetensors_floor",
        "load_over_pinned_copy",
    ):
        assert isinstance(out[ratio], float) and out[ratio] > 0, ratio
    assert out["mixed4_vs_eager"] == {"rows": 1.0, "leading_tokens": 1.0}  # float32: exact
    fp32 = out["fp32_graphs_vs_eager"]
    assert (fp32["rows"], fp32["decode_mode"]) == (1.0, "static")
    assert {"ms_median", "safetensors_to_device_ms", "pinned_copy_ms"} <= set(out["load"])
    assert out["stall"]["loads_during"] >= 1 and out["stall"]["max_gap_over_step"] > 0
