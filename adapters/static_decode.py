"""Continuous batching with static shapes, so each decode step can be one CUDA graph replay.

The eager :class:`~adapters.batcher.Decoder` left-pads rows to a shared length and rebuilds
its cache on every join and prune. Here every shape a step touches is fixed in advance:

- a KV cache preallocated once (:class:`StaticKV`): per layer ``[rows, heads, max_len, dim]``.
  Row ``i`` of the running batch owns line ``i``; its token at position ``p`` sits in column
  ``p`` (no padding inside a line), so a row's position is also its next write column;
- per-row inputs in one device tensor ``io [3, rows]``: last token, position, adapter slot;
- a step computes the first ``batch`` lines and attends the first ``length`` columns
  (a :class:`~adapters.cuda_graph.GraphKey`): the real rows, then padding rows (pad token,
  position 0, slot 0) on free lines, which write only their own column 0.
  Each row attends columns ``<= position`` through an additive ``[batch, 1, 1, length]`` mask.

Rows join between steps: they are prefilled eagerly (the eager decoder's left-padded prefill)
and their keys/values are copied, shifted to column 0, into the next free lines
(:meth:`StaticDecoder.merge`). Rows leave between steps: the last lines move into the holes
so the running rows stay ``0 .. n-1`` (:meth:`StaticDecoder.prune`). LoRA is applied by the
slot bank's fixed-shape path (:meth:`SlotBank.use_static`). Only full-attention decoder
models qualify (:func:`static_unsupported`); others keep the eager decoder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lora_router.adapters.batcher import Decoder, RunningBatch, kv_tensors, slab_cache
from lora_router.adapters.cuda_graph import Buckets, GraphKey, GraphRunner
from lora_router.adapters.decoding import Row
from lora_router.ground.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class LayerShape(NamedTuple):
    heads: int
    head_dim: int
    dtype: torch.dtype


def static_unsupported(model: nn.Module) -> str | None:
    """Why ``model`` cannot decode with a plain full-attention static cache (None if it can)."""
    cfg = getattr(model, "config", None)
    layer_types = getattr(cfg, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        return f"layer types {sorted(set(layer_types))} (only full attention is supported)"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "sliding-window attention"
    if getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder model"
    return None


class _RowLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer of :class:`StaticKV` seen by the model: writes each row's new key/value at
    that row's position (a scatter on device indices), returns the first ``length`` columns."""

    def __init__(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, length: int
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._k, self._v, self._pos, self._length = k, v, pos, length

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, _, d = key_states.shape
        idx = self._pos.view(b, 1, 1, 1).expand(b, h, 1, d)
        self._k[:b].scatter_(2, idx, key_states)
        self._v[:b].scatter_(2, idx, value_states)
        self.keys, self.values = self._k[:b, :, : self._length], self._v[:b, :, : self._length]
        self.is_initialized, self.device = True, key_states.device
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length


class StaticKV:
    """The preallocated cache: per layer ``k``/``v`` ``[rows, heads, max_len, head_dim]``."""

    def __init__(
        self, shapes: Sequence[LayerShape], rows: int, max_len: int, device: torch.device
    ) -> None:
        self.rows, self.max_len = rows, max_len
        self.dtype = shapes[0].dtype

        def buf(s: LayerShape) -> torch.Tensor:
            return torch.zeros((rows, s.heads, max_len, s.head_dim), dtype=s.dtype, device=device)

        self.k = [buf(s) for s in shapes]
        self.v = [buf(s) for s in shapes]

    def cache(self, batch: int, length: int, pos: torch.Tensor) -> DynamicCache:
        """The cache object for one step over lines ``:batch`` and columns ``:length``."""
        cache = DynamicCache()
        cache.layer_class_to_replicate = None
        cache.layers = [_RowLayer(k, v, pos, length) for k, v in zip(self.k, self.v, strict=True)]
        return cache

    def place(
        self,
        start: int,
        kvs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        rows: torch.Tensor,
        lengths: torch.Tensor,
    ) -> None:
        """Copy prefilled rows ``rows`` of left-padded ``kvs`` (``[B, H, width, D]``, row ``j``
        valid in its last ``lengths[j]`` columns) into lines ``start ..``, shifted to column 0.
        Columns past a row's length get copies of its last key (never attended)."""
        width = kvs[0][0].shape[2]
        if width > self.max_len or start + rows.numel() > self.rows:
            raise EngineError(f"static cache overflow: {start + rows.numel()} rows, {width} cols")
        n = rows.numel()
        cols = torch.arange(width, device=rows.device)[None, :] + (width - lengths)[:, None]
        cols = cols.clamp_(max=width - 1)  # [n, width]: the source column of each column
        for (kp, vp), kb, vb in zip(kvs, self.k, self.v, strict=True):
            g = cols[:, None, :, None].expand(n, kp.shape[1], width, kp.shape[3])
            kb[start : start + n, :, :width].copy_(kp.index_select(0, rows).gather(2, g))
            vb[start : start + n, :, :width].copy_(vp.index_select(0, rows).gather(2, g))

    def move(self, src: Sequence[int], dst: Sequence[int], columns: int) -> None:
        """Copy lines ``src`` to lines ``dst`` (first ``columns`` columns)."""
        device = self.k[0].device
        s = torch.tensor(list(src), dtype=torch.long, device=device)
        d = torch.tensor(list(dst), dtype=torch.long, device=device)
        for buf in (*self.k, *self.v):
            view = buf[:, :, :columns]
            view.index_copy_(0, d, view.index_select(0, s))


@dataclass(eq=False)
class StaticBatch:
    """The running rows, in line order: ``rows[i]`` owns line ``i`` of the static cache."""

    rows: list[Row]
    pos: list[int]  # each row's next position (= its next cache column)
    last: list[int]  # each row's latest token


class StaticDecoder:
    """A :class:`~adapters.batcher.DecodeLoop` over :class:`StaticKV` (worker thread only).

    ``graphs``: capture a CUDA graph per :class:`GraphKey` in :meth:`prepare` (CUDA only);
    otherwise, and if capture fails, the same static step runs eagerly.
    """

    def __init__(self, eager: Decoder, max_rows: int, max_len: int, graphs: bool) -> None:
        self.eager = eager
        self.model, self.bank, self.device = eager.model, eager.bank, eager.device
        self.max_rows, self.max_len = max_rows, max_len
        self.buckets = Buckets.for_limits(max_rows, max_len)
        self.want_graphs = graphs and self.device.type == "cuda"
        self.runner = GraphRunner(self._decode)
        self.kv: StaticKV | None = None
        self.io = torch.zeros((3, max_rows), dtype=torch.long, device=self.device)
        self._host: torch.Tensor | None = None
        if self.device.type == "cuda":  # pinned, so the per-step input copy is asynchronous
            self._host = torch.zeros((3, max_rows), dtype=torch.long, pin_memory=True)
        self._cols = torch.arange(max_len, device=self.device)
        self._live: StaticBatch | None = None

    @property
    def busy_s(self) -> float:
        return self.eager.busy_s

    @property
    def graphs(self) -> bool:
        """Whether steps replay CUDA graphs (after :meth:`prepare`)."""
        return bool(self.runner.captured)

    def prefill(self, rows: list[Row]) -> RunningBatch:
        return self.eager.prefill(rows)

    def finish(self, rows: Sequence[Row]) -> None:
        self.eager.finish(rows)

    # -- preparation -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Allocate the cache (layer shapes from a one-token forward) and capture graphs."""
        shapes = self._probe()
        try:
            self.kv = StaticKV(shapes, self.max_rows, self.max_len, self.device)
        except torch.OutOfMemoryError as exc:
            per_col = sum(2 * s.heads * s.head_dim * _itemsize(s.dtype) for s in shapes)
            gib = per_col * self.max_rows * self.max_len / 2**30
            raise ConfigError(
                f"the static decoding cache ({gib:.1f} GiB: {self.max_rows} rows x "
                f"{self.max_len} columns) does not fit on {self.device}; lower "
                "static_max_len or max_batch_size, or turn cuda_graphs off"
            ) from exc
        if self.want_graphs:
            self.bank.preallocate()
            ok = self.runner.capture(self.buckets.keys(), self.device) and self._graphs_agree()
            if not ok:
                self.runner.drop()
        log.info(
            "static decoding: %d rows x %d columns, %d CUDA graphs",
            self.max_rows, self.max_len, len(self.runner.captured),
        )

    def _probe(self) -> list[LayerShape]:
        self.bank.use(None)
        cache = slab_cache(1)
        ids = torch.full((1, 1), self.eager.pad_id, dtype=torch.long, device=self.device)
        self.model(input_ids=ids, **{self.eager.cache_kw: cache}, use_cache=True)
        kvs = kv_tensors(cache)
        if not kvs:
            raise EngineError("static decoding: the model wrote no KV cache")
        return [LayerShape(k.shape[1], k.shape[3], k.dtype) for k, _ in kvs]

    def _graphs_agree(self) -> bool:
        """A replay must give what the same step gives eagerly (a guard on the capture)."""
        key = self.buckets.key(self.max_rows, 1, True)
        vocab = int(self.model.get_input_embeddings().num_embeddings)  # type: ignore[operator]
        self.io.zero_()
        self.io[0].copy_(torch.arange(self.max_rows) * 7919 % vocab)  # distinct rows
        got = self.runner.run(key).float().clone()
        want = self._decode(key).float()
        # low-precision kernels may round differently; a graph reading the wrong storage
        # gives logits unrelated to the eager ones (a relative error near 1)
        err = float((got - want).norm() / want.norm().clamp_min(1e-6))
        if err < 0.05:
            log.info("CUDA graph replay matches eager decoding (relative error %.2g)", err)
            return True
        log.error("CUDA graph replay differs from eager decoding (relative error %.2g); "
                  "decoding without graphs", err)
        return False

    def _kv(self) -> StaticKV:
        if self.kv is None:
            self.prepare()
        assert self.kv is not None
        return self.kv

    # -- one step --------------------------------------------------------------------------
    def _decode(self, key: GraphKey) -> torch.Tensor:
        """One static-shape step over ``io``; what a graph captures, and what runs eagerly."""
        kv = self._kv()
        b, n = key.batch, key.length
        ids, pos, slots = self.io[0, :b], self.io[1, :b], self.io[2, :b]
        unseen = (self._cols[:n][None, :] > pos[:, None])[:, None, None, :]
        mask = torch.zeros((b, 1, 1, n), dtype=kv.dtype, device=self.device)
        mask.masked_fill_(unseen, torch.finfo(kv.dtype).min)
        self.bank.use_static(slots if key.lora else None)
        try:
            out = self.model(
                input_ids=ids[:, None],
                attention_mask=mask,
                position_ids=pos[:, None],
                use_cache=True,
                **{self.eager.cache_kw: kv.cache(b, n, pos)},
            )
        finally:
            self.bank.use(None)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def _fill(self, batch: StaticBatch, width: int) -> None:
        pad = width - len(batch.rows)
        host = torch.tensor(
            [
                batch.last + [self.eager.pad_id] * pad,
                batch.pos + [0] * pad,
                [r.slot for r in batch.rows] + [0] * pad,
            ],
            dtype=torch.long,
        )
        if self._host is None:
            self.io[:, :width].copy_(host)
        else:  # the previous step's sampling synchronised: the pinned buffer is free
            self._host[:, :width].copy_(host)
            # the whole buffer: a dense copy stays asynchronous (a strided one would be staged
            # through pageable memory); columns past ``width`` are not read by this step
            self.io.copy_(self._host, non_blocking=True)

    def step(self, batch: StaticBatch) -> None:
        started = time.perf_counter()
        n = len(batch.rows)
        key = self.buckets.key(n, max(batch.pos) + 1, any(r.slot for r in batch.rows))
        self._fill(batch, key.batch)
        logits = self.runner.run(key)[:n]
        batch.last = self.eager.choose(batch.rows, logits)
        batch.pos = [p + 1 for p in batch.pos]
        self.eager.charge(batch.rows, started)

    # -- rows joining and leaving ----------------------------------------------------------
    def merge(self, running: StaticBatch | None, new: RunningBatch) -> StaticBatch | None:
        """Copy ``new``'s unfinished rows into the next free lines."""
        keep = [i for i, r in enumerate(new.rows) if not r.done]
        if not keep:
            return running
        batch = running if running is not None else StaticBatch([], [], [])
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        lengths = new.next_pos.index_select(0, idx)
        self._kv().place(len(batch.rows), kv_tensors(new.cache), idx, lengths)
        batch.rows.extend(new.rows[i] for i in keep)
        batch.pos.extend(int(p) for p in lengths.tolist())
        batch.last.extend(int(t) for t in new.last.index_select(0, idx).tolist())
        self._live = batch
        return batch

    def prune(self, batch: StaticBatch) -> StaticBatch | None:
        """Drop finished rows; the last lines move into their holes."""
        keep = [i for i, r in enumerate(batch.rows) if not r.done]
        if not keep:
            self._live = None
            return None
        if len(keep) == len(batch.rows):
            return batch
        n = len(keep)
        holes = [i for i in range(n) if batch.rows[i].done]
        movers = [i for i in keep if i >= n]
        if movers:
            self._kv().move(movers, holes, max(batch.pos[i] for i in movers))
        order = list(range(n))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        batch.rows = [batch.rows[i] for i in order]
        batch.pos = [batch.pos[i] for i in order]
        batch.last = [batch.last[i] for i in order]
        return batch

    def run_all(self, rows: list[Row]) -> None:
        """As :meth:`Decoder.run_all`; on the static cache when no batch is running there."""
        if self._live is not None or len(rows) > self.max_rows:
            self.eager.run_all(rows)
            return
        new = self.prefill(rows)
        self.finish(new.rows)
        batch = self.merge(None, new)
        try:
            while batch is not None:
                self.step(batch)
                self.finish(batch.rows)
                batch = self.prune(batch)
        finally:
            self._live = None
