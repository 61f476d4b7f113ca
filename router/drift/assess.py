"""Runbook step 3 (ASSESS): where does one adapter version fail, and against what?

Over one time window, the labelled requests of the adapter are grouped

- by protected slice (``language=es``; the route guard's ``protect`` list, plus every
  value of the features it names, ``language`` by default),
- by input feature (numeric features in quantile bins computed over both adapters' rows,
  entity kinds present) and by output (``predicted_label``),
- and its failures by ``failure_cluster``,

and each group is set against the comparison adapter over the same window and route (the
rollback target, else the route's live adapter, else the route's other adapter with the
most labels; :func:`pick_comparison`), and against a gate bar: the route's live adapter's
when the adapter is not live (a candidate is held to what it would replace, as the monitor
holds it), else its own model card's.

The *failing cluster* is the protected slice (else the input group) with the most excess
failures (``n * (reference accuracy - accuracy)``) among those significantly below their
reference (one-sided two-proportion test, p < 0.01; the gate bar's Wilson bound when there
is no comparison traffic).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lora_router.router.drift import stats
from lora_router.router.drift.baselines import NUMERIC
from lora_router.router.drift.groups import (
    Keyer,
    entity_keyer,
    numeric_keyer,
    output_keyer,
    slice_features,
    slice_keyer,
)
from lora_router.router.drift.queries import LogEntry

MIN_GROUP = 10  # labelled requests a group needs before it can be the failing cluster
P_FAILING = 0.01
UNCLUSTERED = "(unclustered)"


@dataclass(frozen=True, slots=True)
class Rate:
    """Labelled requests and how many were right."""

    n: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return stats.wilson_interval(self.correct, self.n)

    @classmethod
    def of(cls, rows: Iterable[LogEntry]) -> Rate:
        n = correct = 0
        for r in rows:
            if r.was_correct is not None:
                n += 1
                correct += r.was_correct
        return cls(n, correct)


@dataclass(frozen=True, slots=True)
class Group:
    """One group of the adapter's labelled requests, against its references."""

    dimension: str  # overall | slice | feature | output
    key: str  # "language=es", "chars > 52", "predicted_label=billing"
    protected: bool
    model: Rate
    reference: Rate | None  # the comparison adapter, same group and window
    bar: float | None  # the gate bar (model card eval) for this group
    failures: int
    failure_share: float  # of the adapter's labelled failures
    top_cluster: str | None
    top_cluster_share: float
    p_value: float | None  # "lower than the reference", one-sided

    @property
    def delta(self) -> float | None:
        ref = self.ref_accuracy
        acc = self.model.accuracy
        return None if ref is None or acc is None else acc - ref

    @property
    def ref_accuracy(self) -> float | None:
        if self.reference is not None and self.reference.n >= MIN_GROUP:
            return self.reference.accuracy
        return self.bar

    @property
    def significant(self) -> bool:
        if self.model.n < MIN_GROUP:
            return False
        if self.reference is not None and self.reference.n >= MIN_GROUP:
            return self.p_value is not None and self.p_value < P_FAILING
        return self.bar is not None and self.model.ci95[1] < self.bar

    @property
    def excess_failures(self) -> float:
        ref = self.ref_accuracy
        acc = self.model.accuracy
        return 0.0 if ref is None or acc is None else self.model.n * (ref - acc)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(accuracy=self.model.accuracy, ci95=list(self.model.ci95),
                   reference_accuracy=None if self.reference is None
                   else self.reference.accuracy, delta=self.delta,
                   significant=self.significant, excess_failures=self.excess_failures)
        return out


@dataclass(frozen=True, slots=True)
class Cluster:
    """One ``failure_cluster`` of the adapter's failures."""

    cluster: str
    failures: int
    share: float
    reference_failures: int
    top_slice: str | None  # the slice most of these failures fall in
    top_slice_share: float


