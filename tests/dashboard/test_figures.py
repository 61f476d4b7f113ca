"""The dashboard's figures from the log's counts, the latency estimate, the audit's
"before -> after", and the cache that keeps polling from reaching the database more than
once per interval."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from lora_router.router.dashboard.cache import TtlCache
from lora_router.router.dashboard.histogram import EDGES, NO_LATENCY, bin_of, quantile
from lora_router.router.dashboard.queries import Counts
from lora_router.router.dashboard.traffic import DriftIndex, Frame, summarize, with_drift
from lora_router.router.dashboard.views import describe_change
from lora_router.router.drift.events import Alert
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.log.sink import percentile

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FRAME = Frame(T0, T0 + timedelta(minutes=15), 30)
V1, V2 = "support-triage@v1", "support-triage@v2"


def counts(model_id: str = V1, *, bucket: int = 0, lang: str = "en", latency: float = 10.0,
           n: int = 1, correct: int | None = None, errors: int = 0,
           arm: str = "live") -> Counts:
    """``n`` requests; ``correct`` of them labelled right (None: none labelled)."""
    return Counts(model_id=model_id, route="support-triage", arm=arm,
                  slices=(f"language={lang}",), bucket=bucket, latency_bin=bin_of(latency),
                  requests=n, errors=errors, labelled=0 if correct is None else n,
                  correct=correct or 0)


def alert(model_id: str, detector: str, severity: str = "critical") -> Alert:
    return Alert.model_validate({
        "id": 1, "created_at": T0, "route": "support-triage", "model_id": model_id,
        "arm": "canary", "signal": "slice_quality", "detector": detector,
        "method": "bernoulli-cusum", "severity": severity, "window_start": None,
        "window_end": None, "n": 30, "estimate": 0.1, "bound": 0.2, "statistic": 5.0,
        "threshold": 4.0, "baseline": 0.9,
    })


def test_figures_per_adapter_and_slice() -> None:
    rows = [
        counts(n=10, latency=20.0, correct=10),
        counts(bucket=3, lang="es", n=4, latency=100.0, correct=2),
        counts(V2, bucket=29, arm="canary", errors=1),
        counts(V2, bucket=31, arm="canary"),  # served after the frame's end: its last bucket
    ]
    models = summarize(rows, FRAME, protected=frozenset({"language=es"}))
    assert [m.model_id for m in models] == [V1, V2]
    v1 = models[0]
    assert v1.arms == ["live"] and v1.routes == ["support-triage"]
    assert (v1.overall.requests, v1.overall.labelled, v1.overall.errors) == (14, 14, 0)
    assert v1.overall.accuracy == round(12 / 14, 4)
    assert v1.overall.rate_per_min == round(14 / 15, 3)
    en, es = v1.slices
    assert (en.slice, en.protected, es.slice, es.protected) == (
        "language=en", False, "language=es", True)
    assert en.latency_p50_ms is not None and 20.0 / 1.2 <= en.latency_p50_ms <= 20.0 * 1.2
    assert es.accuracy == 0.5
    # 30 buckets of 30 s over 15 minutes
    assert len(v1.overall.series) == 30
    assert [p.requests for p in v1.overall.series[:5]] == [10, 0, 0, 4, 0]
    assert v1.overall.series[3].t == T0 + timedelta(seconds=90)
    assert v1.overall.series[1].p50_ms is None and v1.overall.series[1].accuracy is None
    v2 = models[1]
    assert (v2.overall.errors, v2.overall.labelled, v2.overall.accuracy) == (1, 0, None)
    assert v2.overall.series[-1].requests == 2


def test_drift_status_per_adapter_and_slice() -> None:
    rows = [counts(V2, lang="es"), counts(V2, lang="en"), counts(V1)]
    assert {m.overall.drift.status for m in summarize(rows, FRAME)} == {"unknown"}
    index = DriftIndex(alerts=[alert(V2, "language=es"), alert(V2, "overall", "warning")])
    v1, v2 = with_drift(summarize(rows, FRAME), index)
    assert (v2.overall.drift.status, v2.overall.drift.alerts) == ("critical", 2)
    by_slice = {s.slice: s.drift for s in v2.slices}
    assert by_slice["language=es"].status == "critical"
    assert by_slice["language=en"].status == "ok"
    assert v1.overall.drift.status == "ok"
    off = with_drift(summarize(rows, FRAME), DriftIndex(level="off"))
    assert {m.overall.drift.status for m in off} == {"off"}


def test_latency_percentiles_are_within_one_bin_of_the_exact_ones() -> None:
    rng = random.Random(7)
    for _ in range(20):
        values = [rng.lognormvariate(rng.uniform(1, 7), rng.uniform(0.1, 1.5))
                  for _ in range(rng.randint(1, 400))]
        hist: dict[int, int] = {}
        for v in values:
            hist[bin_of(v)] = hist.get(bin_of(v), 0) + 1
        for q in (0.5, 0.95):
            exact = percentile(sorted(values), q)
            est = quantile(hist, q)
            assert exact is not None and est is not None
            if exact < EDGES[-1]:
                assert exact / 1.2 - 1 <= est <= exact * 1.2 + 1, (q, exact, est)
    assert quantile({NO_LATENCY: 5}, 0.5) is None and quantile({}, 0.5) is None
    assert quantile({bin_of(10**7): 3}, 0.5) == EDGES[-1]  # beyond the last edge


def test_an_audit_entry_says_what_changed() -> None:
    before = RouteState(route="support-triage", live=V1, canary=Split(adapter=V2, percent=50))
    after = before.model_copy(update={"canary": None, "version": 3})
    assert describe_change(before, after) == ["canary: support-triage@v2 50% -> none"]
    flip = before.model_copy(update={"live": V2, "rollback_target": V1, "canary": None,
                                     "guard": GuardPolicy(protect=("language=es",))})
    assert describe_change(before, flip) == [
        f"live: {V1} -> {V2}", "canary: support-triage@v2 50% -> none",
        f"rollback_target: none -> {V1}", "guard: none -> alerts only, protect [language=es]",
    ]
    assert describe_change(None, before) == [
        f"live: none -> {V1}", "canary: none -> support-triage@v2 50%"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_cache_computes_once_per_interval_for_every_caller() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(2.0, clock=clock)
    calls = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    waiting = [asyncio.create_task(cache.get("k", compute)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [1] * 20  # one query for 20 pollers
    clock.now = 1.9
    assert await cache.get("k", compute) == 1
    clock.now = 2.0
    assert await cache.get("k", compute) == 2  # expired
    assert await cache.get("k", compute, stamp=7) == 3  # another stamp: stale at once
    assert await cache.get("k", compute, stamp=7) == 3


async def test_a_failed_computation_is_not_cached() -> None:
    cache: TtlCache[int] = TtlCache(60.0)

    async def fail() -> int:
        raise OSError("down")

    async def ok() -> int:
        return 5

    with pytest.raises(OSError):
        await cache.get("k", fail)
    assert await cache.get("k", ok) == 5
