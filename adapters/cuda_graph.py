"""Shape buckets for static decoding, and one CUDA graph per bucket replayed each step.

On a GPU the embedded engine's decode step is bound by the CPU launching kernels (hundreds
per step), not by the GPU. A CUDA graph records one step's kernels once and replays them with
a single launch; it needs fixed shapes and fixed storage. So a decode step is padded to a
:class:`GraphKey`: the batch rounded up to a bucket of :func:`batch_buckets`, the attended
cache length to one of :func:`length_buckets`, and whether any row uses an adapter (a
base-only step skips the LoRA kernels). Every key is captured once at start
(:meth:`GraphRunner.capture`, largest first, one memory pool) and replayed by
:meth:`GraphRunner.run`. Without CUDA, or when capture is off or failed, ``run`` calls the
step function eagerly: the same static-shape step, which is how the CPU tests check it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

log = logging.getLogger(__name__)

_SMALLEST_LENGTH = 64


class GraphKey(NamedTuple):
    """The shape of one captured decode step."""

    batch: int  # rows computed (real rows, then padding rows)
    length: int  # cache columns attended
    lora: bool  # False: every row is on the plain base


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, 8, 16, then steps of 16, and ``max_batch``: at most 2x padding below 16
    rows, under 1.5x above."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = {b for b in (1, 2, 4, 8, 16) if b < max_batch}
    sizes.update(range(32, max_batch, 16))
    sizes.add(max_batch)
    return tuple(sorted(sizes))


def length_buckets(max_len: int, smallest: int = _SMALLEST_LENGTH) -> tuple[int, ...]:
    """Powers of two from ``smallest``, and ``max_len``: attention reads at most twice the
    columns it needs, for a few graphs per batch bucket."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    sizes, n = {max_len}, smallest
    while n < max_len:
        sizes.add(n)
        n *= 2
    return tuple(sorted(sizes))


def bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n``."""
    i = bisect.bisect_left(buckets, n)
    if n < 1 or i == len(buckets):
        raise ValueError(f"{n} does not fit the buckets {tuple(buckets)}")
    return buckets[i]


@dataclass(frozen=True)
class Buckets:
    batch: tuple[int, ...]
    length: tuple[int, ...]

    @classmethod
    def for_limits(cls, max_batch: int, max_len: int) -> Buckets:
        return cls(batch_buckets(max_batch), length_buckets(max_len))

    def key(self, rows: int, columns: int, lora: bool) -> GraphKey:
        """The key of a step over ``rows`` rows attending ``columns`` cache columns."""
        return GraphKey(bucket(rows, self.batch), bucket(columns, self.length), lora)

    def keys(self) -> list[GraphKey]:
        """Every key, largest first (later captures reuse the first one's pool memory)."""
        keys = [
            GraphKey(b, n, lora) for b in self.batch for n in self.length for lora in (True, False)
        ]
        return sorted(keys, key=lambda k: (k.batch * k.length, k.lora), reverse=True)


StepFn = Callable[[GraphKey], torch.Tensor]


class GraphRunner:
    """Runs ``step(key)``: replays its CUDA graph when one was captured, else eagerly.

    ``step`` must read its inputs from, and write its state to, storage that outlives the
    graphs (the batcher fills that storage before each :meth:`run`); its returned tensor is
    valid until the next :meth:`run` (graphs share one memory pool).
    """

    def __init__(self, step: StepFn) -> None:
        self._step = step
        self._graphs: dict[GraphKey, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    @property
    def captured(self) -> tuple[GraphKey, ...]:
        return tuple(self._graphs)

    def run(self, key: GraphKey) -> torch.Tensor:
        graph = self._graphs.get(key)
        if graph is None:
            return self._step(key)
        graph[0].replay()
        return graph[1]

    def capture(self, keys: Sequence[GraphKey], device: torch.device) -> bool:
        """Capture a graph per key (CUDA only). On any failure, log it, drop every graph and
        return False: the engine then decodes the same static steps eagerly."""
        if device.type != "cuda" or not keys:
            return False
        pool = torch.cuda.graph_pool_handle()
        try:
            for key in keys:
                self._graphs[key] = self._capture_one(key, pool, device)
        except Exception:  # a capture error must not stop the engine: eager still works
            log.exception("CUDA graph capture failed; decoding without graphs")
            self._graphs.clear()
            torch.cuda.synchronize(device)
            return False
        torch.cuda.synchronize(device)
        return True

    def _capture_one(
        self, key: GraphKey, pool: Any, device: torch.device
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture (lazy inits, workspaces)
            for _ in range(2):
                self._step(key)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls other threads make meanwhile (an adapter upload) are legal
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            out = self._step(key)
        return graph, out

    def drop(self) -> None:
        self._graphs.clear()