@dataclass(frozen=True, slots=True)
class Assessment:
    model_id: str
    route: str | None
    comparison: str | None
    comparison_why: str
    since: datetime
    until: datetime
    requests: int
    reference_requests: int
    overall: Group
    slices: list[Group] = field(default_factory=list)
    features: list[Group] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    failing: Group | None = None
    gates_of: str | None = None  # whose gate bars the groups are held to

    def failing_line(self) -> str:
        """The one line a person reads first."""
        g = self.failing
        if g is None:
            return (f"failing cluster: none found: no slice or input group of {self.model_id}"
                    " is significantly below its reference in this window")
        ref = g.ref_accuracy
        against = (f"{g.reference.accuracy:.3f} on {self.comparison} (n={g.reference.n})"
                   if g.reference is not None and g.reference.n >= MIN_GROUP
                   else f"gate bar {ref:.3f}" if ref is not None else "no reference")
        line = (f"failing cluster: {g.key} ({g.dimension}): accuracy {_pct(g.model.accuracy)}"
                f" (n={g.model.n}) vs {against}; {g.failure_share:.0%} of {self.model_id}'s"
                " labelled failures")
        if g.top_cluster is not None:
            line += f"; failure_cluster {g.top_cluster} ({g.top_cluster_share:.0%} of them)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id, "route": self.route, "comparison": self.comparison,
            "comparison_why": self.comparison_why, "since": self.since.isoformat(),
            "until": self.until.isoformat(), "requests": self.requests,
            "reference_requests": self.reference_requests,
            "overall": self.overall.to_json(), "slices": [g.to_json() for g in self.slices],
            "features": [g.to_json() for g in self.features],
            "clusters": [asdict(c) for c in self.clusters],
            "failing": None if self.failing is None else self.failing.to_json(),
            "failing_line": self.failing_line(), "gates_of": self.gates_of,
        }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


# --- comparison ------------------------------------------------------------------------------

def pick_comparison(
    model_id: str, *, candidates: Sequence[tuple[str | None, str]],
    labelled: dict[str, int],
) -> tuple[str | None, str]:
    """The first named candidate (``(adapter, why)``, in preference order) that is not the
    adapter itself and has labelled traffic in the window; else the route's other adapter
    with the most labels; else none (gate bars only)."""
    for adapter, why in candidates:
        if adapter and adapter != model_id and labelled.get(adapter, 0) > 0:
            return adapter, why
    others = sorted(((n, m) for m, n in labelled.items() if m != model_id and n > 0),
                    reverse=True)
    if others:
        return others[0][1], "the route's other adapter with the most labelled requests"
    return None, "no other adapter has labelled traffic here: compared with the gate bars"


# --- grouping --------------------------------------------------------------------------------

def _cluster(r: LogEntry) -> str:
    return r.failure_cluster or UNCLUSTERED


def _bar_for(key: str, gates: dict[str, float]) -> float | None:
    feature, sep, value = key.partition("=")
    if sep:
        for k in (f"slice_{feature}_{value}", f"slice_{value}"):
            if k in gates:
                return gates[k]
    return gates.get("overall")


def _by_key(rows: Iterable[LogEntry], keyer: Keyer) -> dict[str, list[LogEntry]]:
    out: dict[str, list[LogEntry]] = defaultdict(list)
    for r in rows:
        if r.was_correct is None:
            continue
        for k in keyer(r):
            out[k].append(r)
    return out


@dataclass(frozen=True, slots=True)
class _Ctx:
    gates: dict[str, float]
    protect: frozenset[str]
    total_failures: int


