"""Counts from the log into per-adapter and per-slice figures: request rate, errors,
latency percentiles (estimated from the latency histogram), accuracy where labelled, drift
status, and the same per time bucket."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lora_router.router.dashboard.histogram import quantile
from lora_router.router.dashboard.queries import Counts
from lora_router.router.dashboard.views import DriftBadge, DriftLevel, ModelStats, Point, SliceStats
from lora_router.router.drift.events import Alert

ALL = "all"
_UNKNOWN = DriftBadge(status="unknown", alerts=0)
_RANK: dict[DriftLevel, int] = {"ok": 0, "warning": 1, "critical": 2}


@dataclass(slots=True)
class _Acc:
    """Running figures of one group (or of one bucket of it)."""

    requests: int = 0
    errors: int = 0
    latency: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # bin: rows
    labelled: int = 0
    correct: int = 0

    def add(self, c: Counts) -> None:
        self.requests += c.requests
        self.errors += c.errors
        self.latency[c.latency_bin] += c.requests
        self.labelled += c.labelled
        self.correct += c.correct

    def percentiles(self) -> tuple[float | None, float | None]:
        return _round(quantile(self.latency, 0.5)), _round(quantile(self.latency, 0.95))

    @property
    def accuracy(self) -> float | None:
        return round(self.correct / self.labelled, 4) if self.labelled else None


@dataclass(slots=True)
class _Group:
    total: _Acc = field(default_factory=_Acc)
    buckets: dict[int, _Acc] = field(default_factory=lambda: defaultdict(_Acc))


@dataclass(frozen=True, slots=True)
class DriftIndex:
    """Open alerts by adapter, and by (adapter, detector); ``level`` when there is no
    monitor (``off``) or it cannot be read (``unknown``)."""

    alerts: Sequence[Alert] = ()
    level: DriftLevel | None = None

    def badge(self, model_id: str, slice_key: str) -> DriftBadge:
        if self.level is not None:
            return DriftBadge(status=self.level, alerts=0)
        found = [a for a in self.alerts if a.model_id == model_id
                 and (slice_key == ALL or a.detector == slice_key)]
        worst: DriftLevel = "ok"
        for a in found:
            if _RANK[a.severity] > _RANK[worst]:
                worst = a.severity
        return DriftBadge(status=worst, alerts=len(found))


@dataclass(frozen=True, slots=True)
class Frame:
    """The window the figures cover: ``[since, until)`` in buckets of ``bucket_s``."""

    since: datetime
    until: datetime
    bucket_s: int

    @property
    def buckets(self) -> int:
        return max(1, math.ceil((self.until - self.since).total_seconds() / self.bucket_s))

    def clamp(self, i: int) -> int:
        return min(max(i, 0), self.buckets - 1)

    def start(self, i: int) -> datetime:
        return self.since + timedelta(seconds=i * self.bucket_s)


def summarize(
    counts: Iterable[Counts], frame: Frame, *, protected: frozenset[str] = frozenset()
) -> list[ModelStats]:
    """Figures per adapter (sorted by id): overall, then each slice seen (sorted). Rates
    are per minute of the frame. Drift status: ``unknown`` until :func:`with_drift`."""
    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    routes: dict[str, set[str]] = defaultdict(set)
    arms: dict[str, set[str]] = defaultdict(set)
    for c in counts:
        i = frame.clamp(c.bucket)
        for key in (ALL, *c.slices):
            g = groups[(c.model_id, key)]
            g.total.add(c)
            g.buckets[i].add(c)
        if c.route:
            routes[c.model_id].add(c.route)
        if c.arm:
            arms[c.model_id].add(c.arm)
    minutes = max((frame.until - frame.since).total_seconds() / 60, 1 / 60)

    def stats(model_id: str, key: str) -> SliceStats:
        g = groups[(model_id, key)]
        p50, p95 = g.total.percentiles()
        return SliceStats(
            slice=key, protected=key in protected, requests=g.total.requests,
            errors=g.total.errors, rate_per_min=round(g.total.requests / minutes, 3),
            latency_p50_ms=p50, latency_p95_ms=p95, labelled=g.total.labelled,
            accuracy=g.total.accuracy, drift=_UNKNOWN,
            series=[_point(frame, i, g.buckets.get(i)) for i in range(frame.buckets)],
        )

    out = []
    for model_id in sorted({m for m, _ in groups}):
        keys = sorted(k for m, k in groups if m == model_id and k != ALL)
        out.append(ModelStats(
            model_id=model_id, routes=sorted(routes[model_id]), arms=sorted(arms[model_id]),
            overall=stats(model_id, ALL), slices=[stats(model_id, k) for k in keys],
        ))
    return out


def with_drift(models: Sequence[ModelStats], drift: DriftIndex) -> list[ModelStats]:
    """``models`` with each adapter's and slice's drift status from ``drift`` (copies)."""

    def badged(model_id: str, s: SliceStats) -> SliceStats:
        return s.model_copy(update={"drift": drift.badge(model_id, s.slice)})

    return [m.model_copy(update={
        "overall": badged(m.model_id, m.overall),
        "slices": [badged(m.model_id, s) for s in m.slices],
    }) for m in models]


def _point(frame: Frame, i: int, acc: _Acc | None) -> Point:
    acc = acc or _Acc()
    p50, p95 = acc.percentiles()
    return Point(t=frame.start(i), requests=acc.requests, errors=acc.errors, p50_ms=p50,
                 p95_ms=p95, labelled=acc.labelled, accuracy=acc.accuracy)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
