"""How fast the drift monitor detects a slice regression, and how often it cries wolf.

Simulated traffic, many seeds. Each request is in the protected slice (``language=es``)
with probability ``--slice-share`` and is labelled (the worst case for a batch tool's
sample sizes is also the best case for it: every request carries its label). For
``--stable-requests`` requests every answer is right with probability ``--base-acc`` (the
gate bar); then the slice's accuracy drops to ``--drop-acc`` while the rest holds.

- **Sequential** (this project): the monitor's own quality tests for one stream,
  :class:`router.drift.quality.StreamQuality` with a guard policy protecting the slice
  (overall + slice test, the policy's defaults for ``min_drop``, ``min_labels`` and the
  false-alarm budget, unless given). An alarm of either test counts, as an alert would.
- **Fixed window** (what batch drift tools do: Evidently-style reports on windows of
  rows): every ``--window`` requests, the slice's accuracy in the window against a
  reference window (the first stable one), a one-sided two-proportion z test (= 2x2
  chi-square) at ``--alpha``. The window grid starts at a random offset per seed, so the
  change does not fall on a window boundary.

Delay is counted in requests of all traffic after the change (every request labelled), up
to and including the one whose label raised the alarm (for the fixed window: the end of
the window that alarmed); also in slice labels. False alarms: alerts raised during the
stable phase, per 10,000 stable requests. A seed not detected within ``--max-after``
requests counts as a miss (its delay is censored at that bound in the percentiles).

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_router.router.drift.events import LogRow  # noqa: E402
from lora_router.router.drift.policy import GuardPolicy  # noqa: E402
from lora_router.router.drift.quality import StreamQuality  # noqa: E402
from lora_router.router.drift.stats import two_proportion_z  # noqa: E402
from lora_router.router.log.sink import percentile  # noqa: E402

SLICE = "language=es"
_T0 = datetime(2026, 11, 1, tzinfo=UTC)
_FEATS = {True: {"language": "es"}, False: {"language": "en"}}


@dataclass(frozen=True, slots=True)
class Run:
    false_alarms: int
    delay: int | None  # requests after the change, None: missed
    delay_slice: int | None


def traffic(rng: random.Random, n: int, share: float, acc_slice: float,
            acc_rest: float) -> list[tuple[bool, bool]]:
    """(in the slice, answered right) per request."""
    out = []
    for _ in range(n):
        es = rng.random() < share
        out.append((es, rng.random() < (acc_slice if es else acc_rest)))
    return out


def _row(i: int, es: bool, correct: bool) -> LogRow:
    return LogRow((0, i), f"r{i}", "m@v1", "route", "live", 1, _FEATS[es], _T0, correct,
                  None, "ok")


def sequential(stable: list[tuple[bool, bool]], after: list[tuple[bool, bool]],
               policy: GuardPolicy, base: float) -> Run:
    quality = StreamQuality()
    quality.configure(policy, {"overall": base, "slice_es": base}, None)
    false_alarms = 0
    for i, (es, ok) in enumerate(stable):
        false_alarms += len(quality.observe(_row(i, es, ok)))
    slice_labels = 0
    for j, (es, ok) in enumerate(after, start=1):
        slice_labels += es
        if quality.observe(_row(len(stable) + j, es, ok)):
            return Run(false_alarms, j, slice_labels)
    return Run(false_alarms, None, None)


def fixed_window(stable: list[tuple[bool, bool]], after: list[tuple[bool, bool]],
                 window: int, alpha: float, offset: int) -> Run:
    seq = stable + after
    change = len(stable)
    ref: tuple[int, int] | None = None
    false_alarms = 0
    for start in range(offset, len(seq) - window + 1, window):
        chunk = seq[start:start + window]
        k = sum(1 for es, ok in chunk if es and ok)
        n = sum(1 for es, _ in chunk if es)
        if ref is None:
            ref = (k, n)
            continue
        _, p = two_proportion_z(ref[0], ref[1], k, n)
        end = start + window
        if p < alpha:
            if end <= change:
                false_alarms += 1
            else:
                delay = end - change
                slice_labels = sum(1 for es, _ in seq[change:end] if es)
                return Run(false_alarms, delay, slice_labels)
    return Run(false_alarms, None, None)


def summarise(runs: list[Run], stable_total: int, cap: int) -> dict[str, Any]:
    delays = sorted(r.delay if r.delay is not None else cap for r in runs)
    slices = sorted(r.delay_slice if r.delay_slice is not None else cap for r in runs)
    fa = sum(r.false_alarms for r in runs)
    return {
        "median": percentile(delays, 0.5), "p95": percentile(delays, 0.95),
        "mean": sum(delays) / len(delays),
        "median_slice": percentile(slices, 0.5), "p95_slice": percentile(slices, 0.95),
        "false_alarms": fa, "false_alarms_per_10k": fa * 10_000 / stable_total,
        "missed": sum(1 for r in runs if r.delay is None),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--stable-requests", type=int, default=10_000)
    ap.add_argument("--slice-share", type=float, default=0.2)
    ap.add_argument("--base-acc", type=float, default=0.87)
    ap.add_argument("--drop-acc", type=float, default=0.60)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--max-after", type=int, default=5000)
    ap.add_argument("--min-drop", type=float, default=None)
    ap.add_argument("--min-labels", type=int, default=None)
    ap.add_argument("--false-alarms-per-10k", type=float, default=None)
    args = ap.parse_args(argv)

    opts = {k: v for k, v in (("min_drop", args.min_drop), ("min_labels", args.min_labels),
                              ("false_alarms_per_10k", args.false_alarms_per_10k))
            if v is not None}
    policy = GuardPolicy(auto_rollback=True, protect=(SLICE,), **opts)
    seq_runs, fw_runs = [], []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rng = random.Random(seed)
        stable = traffic(rng, args.stable_requests, args.slice_share, args.base_acc,
                         args.base_acc)
        after = traffic(rng, args.max_after, args.slice_share, args.drop_acc, args.base_acc)
        seq_runs.append(sequential(stable, after, policy, args.base_acc))
        offset = rng.randrange(args.window)
        fw_runs.append(fixed_window(stable, after, args.window, args.alpha, offset))
    elapsed = time.perf_counter() - t0
    stable_total = args.seeds * args.stable_requests
    seq = summarise(seq_runs, stable_total, args.max_after)
    fw = summarise(fw_runs, stable_total, args.max_after)

    print(f"{args.seeds} seeds x {args.stable_requests:,} stable requests, slice share "
          f"{args.slice_share}, accuracy {args.base_acc} -> {args.drop_acc} on the slice "
          f"({elapsed:.1f} s)")
    print(f"policy: min_drop {policy.min_drop}, min_labels {policy.min_labels}, "
          f"false-alarm budget {policy.false_alarms_per_10k}/10k (overall + slice tests)")
    for name, s in (("sequential (CUSUM)", seq), (f"fixed window {args.window}", fw)):
        print(f"{name:>20}: delay median {s['median']:.0f} / p95 {s['p95']:.0f} requests "
              f"(slice labels {s['median_slice']:.0f} / {s['p95_slice']:.0f}), "
              f"missed {s['missed']}, false alarms {s['false_alarms']} "
              f"= {s['false_alarms_per_10k']:.2f} per 10k stable requests")
    result = {
        "seeds": args.seeds, "stable_requests": args.stable_requests,
        "slice_share": args.slice_share, "base_acc": args.base_acc,
        "drop_acc": args.drop_acc, "window": args.window, "alpha": args.alpha,
        "delay_unit": "requests of all traffic after the change (every request labelled)",
        "policy": policy.model_dump(mode="json"),
        "median_delay_requests": seq["median"], "p95_delay_requests": seq["p95"],
        "mean_delay_requests": seq["mean"],
        "median_delay_slice_labels": seq["median_slice"],
        "p95_delay_slice_labels": seq["p95_slice"],
        "false_alarms": seq["false_alarms"], "false_alarms_per_10k": seq["false_alarms_per_10k"],
        "missed": seq["missed"],
        "fixed_window_median_delay_requests": fw["median"],
        "fixed_window_p95_delay_requests": fw["p95"],
        "fixed_window_median_delay_slice_labels": fw["median_slice"],
        "fixed_window_false_alarms_per_10k": fw["false_alarms_per_10k"],
        "fixed_window_missed": fw["missed"],
    }
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    main()
