"""The training loop both trainers share: determinism, and the optimisation steps.

:func:`deterministic_torch` fixes seeds, the thread count and deterministic kernels (the
caller's state is restored afterwards); :func:`optimise` runs AdamW with gradient clipping
and a per-step learning-rate schedule over a stream of batches. The LoRA trainer
(:mod:`lora_router.training.lora`) and the demo's base pre-training
(:mod:`lora_router.demo.pretrain`) differ only in their model, batches and schedule.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

StepCallback = Callable[[int, int, float], None]  # (step, total, loss)


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Fixed seeds, thread count and deterministic kernels; the caller's state is restored."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_rng = torch.get_rng_state()
    prev_py = random.getstate()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
        torch.set_rng_state(prev_rng)
        random.setstate(prev_py)


def optimise(
    model: Any,
    params: Sequence[torch.nn.Parameter],
    batches: Iterator[dict[str, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    schedule: Callable[[int], float],
    on_step: StepCallback | None = None,
) -> float:
    """``steps`` AdamW steps of ``model(**batch).loss`` over ``params`` (gradients clipped
    to norm 1, ``schedule`` scaling ``lr`` per step); returns the last step's loss."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step + 1, steps, loss_value)
    return loss_value
