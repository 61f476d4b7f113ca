"""LoRA applied by the engine itself, from per-layer slot tensors (S-LoRA / Punica in plain torch).

Every ``nn.Linear`` of the base is wrapped by a :class:`SlotLinear` holding stacked
``A [S+1, in, rmax]`` and ``B [S+1, rmax, out]`` (slot 0 stays zero: the plain base; ranks are
padded to ``rmax``; alpha/r is folded into ``B``). A shared :class:`SlotContext` carries the
current :class:`SlotPlan` (one slot index per batch row), set by the batcher before each
forward. Per plan, each layer picks:

- no row uses an adapter that targets it: the base Linear only;
- every row uses the same slot: two plain matmuls with that slot's ``A`` / ``B``;
- mixed rows, by ``strategy``: ``"segment"`` (rows grouped by slot - the batcher keeps them
  so - each group's rows get plain matmuls on views; the CPU default, measured fastest),
  ``"cat"`` (``x @ A_cat`` over the active slots' true ranks, a per-row block mask,
  ``@ B_cat``: three kernels whatever the mix; the CUDA default, not measured on a GPU here)
  or ``"bmm"`` (gather ``A``/``B`` per row + two ``bmm``).

All three are exact (same maths; only float summation order differs). Loading copies an
adapter's weights into a free slot; unloading zeroes it (a free slot is all zeros, so a load
only writes its adapter's ranks). Nothing else changes.

Static decoding (:mod:`adapters.static_decode`, replayed as CUDA graphs) cannot branch on the
plan, so :meth:`SlotBank.use_static` switches every layer to one fixed-shape path instead:
``x @ A`` for all ``S+1`` slots at once (one batched matmul), each row's columns of the other
slots filled with 0, then one ``addmm`` with ``B`` viewed as ``[(S+1) * rmax, out]``. Its cost
does not depend on how the rows mix adapters, and it reads the slot tensors from fixed storage,
so loads and unloads (in-place copies) are seen by graphs captured before them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from torch import nn

from lora_router.adapters.adapter_files import AdapterWeights
from lora_router.adapters.packing import PackedAdapter
from lora_router.ground.errors import NoFreeSlot

Strategy = Literal["auto", "cat", "bmm", "segment"]
_plan_keys = itertools.count(1)


@dataclass(frozen=True, eq=False)
class SlotPlan:
    """The slot of every batch row for the next forward passes."""

    slots: tuple[int, ...]
    slot_ids: torch.Tensor  # [B] long, on the model's device
    active: tuple[int, ...]  # distinct non-zero slots, sorted
    uniform: int | None  # the slot shared by every row, if any (0 = all base)
    runs: tuple[tuple[int, int, int], ...] | None  # (slot, start, end) if rows grouped by slot
    key: int = field(default_factory=lambda: next(_plan_keys))


@dataclass
class SlotContext:
    """State shared by every :class:`SlotLinear` of one model."""

    num_slots: int  # adapter slots, not counting slot 0
    max_rank: int
    strategy: Strategy = "cat"
    plan: SlotPlan | None = None
    version: int = 0  # bumped on every slot change; invalidates per-layer caches
    # static decoding: [S+1, B, 1], True where row b does NOT use slot s (see use_static)
    static_other: torch.Tensor | None = None


_Apply = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SlotLinear(nn.Module):
    """A base Linear plus the LoRA updates of whichever slots the current plan's rows use."""

    def __init__(self, base_layer: nn.Linear, ctx: SlotContext) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.ctx = ctx
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.lora_a: torch.Tensor | None = None  # [S+1, in, rmax], allocated on first use
        self.lora_b: torch.Tensor | None = None  # [S+1, rmax, out]
        self.ranks = [0] * (ctx.num_slots + 1)
        self._cache: dict[tuple[int, int], _Apply | None] = {}

    def allocate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot tensors, made (zeroed) on first use; never reallocated afterwards."""
        if self.lora_a is None or self.lora_b is None:
            w = self.base_layer.weight
            n, r = self.ctx.num_slots + 1, self.ctx.max_rank
            self.lora_a = torch.zeros(n, self.in_features, r, dtype=w.dtype, device=w.device)
            self.lora_b = torch.zeros(n, r, self.out_features, dtype=w.dtype, device=w.device)
        return self.lora_a, self.lora_b

    def set_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Load ``a [in, r]`` / ``b [r, out]`` (scaling already folded into ``b``)."""
        lora_a, lora_b = self.allocate()
        rank = a.shape[1]
        lora_a[slot].zero_()
        lora_b[slot].zero_()
        lora_a[slot, :, :rank].copy_(a)
        lora_b[slot, :rank, :].copy_(b)
        self.ranks[slot] = rank

    def load_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        """Load tensors as stored, ``a [r, in]`` / ``b [out, r]``, into a free (all-zero) slot.

        The same float32 arithmetic as :func:`read_adapter` (``b^T * scaling`` in float32,
        then one rounding to the slot dtype), done by the copies themselves: two kernels.
        """
        lora_a, lora_b = self.allocate()
        rank = a.shape[0]
        lora_a[slot, :, :rank].copy_(a.t())
        torch.mul(b.t().to(torch.float32), scaling, out=lora_b[slot, :rank, :])
        self.ranks[slot] = rank

    def clear_slot(self, slot: int) -> None:
        if self.lora_a is not None and self.lora_b is not None:
            self.lora_a[slot].zero_()
            self.lora_b[slot].zero_()
        self.ranks[slot] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base_layer(x)
        if self.ctx.static_other is not None:
            return self._static(x, y, self.ctx.static_other)
        plan = self.ctx.plan
        if plan is None or not plan.active:
            return y
        key = (plan.key, self.ctx.version)
        if key not in self._cache:
            if len(self._cache) >= 4:  # prefill and decode plans alternate; keep a few
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._prepare(plan)
        apply = self._cache[key]
        return y if apply is None else apply(x, y)

    def _static(self, x: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        if self.lora_a is None or self.lora_b is None:  # no adapter ever targeted this layer
            return y
        x2 = x.reshape(-1, self.in_features)  # [B, in]: one token per row
        xa = torch.matmul(x2, self.lora_a)  # [S+1, B, rmax]
        # filled, not multiplied: another slot's overflow (inf * 0 = NaN) stays out of the row
        xa.masked_fill_(other, 0)
        flat = xa.transpose(0, 1).reshape(x2.shape[0], -1)  # [B, (S+1) * rmax]
        y.view(-1, self.out_features).addmm_(flat, self.lora_b.view(-1, self.out_features))
        return y

    def _prepare(self, plan: SlotPlan) -> _Apply | None:
        local = [s for s in plan.active if self.ranks[s] > 0]
        if not local or self.lora_a is None or self.lora_b is None:
            return None
        if plan.uniform is not None:
            s = plan.uniform
            r = self.ranks[s]
            return _single(self.lora_a[s, :, :r].contiguous(), self.lora_b[s, :r, :].contiguous())
        if self.ctx.strategy == "bmm":
            ids = plan.slot_ids
            return _gathered(self.lora_a.index_select(0, ids), self.lora_b.index_select(0, ids))
        if self.ctx.strategy == "segment":
            return self._segments(plan, local)
        return self._concatenated(plan, local)

    def _concatenated(self, plan: SlotPlan, local: Sequence[int]) -> _Apply:
        assert self.lora_a is not None and self.lora_b is not None
        a_cat = torch.cat([self.lora_a[s, :, : self.ranks[s]] for s in local], dim=1)
        b_cat = torch.cat([self.lora_b[s, : self.ranks[s], :] for s in local], dim=0)
        col_slot = torch.cat(
            [torch.full((self.ranks[s],), s, dtype=torch.long, device=a_cat.device) for s in local]
        )
        # [B, R]: True where a row's rank column belongs to another slot. Filled with 0, not
        # multiplied by 0: another adapter's overflow (inf * 0 = NaN) must not reach this row.
        other = plan.slot_ids[:, None] != col_slot[None, :]

        def apply(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            xa = torch.matmul(x, a_cat)  # [B, T, R]
            xa.masked_fill_(other.view(other.shape[0], *([1] * (xa.dim() - 2)), other.shape[1]), 0)
            y.view(-1, y.shape[-1]).addmm_(xa.view(-1, xa.shape[-1]), b_cat)
            return y

        return apply

    def _segments(self, plan: SlotPlan, local: Sequence[int]) -> _Apply:
        assert self.lora_a is not None and self.lora_b is not None
        if plan.runs is not None:  # rows grouped by slot: plain matmuls on views, no copies
            spans = [
                (
                    lo,
                    hi,
                    self.lora_a[s, :, : self.ranks[s]].contiguous(),
                    self.lora_b[s, : self.ranks[s], :].contiguous(),
                )
                for s, lo, hi in plan.runs
                if s in local
            ]
            return partial(_apply_spans, spans)
        groups = []
        for s in local:
            rows = torch.tensor(
                [i for i, t in enumerate(plan.slots) if t == s],
                dtype=torch.long,
                device=plan.slot_ids.device,
            )
            r = self.ranks[s]
            groups.append((rows, self.lora_a[s, :, :r], self.lora_b[s, :r, :]))

        def apply(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            for rows, a, b in groups:
                y.index_add_(0, rows, torch.matmul(torch.matmul(x.index_select(0, rows), a), b))
            return y

        return apply


def _runs(slots: Sequence[int]) -> tuple[tuple[int, int, int], ...] | None:
    """``(slot, start, end)`` per run of equal slots, or None if a slot appears in two runs."""
    runs: list[tuple[int, int, int]] = []
    for i, s in enumerate(slots):
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1], i + 1)
        else:
            runs.append((s, i, i + 1))
    return tuple(runs) if len({r[0] for r in runs}) == len(runs) else None


def _single(a: torch.Tensor, b: torch.Tensor) -> _Apply:
    def apply(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xa = torch.matmul(x, a)
        y.view(-1, y.shape[-1]).addmm_(xa.view(-1, xa.shape[-1]), b)
        return y

    return apply


def _apply_spans(
    spans: Sequence[tuple[int, int, torch.Tensor, torch.Tensor]], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    for lo, hi, a, b in spans:
        ys = y[lo:hi].view(-1, y.shape[-1])  # a view: y is contiguous along rows
        ys.addmm_(torch.matmul(x[lo:hi], a).view(-1, a.shape[1]), b)
    return y


def _gathered(a: torch.Tensor, b: torch.Tensor) -> _Apply:
    def apply(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])
        return y.add_(torch.bmm(torch.bmm(x3, a), b).view_as(y))

    return apply


class SlotBank:
    """Wraps a model's Linear modules and manages which adapter occupies which slot.

    Not thread-safe: the engine calls it from its single worker thread, between forwards.
    """

    def __init__(
        self, model: nn.Module, num_slots: int, max_rank: int, strategy: Strategy = "auto"
    ) -> None:
        if strategy == "auto":  # measured on CPU: segment; on GPU few launches matter: cat
            on_cpu = next(model.parameters()).device.type == "cpu"
            strategy = "segment" if on_cpu else "cat"
        self.ctx = SlotContext(num_slots=num_slots, max_rank=max_rank, strategy=strategy)
        self.modules: dict[str, SlotLinear] = {}
        targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        for name, linear in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            wrapped = SlotLinear(linear, self.ctx)
            setattr(parent, attr, wrapped)
            self.modules[name] = wrapped
        self._owner: dict[int, str] = {}  # slot -> adapter id
        self._device = next(model.parameters()).device
        self._slot_range = torch.arange(num_slots + 1, device=self._device)

    def free_slots(self) -> list[int]:
        return [s for s in range(1, self.ctx.num_slots + 1) if s not in self._owner]

    @torch.inference_mode()
    def install(self, adapter_id: str, weights: AdapterWeights | PackedAdapter) -> int:
        """Copy an adapter into a free slot and return the slot; ``NoFreeSlot`` when full.

        A :class:`PackedAdapter` uploaded on a side stream is waited for on the GPU only.
        """
        free = self.free_slots()
        if not free:
            raise NoFreeSlot(f"all {self.ctx.num_slots} adapter slots are taken; unload one first")
        slot = free[0]
        try:
            if isinstance(weights, PackedAdapter):
                weights.bind_to_current_stream()
                for e, a, b in weights.modules():
                    self.modules[e.name].load_slot(slot, a, b, e.scaling)
            else:
                for name, mod in weights.modules.items():
                    self.modules[name].set_slot(slot, mod.a, mod.b)
        except Exception:
            self._clear(slot)
            raise
        self._owner[slot] = adapter_id
        self.ctx.version += 1
        return slot

    @torch.inference_mode()
    def free(self, slot: int) -> None:
        """Zero a slot's weights everywhere and make it free again."""
        self._clear(slot)
        self._owner.pop(slot, None)
        self.ctx.version += 1

    def _clear(self, slot: int) -> None:
        for mod in self.modules.values():
            mod.clear_slot(slot)

    def make_plan(self, slots: Sequence[int]) -> SlotPlan:
        distinct = sorted(set(slots))
        return SlotPlan(
            slots=tuple(slots),
            slot_ids=torch.tensor(list(slots), dtype=torch.long, device=self._device),
            active=tuple(s for s in distinct if s != 0),
            uniform=distinct[0] if len(distinct) == 1 else None,
            runs=_runs(slots),
        )

    def use(self, plan: SlotPlan | None) -> None:
        """Make ``plan`` the one every wrapped Linear reads on the next forwards."""
        self.ctx.plan = plan
        self.ctx.static_other = None

    def use_static(self, slot_ids: torch.Tensor | None) -> None:
        """Switch every layer to the fixed-shape path for rows with ``slot_ids [B]`` (a device
        tensor, read when the forward runs), or to the base alone (``None``)."""
        self.ctx.plan = None
        self.ctx.static_other = (
            None
            if slot_ids is None
            else (self._slot_range[:, None] != slot_ids[None, :])[:, :, None]
        )

    def preallocate(self) -> None:
        """Make every layer's slot tensors now: a CUDA graph captured later reads only the
        storage that existed when it was captured."""
        for mod in self.modules.values():
            mod.allocate()
