"""The drift signals over time, per adapter version and slice (what the charts draw).

:func:`compute_signals` puts a window's log rows in time buckets (about 24, at a round
width) and computes, per bucket:

- **quality**: accuracy on the labelled requests, per ``model_id`` and slice (``all`` and
  each value of the slice features), with its 95 % Wilson interval; the gate bars drawn
  are those of one adapter (the route's live one, or the incident's comparison: the bars a
  canary is held to);
- **output drift**: PSI of the ``predicted_label`` distribution, per ``model_id`` and slice,
  against the adapter's training labels (its lineage baseline), else against the whole
  window's rows of that slice (all adapters);
- **input drift**: per ``model_id``, PSI of ``language`` and KS D of each numeric feature,
  against the baseline (one-sample KS on its quantiles, as the monitor computes it), else
  against the whole window's rows (two-sample KS, exact with repeated values).

A bucket with fewer than :data:`MIN_LABELLED` labels is a gap in the accuracy chart, never
a point. A drift point is computed over the bucket's rows and, when they are fewer than
:data:`MIN_ROWS`, those of up to :data:`TRAILING` - 1 buckets before it (else a gap). PSI
adds half a request to every category (a small window that misses a rare label is not a
"major shift"). About 24 buckets, fewer when an adapter has few rows (20 per bucket).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lora_router.router.drift import stats
from lora_router.router.drift.assess import Rate
from lora_router.router.drift.baseline_model import NO_LABEL, Baseline
from lora_router.router.drift.groups import slice_keyer
from lora_router.router.drift.policy import feature_value
from lora_router.router.drift.queries import LogEntry

BaselineFn = Callable[[str], Baseline | None]
_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
             43200, 86400, 172800, 604800)
MIN_LABELLED = 5
MIN_ROWS = 30
TRAILING = 4  # buckets a drift point may reach back to find MIN_ROWS rows
ALL = "all"
NUMERIC_INPUTS = ("chars", "tokens")
_SMOOTH = 0.5


@dataclass(frozen=True, slots=True)
class Buckets:
    start: datetime
    width: timedelta
    count: int

    def index(self, ts: datetime) -> int | None:
        i = math.floor((ts - self.start) / self.width)
        return i if 0 <= i < self.count else None

    def mids(self) -> list[datetime]:
        return [self.start + self.width * (i + 0.5) for i in range(self.count)]

    @property
    def end(self) -> datetime:
        return self.start + self.width * self.count


def make_buckets(since: datetime, until: datetime, target: int = 24) -> Buckets:
    """At most ``target`` buckets of a round width, aligned to it."""
    span = max((until - since).total_seconds(), 1.0)
    width = next((w for w in _WIDTHS_S if span / w <= target), _WIDTHS_S[-1])
    start = datetime.fromtimestamp(math.floor(since.timestamp() / width) * width, UTC)
    count = max(1, math.ceil((until - start).total_seconds() / width))
    return Buckets(start, timedelta(seconds=width), count)


@dataclass
class Signals:
    buckets: Buckets
    models: list[str]
    slices: list[str]
    accuracy: dict[tuple[str, str], list[Rate]] = field(default_factory=dict)
    output_psi: dict[tuple[str, str], list[float | None]] = field(default_factory=dict)
    input_drift: dict[tuple[str, str], list[float | None]] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)  # model -> what drift is against
    gate_model: str | None = None
    bars: dict[str, float] = field(default_factory=dict)  # slice -> gate_model's bar

    def pooled(self, model: str, slice_key: str) -> Rate:
        rates = self.accuracy.get((model, slice_key), [])
        return Rate(sum(r.n for r in rates), sum(r.correct for r in rates))

    def to_json(self) -> dict[str, Any]:
        def key(k: tuple[str, str]) -> str:
            return f"{k[0]}|{k[1]}"
        return {
            "bucket_start": self.buckets.start.isoformat(),
            "bucket_s": self.buckets.width.total_seconds(), "buckets": self.buckets.count,
            "models": self.models, "slices": self.slices, "reference": self.reference,
            "gate_model": self.gate_model, "bars": self.bars,
            "accuracy": {key(k): [[r.n, r.correct] for r in v] for k, v in self.accuracy.items()},
            "output_psi": {key(k): v for k, v in self.output_psi.items()},
            "input_drift": {key(k): v for k, v in self.input_drift.items()},
        }


def smoothed_psi(expected: Mapping[str, float], counts: Counter[str]) -> float:
    """PSI of observed ``counts`` against ``expected``, half a count added per category."""
    keys = set(expected) | set(counts)
    return stats.psi(expected, {k: counts.get(k, 0) + _SMOOTH for k in keys})


def _language(r: LogEntry) -> str | None:
    v = r.features.get("language")
    return None if v is None else str(v)


def _label(r: LogEntry) -> str:
    v = r.features.get("predicted_label")
    return NO_LABEL if v is None else str(v)


def _num(r: LogEntry, name: str) -> float | None:
    v = feature_value(r.features, name)
    return None if isinstance(v, bool) or not isinstance(v, int | float) else float(v)


Measure = Callable[[Sequence[LogEntry]], float | None]


def _series(bucketed: Sequence[Sequence[LogEntry]], measure: Measure) -> list[float | None]:
    """Per bucket with rows: the measure over a trailing window of at least ``MIN_ROWS``
    rows, reaching back at most ``TRAILING`` buckets (else a gap)."""
    out: list[float | None] = []
    for i, rows in enumerate(bucketed):
        window = list(rows)
        back = i
        while rows and len(window) < MIN_ROWS and back > 0 and i - back < TRAILING - 1:
            back -= 1
            window.extend(bucketed[back])
        out.append(measure(window) if rows and len(window) >= MIN_ROWS else None)
    return out


def _psi_of(expected: Mapping[str, float], value: Callable[[LogEntry], str | None]) -> Measure:
    def measure(rows: Sequence[LogEntry]) -> float | None:
        counts = Counter(v for r in rows if (v := value(r)) is not None)
        return smoothed_psi(expected, counts) if counts and expected else None
    return measure


def _ks_of(name: str, base: Baseline | None, pool: Sequence[float]) -> Measure | None:
    ref = base.numeric.get(name) if base is not None else None
    if base is not None and ref and len(ref) == len(base.quantile_levels) >= 2:
        levels = list(base.quantile_levels)

        def against_baseline(rows: Sequence[LogEntry]) -> float | None:
            xs = [v for r in rows if (v := _num(r, name)) is not None]
            return stats.ks_to_quantiles(xs, levels, ref) if xs else None
        return against_baseline
    if not pool:
        return None

    def against_pool(rows: Sequence[LogEntry]) -> float | None:
        xs = [v for r in rows if (v := _num(r, name)) is not None]
        return stats.ks_statistic(xs, pool) if xs else None
    return against_pool


def compute_signals(
    rows: Sequence[LogEntry], *, since: datetime, until: datetime,
    slice_features: Sequence[str], baselines: BaselineFn, gate_model: str | None = None,
    target: int = 24,
) -> Signals:
    """The signals of ``rows`` (any adapters of one route) in ``[since, until)``."""
    per_model = Counter(r.model_id for r in rows)
    b = make_buckets(since, until,
                     max(4, min(target, min(per_model.values(), default=0) // 20)))
    keyer = slice_keyer(slice_features)
    slices_of = {r.request_id: (ALL, *keyer(r)) for r in rows}
    sig = Signals(b, sorted({r.model_id for r in rows}),
                  [ALL, *sorted({k for ks in slices_of.values() for k in ks} - {ALL})])
    by: dict[tuple[str, str], list[list[LogEntry]]] = defaultdict(
        lambda: [[] for _ in range(b.count)])
    for r in rows:
        if (i := b.index(r.served_at)) is not None:
            for s in slices_of[r.request_id]:
                by[(r.model_id, s)][i].append(r)
    pools = {s: [r for r in rows if s in slices_of[r.request_id]] for s in sig.slices}
    for m in sig.models:
        base = baselines(m)
        labels = dict(base.labels) if base is not None and base.labels else None
        sig.reference[m] = "training data" if labels else "whole window"
        for s in sig.slices:
            bucketed = by.get((m, s)) or [[] for _ in range(b.count)]
            sig.accuracy[(m, s)] = [Rate.of(x) for x in bucketed]
            expected = labels or dict(Counter(map(_label, pools[s])))
            sig.output_psi[(m, s)] = _series(bucketed, _psi_of(expected, _label))
        _input_drift(sig, m, base, by.get((m, ALL)) or [[] for _ in range(b.count)], rows)
    gate = baselines(gate_model) if gate_model is not None else None
    if gate is not None:
        sig.gate_model = gate_model
        sig.bars = {s: bar for s in sig.slices if (bar := _gate(gate, s)) is not None}
    return sig


def _gate(base: Baseline, slice_key: str) -> float | None:
    feature, _, value = slice_key.partition("=")
    for k in ((f"slice_{feature}_{value}", f"slice_{value}") if value else ("overall",)):
        if k in base.gates:
            return base.gates[k]
    return None


def _input_drift(sig: Signals, model: str, base: Baseline | None,
                 bucketed: Sequence[Sequence[LogEntry]], pool: Sequence[LogEntry]) -> None:
    lang = base.features.get("language") if base is not None else None
    if not lang:
        lang = dict(Counter(x for r in pool if (x := _language(r)) is not None))
    sig.input_drift[("language (PSI)", model)] = _series(bucketed, _psi_of(lang, _language))
    for name in NUMERIC_INPUTS:
        values = [v for r in pool if (v := _num(r, name)) is not None]
        measure = _ks_of(name, base, values)
        if measure is not None:
            sig.input_drift[(f"{name} (KS D)", model)] = _series(bucketed, measure)
