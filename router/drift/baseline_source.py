"""Where the monitor gets an adapter's :class:`Baseline`.

The baseline computed from lineage (``router.drift.baselines``, stored with the card) when
there is one; else one holding only the release-gate bars from the model card's ``eval``
(``overall`` from ``overall`` or ``accuracy``; every ``slice_*`` key as it is): enough for
the quality tests, not for input or output drift. Results are cached for ``ttl_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from lora_router.router.drift.baseline_model import Baseline

log = logging.getLogger(__name__)

BaselineFn = Callable[[str], Baseline | None]
StoredLoader = Callable[[Home, str], Baseline | None]


def gates_from_eval(evaluation: dict[str, float]) -> dict[str, float]:
    """The gate bars a model card's ``eval`` records (see the module docstring)."""
    gates = {k: float(v) for k, v in evaluation.items() if k.startswith("slice_")}
    overall = evaluation.get("overall", evaluation.get("accuracy"))
    if overall is not None:
        gates["overall"] = float(overall)
    return gates


class BaselineSource:
    """``source(adapter_id)`` -> its baseline, or None (unknown adapter, no eval)."""

    def __init__(
        self, home: Home, *, stored: StoredLoader | None = None, ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._home = home
        self._registry = RegistryStore(home)
        self._stored = stored
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Baseline | None]] = {}

    def __call__(self, adapter_id: str) -> Baseline | None:
        now = self._clock()
        hit = self._cache.get(adapter_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        baseline = self._load(adapter_id)
        self._cache[adapter_id] = (now, baseline)
        return baseline

    def _load(self, adapter_id: str) -> Baseline | None:
        if self._stored is not None:
            try:
                found = self._stored(self._home, adapter_id)
                if found is not None:
                    return found
            except (LoraRouterError, OSError, ValueError) as exc:
                log.warning("stored baseline of %s unreadable (%s); using its card", adapter_id,
                            exc)
        try:
            card = self._registry.get_model_card(adapter_id)
        except LoraRouterError:
            return None
        gates = gates_from_eval(card.eval)
        if not gates:
            return None
        return Baseline(adapter_id=adapter_id, gates=gates, n=0,
                        computed_from=[f"model_card:{adapter_id}"])
