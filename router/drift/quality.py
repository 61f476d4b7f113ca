"""Quality and slice-quality tests of one stream (route x adapter x arm).

Each stream runs one sequential test on all its labelled requests (``overall``) and one per
protected slice of the route's guard policy, each against its gate bar (the baseline's
``gates``: ``overall``, ``slice_<value>`` or ``slice_<feature>_<value>``; a slice with no
bar of its own is held to ``overall``).

False-alarm budget: the policy's ``false_alarms_per_10k`` is per 10,000 labelled requests
of the stream, all its tests together. With protected slices, the overall test gets a
quarter of it and the slices share the rest equally (they are what the route's owner asked
to guard); with none, the overall test has it all. A test with a part ``b`` of the budget
that sees a share ``s`` of the stream's labels gets an in-control ARL of
``s * 10,000 / b`` of its own outcomes, so that its alarms, counted against the whole
stream, stay within its part. ``s`` is the observed share, shrunk towards the baseline's
share of that slice (or 1/2) by 50 pseudo-labels; the chart is recalibrated as it moves
(a 5 % grid).

After an alarm a test restarts from 0 and alarms again if the drop persists (fresh
evidence each time); an alarm within ``QUIET_LABELS`` of the test's previous one is marked
``repeat`` (stored, not sent to the webhook again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.events import LogRow
from lora_router.router.drift.policy import GuardPolicy, SliceSpec
from lora_router.router.drift.sequential import (
    BernoulliCusum,
    CusumDesign,
    Observation,
    design_cusum,
)

OVERALL = "overall"
OVERALL_PART = 0.25  # the overall test's part of the budget when slices are protected
_PRIOR_LABELS = 50.0
_MIN_ARL0 = 100.0
_MAX_BAR = 0.999
_REDESIGN_EVERY = 25  # stream labels between recalibration checks
_REDESIGN_RATIO = 1.25  # recalibrate when the target ARL moved by more than this factor
QUIET_LABELS = 200  # a test's own labels after an alarm within which the next is a repeat


@dataclass(frozen=True, slots=True)
class QualityAlarm:
    """A test reached its threshold: everything the alert needs."""

    test: str  # OVERALL or a slice key
    bar: float
    gate: str  # the baseline key the bar came from
    design: CusumDesign
    share: float
    statistic: float
    n: int  # labels in the window (since the change-point estimate)
    wrong: int
    estimate: float | None
    ci: tuple[float, float]
    n_total: int
    window: tuple[Observation | None, Observation | None]
    tests: int
    budget: float  # the stream's false-alarm budget per 10k labelled requests
    part: float  # this test's part of it
    repeat: bool  # within QUIET_LABELS of the test's previous alarm

    def evidence(self) -> dict[str, Any]:
        first, last = self.window
        return {
            "window": {
                "from_request": first.request_id if first else None,
                "from": first.at.isoformat() if first and first.at else None,
                "to_request": last.request_id if last else None,
                "to": last.at.isoformat() if last and last.at else None,
            },
            "n": self.n, "wrong": self.wrong, "estimate": self.estimate,
            "ci95": list(self.ci), "statistic": self.statistic,
            "threshold": self.design.h, "baseline": self.bar, "gate": self.gate,
            "method": "bernoulli-cusum", "n_total": self.n_total,
            "design": {
                "p0": self.design.p0, "p1": self.design.p1, "arl0_labels": self.design.arl0,
                "up": self.design.up, "down": self.design.down,
                "threshold_steps": self.design.threshold, "share": self.share,
                "tests": self.tests, "false_alarms_per_10k": self.budget,
                "budget_part": self.part,
            },
            "repeat": self.repeat,
        }


@dataclass(slots=True)
class _Test:
    slice: SliceSpec | None
    bar: float
    gate: str
    prior: float
    part: float  # part of the stream's false-alarm budget
    cusum: BernoulliCusum
    labels: int = 0  # labels of the stream seen while this test existed
    hits: int = 0  # of which in this test's slice
    quiet_until: int = 0  # the test's label count before which an alarm is a repeat


def gate_for(gates: dict[str, float], spec: SliceSpec | None) -> tuple[str, float] | None:
    """(gate key, bar) for the overall test (``spec`` None) or a slice."""
    keys = [OVERALL, "accuracy"]
    if spec is not None:
        keys = [f"slice_{spec.feature}_{spec.value}", f"slice_{spec.value}", *keys]
    for key in keys:
        if key in gates:
            return key, float(gates[key])
    return None


def slice_prior(baseline: Baseline | None, spec: SliceSpec | None) -> float:
    if spec is None:
        return 1.0
    if baseline is not None:
        share = baseline.features.get(spec.feature, {}).get(spec.value)
        if share is not None and share > 0:
            return float(share)
    return 0.5


class StreamQuality:
    """The quality tests of one stream; :meth:`configure` before :meth:`observe`."""

    def __init__(self) -> None:
        self.tests: dict[str, _Test] = {}
        self.policy = GuardPolicy()
        self._labels = 0

    def configure(self, policy: GuardPolicy, gates: dict[str, float],
                  baseline: Baseline | None) -> None:
        """(Re)build the tests for ``policy`` and ``gates``; a test whose bar and design
        inputs did not change keeps its state."""
        self.policy = policy
        wanted: dict[str, tuple[SliceSpec | None, str, float]] = {}
        for spec in [None, *policy.slices()]:
            found = gate_for(gates, spec)
            if found is not None and found[1] > policy.min_drop + 0.01:
                wanted[spec.key if spec else OVERALL] = (spec, *found)
        kept = {k: t for k, t in self.tests.items()
                if k in wanted and (t.gate, t.bar) == wanted[k][1:]
                and t.cusum.min_n == policy.min_labels
                and round(t.cusum.design.p0 - t.cusum.design.p1, 4)
                == round(policy.min_drop, 4)}
        self.tests = kept
        slices = len(wanted) - (OVERALL in wanted)
        for key, (spec, gate, bar) in wanted.items():
            part = _part(spec is None, slices)
            if key in kept:
                kept[key].part = part
                continue
            prior = slice_prior(baseline, spec)
            self.tests[key] = _Test(spec, bar, gate, prior, part, BernoulliCusum(
                self._design(bar, prior, part), min_n=policy.min_labels))

    def _arl0(self, share: float, part: float) -> float:
        return max(share * 10_000 / (self.policy.false_alarms_per_10k * part), _MIN_ARL0)

    def _design(self, bar: float, share: float, part: float) -> CusumDesign:
        p0 = min(bar, _MAX_BAR)
        return design_cusum(p0, p0 - self.policy.min_drop, self._arl0(share, part))

    def _recalibrate(self, test: _Test) -> None:
        """Follow the slice's share, with hysteresis: a threshold that jittered with every
        small move of the estimate would alarm more often than its design says."""
        target = self._arl0(self.share(test), test.part)
        current = test.cusum.design.arl0
        if not (current / _REDESIGN_RATIO <= target <= current * _REDESIGN_RATIO):
            test.cusum.redesign(self._design(test.bar, self.share(test), test.part))

    def share(self, test: _Test) -> float:
        if test.slice is None:
            return 1.0
        s = (test.hits + _PRIOR_LABELS * test.prior) / (test.labels + _PRIOR_LABELS)
        return min(max(s, 0.01), 1.0)

    def observe(self, row: LogRow) -> list[QualityAlarm]:
        """Feed one labelled row to the overall test and the slice tests it belongs to."""
        if row.was_correct is None:
            return []
        self._labels += 1
        obs = Observation(row.request_id, row.served_at)
        alarms = []
        for key, test in self.tests.items():
            test.labels += 1
            if test.slice is not None and not test.slice.matches(row.features):
                continue
            test.hits += 1
            if self._labels % _REDESIGN_EVERY == 0 or test.labels < 4 * _REDESIGN_EVERY:
                self._recalibrate(test)
            if test.cusum.update(row.was_correct, obs):
                alarms.append(self._alarm(key, test, test.cusum.n < test.quiet_until))
                test.quiet_until = test.cusum.n + QUIET_LABELS
                test.cusum.restart()
        return alarms

    def _alarm(self, key: str, test: _Test, repeat: bool) -> QualityAlarm:
        c = test.cusum
        estimate, lo, hi = c.run_estimate()
        return QualityAlarm(
            test=key, bar=test.bar, gate=test.gate, design=c.design, share=self.share(test),
            statistic=c.statistic, n=c.run_n, wrong=c.run_wrong, estimate=estimate,
            ci=(lo, hi), n_total=c.n, window=(c.run_first, c.run_last),
            tests=len(self.tests), budget=self.policy.false_alarms_per_10k, part=test.part,
            repeat=repeat,
        )

    # --- checkpoint state ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {k: {**t.cusum.to_json(), "labels": t.labels, "hits": t.hits, "bar": t.bar,
                    "quiet_until": t.quiet_until}
                for k, t in self.tests.items()}

    def load_json(self, data: dict[str, Any]) -> None:
        """Restore saved tests that still exist with the same bar (after configure)."""
        for key, saved in data.items():
            test = self.tests.get(key)
            if test is None or not isinstance(saved, dict) or saved.get("bar") != test.bar:
                continue
            test.labels = int(saved.get("labels", 0))
            test.hits = int(saved.get("hits", 0))
            test.quiet_until = int(saved.get("quiet_until", 0))
            test.cusum.load_json(saved)


def _part(overall: bool, slices: int) -> float:
    """A test's part of the stream's false-alarm budget (see the module docstring)."""
    if slices == 0:
        return 1.0
    return OVERALL_PART if overall else (1 - OVERALL_PART) / slices
