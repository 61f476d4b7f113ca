"""The Bernoulli CUSUM: exact calibration, detection, minimum evidence, saved state."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from lora_router.router.drift.sequential import (
    BernoulliCusum,
    Observation,
    cusum_arl,
    design_cusum,
    integer_steps,
    llr_steps,
)


def test_integer_steps_keep_the_likelihood_ratio_within_one_percent() -> None:
    up, down = llr_steps(0.87, 0.67)
    u, d = integer_steps(up, down)
    assert abs(u / d - up / down) / (up / down) <= 0.01


def test_arl_of_a_one_state_chart_is_geometric() -> None:
    # threshold 1: any wrong outcome alarms, so the run length is geometric in 1 - p
    assert cusum_arl(0.9, up=1, down=1, threshold=1) == pytest.approx(10.0)
    assert cusum_arl(0.5, up=1, down=1, threshold=1) == pytest.approx(2.0)


def test_design_picks_the_smallest_threshold_reaching_the_target() -> None:
    d = design_cusum(0.87, 0.67, 2000)
    assert d.arl0 >= 2000
    assert cusum_arl(0.87, d.up, d.down, d.threshold - 1) < 2000
    # and it detects the drop it is tuned for within a few dozen outcomes on average
    assert d.arl(0.67) < 60 < d.arl0


def test_calibration_matches_the_running_chart_false_alarm_rate() -> None:
    """The Markov-chain ARL is the chart's real run length: simulate it at p0."""
    design = design_cusum(0.87, 0.67, 300)
    rng = random.Random(5)
    chart = BernoulliCusum(design, min_n=1)
    n, alarms = 150_000, 0
    for _ in range(n):
        if chart.update(rng.random() < 0.87):
            alarms += 1
            chart.restart()
    expected = n / design.arl0
    assert alarms == pytest.approx(expected, rel=0.15)


def test_detects_a_drop_and_reports_the_window_since_the_change() -> None:
    design = design_cusum(0.87, 0.67, 5000)
    rng = random.Random(1)
    chart = BernoulliCusum(design, min_n=20)
    t = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(2000):  # stable
        if chart.update(rng.random() < 0.87, Observation(f"s{i}", t)):
            chart.restart()
    for i in range(1, 500):
        if chart.update(rng.random() < 0.60, Observation(f"d{i}", t)):
            break
    else:
        pytest.fail("no alarm within 500 outcomes after a drop to 0.60")
    assert i < 150
    acc, _lo, hi = chart.run_estimate()
    assert acc is not None and acc < 0.75 and hi < 0.87
    assert chart.statistic >= design.h
    assert chart.run_last is not None and chart.run_last.request_id == f"d{i}"


def test_no_alarm_on_a_handful_of_samples() -> None:
    design = design_cusum(0.87, 0.67, 100)
    chart = BernoulliCusum(design, min_n=20)
    alarms = [chart.update(False) for _ in range(19)]
    assert not any(alarms)
    assert chart.value >= design.threshold  # the evidence is there, the sample is not
    assert chart.update(False)


def test_state_round_trips_and_rescales_to_a_new_design() -> None:
    chart = BernoulliCusum(design_cusum(0.87, 0.67, 1000), min_n=5)
    for ok in (False, False, True, False):
        chart.update(ok, Observation("r", None))
    saved = chart.to_json()
    other = BernoulliCusum(chart.design, min_n=5)
    other.load_json(saved)
    assert (other.value, other.n, other.run_n, other.run_wrong) == (
        chart.value, chart.n, chart.run_n, chart.run_wrong)
    before = chart.statistic
    chart.redesign(design_cusum(0.87, 0.72, 1000))  # another unit
    assert chart.statistic == pytest.approx(before, rel=0.1)


@pytest.mark.parametrize(("p0", "p1"), [(0.6, 0.7), (1.0, 0.5), (0.5, 0.0)])
def test_invalid_rates_are_refused(p0: float, p1: float) -> None:
    with pytest.raises(ValueError):
        design_cusum(p0, p1, 100)
