"""Batched decoding over the slot model, and the micro-batcher that feeds it.

:class:`Decoder` does the model work for a batch of :class:`~adapters.decoding.Row` s: a
left-padded prefill (attention mask + position ids, ``DynamicCache``), decode steps, and the
continuous-batching moves: :meth:`Decoder.join` (left-pad the shorter KV cache and stack
two batches) and :meth:`Decoder.prune` (drop finished rows, trim all-padding columns).
:class:`MicroBatcher` runs it on one worker thread: requests wait up to ``batch_wait_ms``
(or until ``max_batch_size``) when idle, and join the running batch between decode steps
otherwise. Adapter mutations (callables sent with :meth:`MicroBatcher.call`) run on the
same thread between steps, so they never race a forward pass. The batcher drives any
:class:`DecodeLoop`: this eager :class:`Decoder`, or the static-shape one of
:mod:`adapters.static_decode` (CUDA graphs), which reuses the eager prefill.

Engine seconds (cost accounting): the wall time of each forward pass (a prefill or a decode
step, sampling and token bookkeeping included) is split equally among the rows it computed
(every row of a padded batch costs the same tensor work), and added to each row's
``engine_s``. So a request's engine seconds sum its shares of the passes it was in, and
the engine seconds of all requests add up to :attr:`Decoder.busy_s`, the time the worker
spent in passes: queueing, batch joins/prunes, adapter loads and idle time are not charged.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lora_router.adapters.decoding import Codec, Row, fail_alone, sample_tokens
from lora_router.adapters.slots import SlotBank, SlotPlan
from lora_router.ground.errors import EngineError, EngineOverloaded, LoraRouterError

log = logging.getLogger(__name__)
T = TypeVar("T")


class HasRows(Protocol):
    @property
    def rows(self) -> list[Row]: ...


BatchT = TypeVar("BatchT", bound=HasRows)


class DecodeLoop(Protocol[BatchT]):
    """What :class:`MicroBatcher` needs from a decoder (worker thread only)."""

    @property
    def busy_s(self) -> float: ...

    def prepare(self) -> None:
        """Once, before serving: allocate and capture whatever the loop needs."""

    def prefill(self, rows: list[Row]) -> RunningBatch:
        """Run the prompts of ``rows``; each row has its first token (or is done)."""

    def merge(self, running: BatchT | None, new: RunningBatch) -> BatchT | None:
        """The running batch with ``new``'s unfinished rows added."""

    def step(self, batch: BatchT) -> None: ...

    def prune(self, batch: BatchT) -> BatchT | None:
        """Drop finished rows; None when none is left."""

    def finish(self, rows: Sequence[Row]) -> None: ...

    def run_all(self, rows: list[Row]) -> None:
        """Decode ``rows`` together to completion, between steps of the running batch."""


@dataclass(eq=False)
class RunningBatch:
    rows: list[Row]
    cache: DynamicCache
    mask: torch.Tensor  # [B, L] attention mask over the cache (left padding = 0)
    next_pos: torch.Tensor  # [B] position id of each row's next token
    last: torch.Tensor  # [B] each row's latest token
    plan: SlotPlan


class SlabLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A ``DynamicLayer`` that writes each step into a preallocated slab.

    ``DynamicLayer`` concatenates the whole cache every step (a full copy per layer per token,
    a fifth of a CPU decode step at batch 32); here a step copies only the new positions and
    the slab grows geometrically when full. ``keys`` / ``values`` are views of the filled part.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.capacity, self.length = capacity, 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    @classmethod
    def holding(cls, k: torch.Tensor, v: torch.Tensor, capacity: int) -> SlabLayer:
        layer = cls(max(capacity, k.shape[2]))
        layer.update(k, v)
        return layer

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[2]
        if self._k is None or self._v is None or end > self._k.shape[2]:
            self._grow(key_states, value_states, max(end, self.capacity, 2 * self.length))
        assert self._k is not None and self._v is not None
        self._k[:, :, self.length : end].copy_(key_states)
        self._v[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        self.is_initialized, self.device = True, key_states.device
        return self.keys, self.values

    def _grow(self, ks: torch.Tensor, vs: torch.Tensor, capacity: int) -> None:
        b, h = ks.shape[:2]
        k = ks.new_empty((b, h, capacity, ks.shape[3]))
        v = vs.new_empty((b, h, capacity, vs.shape[3]))
        if self._k is not None and self._v is not None and self.length:
            k[:, :, : self.length].copy_(self._k[:, :, : self.length])
            v[:, :, : self.length].copy_(self._v[:, :, : self.length])
        self._k, self._v, self.capacity = k, v, capacity

    def get_seq_length(self) -> int:
        return self.length


def slab_cache(
    capacity: int, kvs: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
) -> DynamicCache:
    cache = DynamicCache()
    cache.layer_class_to_replicate = partial(SlabLayer, capacity)  # type: ignore[assignment]
    cache.layers = [SlabLayer.holding(k, v, capacity) for k, v in kvs]
    return cache


def _capacity(rows: Sequence[Row], width: int) -> int:
    """Cache room for the longest remaining generation (capped; the slab grows if needed)."""
    remaining = max(r.request.params.max_tokens - len(r.out_ids) for r in rows)
    return width + min(remaining, 256) + 1


def kv_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for layer in cache.layers:
        k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
        if k is None or v is None:
            raise EngineError(f"unsupported KV cache layer {type(layer).__name__}")
        out.append((k, v))
    return out


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Decoder:
    """Prefill, decode steps, join and prune for batches of rows (worker thread only)."""

    def __init__(
        self, model: nn.Module, codec: Codec, bank: SlotBank, eos_ids: frozenset[int], pad_id: int
    ) -> None:
        self.model, self.codec, self.bank = model, codec, bank
        self.eos_ids, self.pad_id = eos_ids, pad_id
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.busy_s = 0.0  # seconds spent in forward passes (the sum of rows' engine_s)

    def prepare(self) -> None:
        pass  # nothing to allocate ahead: the cache grows with each batch

    def charge(self, rows: Sequence[Row], started: float) -> None:
        """Split one pass's wall time equally among the rows it computed."""
        spent = time.perf_counter() - started
        self.busy_s += spent
        share = spent / len(rows)
        for r in rows:
            r.engine_s += share

    def _forward(self, plan: SlotPlan, **kwargs: Any) -> torch.Tensor:
        self.bank.use(plan)
        cache = kwargs.pop("kv")
        out = self.model(**kwargs, **{self.cache_kw: cache}, use_cache=True)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def choose(self, rows: Sequence[Row], logits: torch.Tensor) -> list[int]:
        """Sample and take each row's next token; a row that fails here fails alone (it is
        ``done``, so the next :meth:`prune` drops it before another forward pass)."""
        tokens, probs = sample_tokens(rows, logits)
        for row, tok, p in zip(rows, tokens, probs, strict=True):
            if not row.done:
                try:
                    row.accept(tok, p, self.eos_ids, self.codec)
                except Exception as exc:  # this row's text or sink: not its batch mates'
                    fail_alone(row, f"engine failure: {exc}", exc)
        return tokens

    def _tokens(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.long, device=self.device)

    def prefill(self, rows: list[Row]) -> RunningBatch:
        started = time.perf_counter()
        rows = sorted(rows, key=lambda r: r.slot)  # each adapter's rows contiguous
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.prompt_ids)
            ids[i, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        plan = self.bank.make_plan([r.slot for r in rows])
        cache = slab_cache(_capacity(rows, width))
        logits = self._forward(
            plan, input_ids=ids, attention_mask=mask, position_ids=pos, kv=cache, logits_to_keep=1
        )
        last = self._tokens(self.choose(rows, logits))
        self.charge(rows, started)
        return RunningBatch(rows, cache, mask, mask.sum(-1), last, plan)

    def step(self, b: RunningBatch) -> None:
        started = time.perf_counter()
        b.mask = torch.cat([b.mask, b.mask.new_ones((b.mask.shape[0], 1))], dim=1)
        logits = self._forward(
            b.plan,
            input_ids=b.last[:, None],
            attention_mask=b.mask,
            position_ids=b.next_pos[:, None],
            kv=b.cache,
        )
        b.next_pos = b.next_pos + 1
        b.last = self._tokens(self.choose(b.rows, logits))
        self.charge(b.rows, started)

    def merge(self, running: RunningBatch | None, new: RunningBatch) -> RunningBatch | None:
        pruned = self.prune(new)
        if pruned is None:
            return running
        return pruned if running is None else self.join(running, pruned)

    def join(self, a: RunningBatch, b: RunningBatch) -> RunningBatch:
        """Stack two batches (left-padding the shorter cache), rows grouped by slot."""
        la, lb = a.mask.shape[1], b.mask.shape[1]
        width = max(la, lb)
        kvs = [
            (
                torch.cat([_left_pad(ka, width - la, 2), _left_pad(kb, width - lb, 2)]),
                torch.cat([_left_pad(va, width - la, 2), _left_pad(vb, width - lb, 2)]),
            )
            for (ka, va), (kb, vb) in zip(kv_tensors(a.cache), kv_tensors(b.cache), strict=True)
        ]
        rows = a.rows + b.rows
        mask = torch.cat([_left_pad(a.mask, width - la, 1), _left_pad(b.mask, width - lb, 1)])
        order = sorted(range(len(rows)), key=lambda i: rows[i].slot)
        return self._select(
            rows,
            kvs,
            mask,
            torch.cat([a.next_pos, b.next_pos]),
            torch.cat([a.last, b.last]),
            order,
        )

    def prune(self, b: RunningBatch) -> RunningBatch | None:
        """Drop rows that are done; trim leading columns that are padding for every row."""
        keep = [i for i, r in enumerate(b.rows) if not r.done]
        if not keep:
            return None
        if len(keep) == len(b.rows):
            return b
        return self._select(b.rows, kv_tensors(b.cache), b.mask, b.next_pos, b.last, keep)

    def _select(
        self,
        rows: Sequence[Row],
        kvs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
        next_pos: torch.Tensor,
        last: torch.Tensor,
        keep: Sequence[int],
    ) -> RunningBatch:
        """A new batch of rows ``keep`` (in that order) without all-padding leading columns."""
        idx = torch.tensor(list(keep), dtype=torch.long, device=self.device)
        mask = mask.index_select(0, idx)
        lead = int(torch.argmax(mask.any(0).to(torch.int8)))
        kept = [rows[i] for i in keep]
        width = mask.shape[1] - lead
        cache = slab_cache(
            _capacity(kept, width),
            [
                (k.index_select(0, idx)[:, :, lead:], v.index_select(0, idx)[:, :, lead:])
                for k, v in kvs
            ],
        )
        return RunningBatch(
            kept,
            cache,
            mask[:, lead:],
            next_pos.index_select(0, idx),
            last.index_select(0, idx),
            self.bank.make_plan([r.slot for r in kept]),
        )

    def finish(self, rows: Sequence[Row]) -> None:
        for r in rows:
            if r.finish is not None and not r.reported and not r.sink.cancelled():
                try:
                    result = r.result(self.codec)
                except Exception as exc:  # this row's final text: not its batch mates'
                    fail_alone(r, f"engine failure: {exc}", exc)
                    continue
                r.report(result)

    def run_all(self, rows: list[Row]) -> None:
        """Decode ``rows`` together to completion (no joining), reporting each as it ends."""
        batch: RunningBatch | None = self.prefill(rows)
        while batch is not None:
            self.finish(batch.rows)
            batch = self.prune(batch)
            if batch is not None:
                self.step(batch)


@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 32
    batch_wait_ms: float = 2.0
    max_queue: int = 1024


class MicroBatcher(Generic[BatchT]):
    """The engine's single worker thread: continuous batching plus serialised mutations."""

    def __init__(self, decoder: DecodeLoop[BatchT], limits: BatchLimits) -> None:
        self.decoder, self.limits = decoder, limits
        self._cv = threading.Condition()
        self._pending: deque[tuple[float, Row]] = deque()
        self._commands: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        # slot, deadline, called on the worker once drained, resolved after that call
        self._drains: list[tuple[int, float, Callable[[], None], Future[None]]] = []
        self._batch: BatchT | None = None
        self._inflight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- any thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lora-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, row: Row) -> None:
        """Queue a row for the next batch; ``EngineOverloaded`` when the queue is full."""
        with self._cv:
            if self._stopping:
                raise EngineError("engine is closed")
            if self._inflight >= self.limits.max_queue:
                raise EngineOverloaded(f"engine queue is full ({self.limits.max_queue} requests)")
            self._inflight += 1
            self._pending.append((time.monotonic(), row))
            self._cv.notify_all()

    def saturated(self) -> bool:
        """Rows queued or running fill a batch, so a new row would wait (read without the
        lock: a hint, exact only between steps)."""
        return self._inflight >= self.limits.max_batch_size

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the worker between steps; its result or error lands in the future."""
        fut: Future[T] = Future()
        with self._cv:
            if self._stopping:
                raise EngineError("engine is closed")
            self._commands.append((fn, fut))
            self._cv.notify_all()
        return fut

    def drain(self, slot: int, timeout_s: float, then: Callable[[], None]) -> Future[None]:
        """Once no queued or running row uses ``slot``, call ``then`` on the worker, resolve.

        Rows still using the slot after ``timeout_s`` fail with ``EngineError``.
        """
        fut: Future[None] = Future()
        with self._cv:
            if self._stopping:
                raise EngineError("engine is closed")
            self._drains.append((slot, time.monotonic() + timeout_s, then, fut))
            self._cv.notify_all()
        return fut

    def run_now(self, rows: list[Row]) -> Future[None]:
        """Decode ``rows`` as one batch of their own, between steps of the running batch."""
        for r in rows:
            r.retired = True  # never counted in flight
        return self.call(partial(self._guard, rows, partial(self.decoder.run_all, rows)))

    # -- worker thread ---------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while (work := self._next_work()) is not None:
                commands, rows = work
                for fn, fut in commands:
                    self._run_command(fn, fut)
                if rows:
                    self._guard(rows, partial(self._admit, rows))
                if self._batch is not None:
                    self._guard(self._batch.rows, partial(self._step, self._batch))
                self._service_drains()
        self._fail_all(EngineError("engine closed before the request finished"))

    def _next_work(self) -> tuple[list[Any], list[Row]] | None:
        with self._cv:
            while not self._stopping:
                commands = list(self._commands)
                self._commands.clear()
                running = len(self._batch.rows) if self._batch is not None else 0
                room = self.limits.max_batch_size - running
                if commands or running or self._drains:
                    return commands, self._take(room)
                if self._pending:
                    waited = time.monotonic() - self._pending[0][0]
                    wait_s = self.limits.batch_wait_ms / 1000.0 - waited
                    if len(self._pending) >= room or wait_s <= 0:
                        return [], self._take(room)
                    self._cv.wait(wait_s)
                else:
                    self._cv.wait()
            return None

    def _take(self, n: int) -> list[Row]:
        rows: list[Row] = []
        while self._pending and len(rows) < n:
            rows.append(self._pending.popleft()[1])
        self._retire([r for r in rows if r.done])
        return [r for r in rows if not r.done]

    def _run_command(self, fn: Callable[[], Any], fut: Future[Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return  # the caller gave up before it ran
        try:
            fut.set_result(fn())
        except Exception as exc:  # delivered to the caller, which raises it
            fut.set_exception(exc)

    def _guard(self, rows: Sequence[Row], fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            log.exception("engine step failed; failing %d requests", len(rows))
            err = exc if isinstance(exc, LoraRouterError) else EngineError(f"engine failure: {exc}")
            self._retire(list(rows))
            for r in rows:
                r.report(err)
            self._batch = None if self._batch is None else self.decoder.prune(self._batch)

    def _admit(self, rows: list[Row]) -> None:
        new = self.decoder.prefill(rows)
        self._after_step(new)
        self._batch = self.decoder.merge(self._batch, new)

    def _step(self, batch: BatchT) -> None:
        self.decoder.step(batch)
        self._after_step(batch)
        self._batch = self.decoder.prune(batch)

    def _after_step(self, batch: HasRows) -> None:
        # No longer counted in flight before the caller hears back, so it may submit again.
        self._retire([r for r in batch.rows if r.done])
        self.decoder.finish(batch.rows)

    def _retire(self, rows: list[Row]) -> None:
        fresh = [r for r in rows if not r.retired]
        for r in fresh:
            r.retired = True
        if fresh:
            with self._cv:
                self._inflight -= len(fresh)

    def _service_drains(self) -> None:
        if not self._drains:
            return
        now = time.monotonic()
        with self._cv:
            busy = {r.slot for _, r in self._pending}
            drains = list(self._drains)
        running = self._batch.rows if self._batch is not None else []
        busy |= {r.slot for r in running if not r.done}
        for item in drains:
            slot, deadline, then, fut = item
            if slot in busy and now < deadline:
                continue
            if slot in busy:
                self._fail_slot(slot)
            with self._cv:
                self._drains.remove(item)
            self._run_command(then, fut)

    def _fail_slot(self, slot: int) -> None:
        err = EngineError("the request's adapter was unloaded before it finished")
        with self._cv:
            queued = [r for _, r in self._pending if r.slot == slot]
            self._pending = deque((t, r) for t, r in self._pending if r.slot != slot)
        running = [r for r in (self._batch.rows if self._batch else []) if r.slot == slot]
        self._retire(queued + running)
        for r in queued + running:
            r.report(err)
        if self._batch is not None:
            self._batch = self.decoder.prune(self._batch)

    def _fail_all(self, err: LoraRouterError) -> None:
        with self._cv:
            rows: list[Row] = [r for _, r in self._pending]
            self._pending.clear()
            commands = list(self._commands)
            self._commands.clear()
            drains = list(self._drains)
            self._drains.clear()
        rows += self._batch.rows if self._batch is not None else []
        self._batch = None
        for r in rows:
            r.report(err)
        for fut in [c[1] for c in commands] + [d[3] for d in drains]:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(err)
