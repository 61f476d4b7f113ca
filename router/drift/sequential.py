"""A sequential test on Bernoulli outcomes: the one-sided Bernoulli CUSUM, calibrated.

Each labelled request is an outcome (correct or not). Before a change, the rate of correct
answers is at the release-gate bar ``p0``; the test looks for a drop to ``p1 = p0 - drop``.
Its statistic is Page's CUSUM of the log-likelihood ratio of p1 against p0,
``S = max(0, S + llr)``, with ``llr = ln((1-p1)/(1-p0))`` for a wrong answer and
``ln(p1/p0)`` for a right one; it alarms when ``S`` reaches ``h``. Among tests with the same
false-alarm rate, it minimises the worst-case detection delay for that change (Lorden 1971,
Moustakides 1986).

Calibration is exact, not a rule of thumb: the two steps are scaled and rounded to small
integers (``up`` for a wrong answer, ``down`` for a right one, ratio kept within 1 %), so
the statistic is a Markov chain on ``0 .. H-1`` and its average run length (ARL: outcomes
until an alarm, starting from 0) at any true rate is the solution of one linear system
(Brook & Evans 1972). :func:`design_cusum` picks the smallest integer threshold ``H`` whose
in-control ARL (at ``p0``) reaches the requested ``arl0``; the false-alarm rate is then
``1/arl0`` per outcome, since the chart restarts from 0 after each alarm.

:class:`BernoulliCusum` also keeps what an alert must show: the outcomes since the
statistic last left 0 (the change point's maximum-likelihood estimate), their count and
accuracy, and the first and last request of that window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from lora_router.router.drift.stats import wilson_interval

MAX_STATES = 2500  # bound on the Markov chain's size (and the solve's cost)
_ARL_GRID = 1.05  # ARL targets are rounded up to this geometric grid (cache-friendly)


@dataclass(frozen=True, slots=True)
class CusumDesign:
    """A calibrated chart: integer steps, threshold, and what they mean."""

    p0: float  # in-control rate of correct outcomes (the gate bar)
    p1: float  # the rate the chart is tuned to detect
    up: int  # added on a wrong outcome
    down: int  # subtracted on a right outcome (floor 0)
    threshold: int  # alarm when the statistic reaches it
    arl0: float  # outcomes between false alarms at p0 (exact for the integer chart)
    unit: float  # log-likelihood ratio per integer step

    @property
    def h(self) -> float:
        """The threshold in log-likelihood-ratio units."""
        return self.threshold * self.unit

    def arl(self, p: float) -> float:
        """Average outcomes to an alarm (from 0) when the true rate is ``p``."""
        return cusum_arl(p, self.up, self.down, self.threshold)


def llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """(increase on a wrong outcome, decrease on a right one), both positive."""
    _check_rates(p0, p1)
    return math.log((1 - p1) / (1 - p0)), math.log(p0 / p1)


def _check_rates(p0: float, p1: float) -> None:
    if not (0 < p1 < p0 < 1):
        raise ValueError(f"need 0 < p1 < p0 < 1, got p0={p0}, p1={p1}")


def integer_steps(up: float, down: float, max_down: int = 12) -> tuple[int, int]:
    """Small integers (u, d), d >= 4, with u/d within 1 % of up/down (else the closest)."""
    ratio = up / down
    best: tuple[float, int, int] | None = None
    for d in range(4, max_down + 1):
        u = max(1, round(d * ratio))
        err = abs(u / d - ratio) / ratio
        if best is None or err < best[0]:
            best = (err, u, d)
        if err <= 0.01:
            return u, d
    assert best is not None
    return best[1], best[2]


def cusum_arl(p: float, up: int, down: int, threshold: int) -> float:
    """Average run length from 0 of the integer CUSUM when P(right outcome) = ``p``."""
    if threshold <= 0:
        return 1.0
    if threshold > MAX_STATES:
        raise ValueError(f"threshold {threshold} exceeds {MAX_STATES} states")
    n = threshold
    q = np.zeros((n, n))
    states = np.arange(n)
    q[states, np.maximum(states - down, 0)] += p  # right outcome
    nxt = states + up
    inside = nxt < n
    q[states[inside], nxt[inside]] += 1 - p  # wrong outcome, still below the threshold
    arl = np.linalg.solve(np.eye(n) - q, np.ones(n))
    return float(arl[0])


def design_cusum(p0: float, p1: float, arl0: float) -> CusumDesign:
    """The chart for a drop from ``p0`` to ``p1`` whose in-control ARL is at least
    ``arl0`` outcomes (rates rounded to 1e-4, ``arl0`` up to a 5 % grid)."""
    _check_rates(p0, p1)
    if arl0 < 1:
        raise ValueError(f"arl0 must be at least 1, got {arl0}")
    grid = _ARL_GRID ** math.ceil(math.log(arl0) / math.log(_ARL_GRID) - 1e-9)
    return _design(round(p0, 4), round(p1, 4), round(grid, 6))


@lru_cache(maxsize=512)
def _design(p0: float, p1: float, arl0: float) -> CusumDesign:
    e, c = llr_steps(p0, p1)
    up, down = integer_steps(e, c)
    unit = c / down
    lo, hi = 1, max(up, 1)
    while cusum_arl(p0, up, down, hi) < arl0:  # exponential search, then bisection
        lo, hi = hi, hi * 2
        if hi > MAX_STATES:
            raise ValueError(f"arl0 {arl0} at p0={p0}, p1={p1} needs too many states")
    while lo < hi:
        mid = (lo + hi) // 2
        if cusum_arl(p0, up, down, mid) >= arl0:
            hi = mid
        else:
            lo = mid + 1
    return CusumDesign(p0, p1, up, down, hi, cusum_arl(p0, up, down, hi), unit)


@dataclass(slots=True)
class Observation:
    """Where an outcome came from (for the alert's window)."""

    request_id: str
    at: datetime | None


@dataclass(slots=True)
class BernoulliCusum:
    """The running chart for one stream of outcomes (see the module docstring).

    ``update`` returns True when the statistic reaches the threshold with at least
    ``min_n`` outcomes in its window (since it last left 0); the caller reads the evidence
    and calls :meth:`restart`. With fewer, a statistic at the threshold waits for more
    outcomes (no alarm on a handful of samples, however lopsided), which only lowers the
    false-alarm rate below the design's.
    """

    design: CusumDesign
    min_n: int = 20
    value: int = 0
    n: int = 0  # outcomes seen in total
    alarms: int = 0
    run_n: int = 0  # outcomes since the statistic last left 0
    run_wrong: int = 0
    run_first: Observation | None = None
    run_last: Observation | None = None

    def update(self, correct: bool, obs: Observation | None = None) -> bool:
        self.n += 1
        d = self.design
        self.value = max(0, self.value - d.down) if correct else self.value + d.up
        if self.value == 0:
            self.run_n = self.run_wrong = 0
            self.run_first = self.run_last = None
        else:
            self.run_n += 1
            self.run_wrong += 0 if correct else 1
            if self.run_first is None:
                self.run_first = obs
            self.run_last = obs
        return self.value >= d.threshold and self.run_n >= self.min_n

    def restart(self) -> None:
        """After an alarm: count it and start again from 0."""
        self.alarms += 1
        self.value = self.run_n = self.run_wrong = 0
        self.run_first = self.run_last = None

    def redesign(self, design: CusumDesign) -> None:
        """Switch to another calibration of the same test (same p0/p1 direction): the
        statistic is rescaled to the new unit, so its evidence carries over."""
        if design == self.design:
            return
        scaled = self.value * self.design.unit / design.unit
        self.design = design
        self.value = max(0, round(scaled))

    @property
    def statistic(self) -> float:
        """The statistic in log-likelihood-ratio units."""
        return self.value * self.design.unit

    def run_estimate(self) -> tuple[float | None, float, float]:
        """(accuracy since the change-point estimate, Wilson 95 % interval lo, hi)."""
        if self.run_n == 0:
            return None, 0.0, 1.0
        right = self.run_n - self.run_wrong
        lo, hi = wilson_interval(right, self.run_n)
        return right / self.run_n, lo, hi

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value, "n": self.n, "alarms": self.alarms, "run_n": self.run_n,
            "run_wrong": self.run_wrong, "unit": self.design.unit,
            "run_first": _obs_json(self.run_first), "run_last": _obs_json(self.run_last),
        }

    def load_json(self, data: dict[str, Any]) -> None:
        """Restore a saved state (rescaled if the design changed since)."""
        unit = float(data.get("unit") or self.design.unit)
        self.value = max(0, round(int(data.get("value", 0)) * unit / self.design.unit))
        self.n = int(data.get("n", 0))
        self.alarms = int(data.get("alarms", 0))
        self.run_n = int(data.get("run_n", 0))
        self.run_wrong = int(data.get("run_wrong", 0))
        self.run_first = _obs_from(data.get("run_first"))
        self.run_last = _obs_from(data.get("run_last"))


def _obs_json(obs: Observation | None) -> dict[str, Any] | None:
    if obs is None:
        return None
    return {"request_id": obs.request_id, "at": obs.at.isoformat() if obs.at else None}


def _obs_from(data: Any) -> Observation | None:
    if not isinstance(data, dict) or "request_id" not in data:
        return None
    at = data.get("at")
    return Observation(str(data["request_id"]), datetime.fromisoformat(at) if at else None)