def _group(dimension: str, key: str, mine: Sequence[LogEntry], ref: Sequence[LogEntry] | None,
           ctx: _Ctx) -> Group:
    model, reference = Rate.of(mine), None if ref is None else Rate.of(ref)
    failed = [r for r in mine if r.was_correct is False]
    top = Counter(_cluster(r) for r in failed).most_common(1)
    p = None
    if reference is not None and reference.n and model.n:
        p = stats.two_proportion_z(reference.correct, reference.n, model.correct, model.n)[1]
    bar = _bar_for(key, ctx.gates) if dimension in ("slice", "overall") else None
    return Group(
        dimension=dimension, key=key, protected=key in ctx.protect, model=model,
        reference=reference, bar=bar, failures=len(failed),
        failure_share=len(failed) / ctx.total_failures if ctx.total_failures else 0.0,
        top_cluster=top[0][0] if top else None,
        top_cluster_share=top[0][1] / len(failed) if top else 0.0, p_value=p,
    )


def _groups(dimension: str, keyer: Keyer, mine: Sequence[LogEntry],
            ref: Sequence[LogEntry] | None, ctx: _Ctx) -> list[Group]:
    a, b = _by_key(mine, keyer), _by_key(ref or (), keyer)
    out = [_group(dimension, k, a[k], None if ref is None else b.get(k, []), ctx)
           for k in sorted(a)]
    return sorted(out, key=lambda g: (-g.excess_failures, g.key))


def _clusters(mine: Sequence[LogEntry], ref: Sequence[LogEntry],
              slice_features: Sequence[str]) -> list[Cluster]:
    failed = [r for r in mine if r.was_correct is False]
    ref_counts = Counter(_cluster(r) for r in ref if r.was_correct is False)
    keyer = slice_keyer(slice_features)
    out = []
    for name, count in Counter(_cluster(r) for r in failed).most_common():
        in_cluster = [r for r in failed if _cluster(r) == name]
        slices = Counter(k for r in in_cluster for k in keyer(r)).most_common(1)
        out.append(Cluster(
            cluster=name, failures=count, share=count / len(failed),
            reference_failures=ref_counts.get(name, 0),
            top_slice=slices[0][0] if slices else None,
            top_slice_share=slices[0][1] / count if slices else 0.0,
        ))
    return out


def assess(
    mine: Sequence[LogEntry], ref: Sequence[LogEntry], *, model_id: str, route: str | None,
    comparison: str | None, comparison_why: str, since: datetime, until: datetime,
    gates: dict[str, float] | None = None, protect: Sequence[str] = (),
    gates_of: str | None = None,
) -> Assessment:
    """The assessment of ``mine`` (the adapter's rows) against ``ref`` (the comparison's)."""
    labelled_fail = sum(1 for r in mine if r.was_correct is False)
    ctx = _Ctx(dict(gates or {}), frozenset(protect), labelled_fail)
    reference = ref if comparison is not None else None
    features = slice_features(protect)
    slices = _groups("slice", slice_keyer(features), mine, reference, ctx)
    inputs: list[Group] = []
    labelled = [r for r in (*mine, *ref) if r.was_correct is not None]
    for name in NUMERIC:
        keyer = numeric_keyer(name, labelled)
        if keyer is not None:
            inputs += _groups("feature", keyer, mine, reference, ctx)
    inputs += _groups("feature", entity_keyer, mine, reference, ctx)
    inputs += _groups("output", output_keyer, mine, reference, ctx)
    inputs.sort(key=lambda g: (-g.excess_failures, g.key))
    failing = _failing(slices, inputs)
    return Assessment(
        model_id=model_id, route=route, comparison=comparison, comparison_why=comparison_why,
        since=since, until=until, requests=len(mine), reference_requests=len(ref),
        overall=_group("overall", "overall", [r for r in mine if r.was_correct is not None],
                       None if reference is None else
                       [r for r in reference if r.was_correct is not None], ctx),
        slices=slices, features=inputs, clusters=_clusters(mine, ref, features),
        failing=failing, gates_of=gates_of,
    )


def _failing(slices: Sequence[Group], inputs: Sequence[Group]) -> Group | None:
    for groups in (slices, [g for g in inputs if g.dimension == "feature"], inputs):
        found = [g for g in groups if g.significant and g.excess_failures > 0]
        if found:
            return max(found, key=lambda g: (g.protected, g.excess_failures))
    return None
