"""The drift statistics on distributions whose answers are known (fixed seeds)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from lora_router.router.drift import stats

LEVELS = [i / 20 for i in range(21)]


def _normal(rng: random.Random, n: int, mu: float = 0.0, sd: float = 1.0) -> list[float]:
    return [rng.gauss(mu, sd) for _ in range(n)]


def _normal_quantiles(mu: float) -> list[float]:
    # the 0 and 1 quantiles are infinite: clip at +-4 sd, as a stored baseline's min/max are
    nd = NormalDist(mu, 1.0)
    return [nd.inv_cdf(min(max(u, 3.2e-5), 1 - 3.2e-5)) for u in LEVELS]


def test_psi_is_zero_for_the_same_distribution_and_matches_the_formula() -> None:
    assert stats.psi({"en": 8, "es": 2}, {"en": 0.8, "es": 0.2}) == pytest.approx(0.0)
    # (0.7 - 0.5) ln(0.7/0.5) + (0.3 - 0.5) ln(0.3/0.5)
    expected = 0.2 * math.log(1.4) + 0.2 * math.log(0.5 / 0.3)
    assert stats.psi({"a": 0.5, "b": 0.5}, {"a": 0.7, "b": 0.3}) == pytest.approx(expected)


def test_psi_floors_an_empty_category_instead_of_going_infinite() -> None:
    value = stats.psi({"en": 1.0}, {"en": 0.5, "xx": 0.5})
    assert math.isfinite(value) and value > 1.0


def test_jensen_shannon_is_symmetric_bounded_and_one_for_disjoint_supports() -> None:
    p, q = {"a": 0.9, "b": 0.1}, {"a": 0.4, "b": 0.6}
    assert stats.js_divergence(p, p) == pytest.approx(0.0)
    assert stats.js_divergence(p, q) == pytest.approx(stats.js_divergence(q, p))
    assert 0 < stats.js_divergence(p, q) < 1
    assert stats.js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)


def test_ks_two_sample_same_and_shifted_normals() -> None:
    rng = random.Random(7)
    a, b = _normal(rng, 800), _normal(rng, 800)
    d_same = stats.ks_statistic(a, b)
    assert stats.ks_pvalue(d_same, 800, 800) > 0.05
    shifted = _normal(rng, 800, mu=0.5)
    d = stats.ks_statistic(a, shifted)
    # population KS distance of N(0,1) vs N(0.5,1): 2 * Phi(0.25) - 1 = 0.197
    assert d == pytest.approx(2 * NormalDist().cdf(0.25) - 1, abs=0.05)
    assert stats.ks_pvalue(d, 800, 800) < 1e-6


def test_ks_pvalue_matches_the_kolmogorov_distribution() -> None:
    # P(K > 1.358) = 0.05 for the limiting distribution (large n)
    assert stats.ks_pvalue(1.358 / math.sqrt(1e6), 1_000_000) == pytest.approx(0.05, abs=2e-3)


def test_ks_against_stored_quantiles() -> None:
    rng = random.Random(11)
    same = _normal(rng, 2000)
    assert stats.ks_to_quantiles(same, LEVELS, _normal_quantiles(0.0)) < 0.05
    moved = _normal(rng, 2000, mu=1.0)
    d = stats.ks_to_quantiles(moved, LEVELS, _normal_quantiles(0.0))
    # population distance 2 * Phi(0.5) - 1 = 0.383, less what the 21-point grid smooths
    assert d == pytest.approx(2 * NormalDist().cdf(0.5) - 1, abs=0.05)


def test_wasserstein_of_a_shift_is_the_shift() -> None:
    rng = random.Random(3)
    a, b = _normal(rng, 3000), _normal(rng, 3000, mu=1.0)
    assert stats.wasserstein(a, b) == pytest.approx(1.0, abs=0.08)
    assert stats.wasserstein(a, a) == pytest.approx(0.0)
    assert stats.wasserstein_to_quantiles(b, LEVELS, _normal_quantiles(0.0)) == pytest.approx(
        1.0, abs=0.1)


def test_wasserstein_of_point_masses() -> None:
    assert stats.wasserstein([0.0, 0.0], [2.0]) == pytest.approx(2.0)
    assert stats.wasserstein([0.0, 1.0], [0.0, 3.0]) == pytest.approx(1.0)


def test_wilson_interval_known_values() -> None:
    lo, hi = stats.wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_two_proportion_z_is_the_chi_square_root() -> None:
    # reference 90/100 right, current 60/100 right: pooled 0.75
    z, p = stats.two_proportion_z(90, 100, 60, 100)
    expected = 0.3 / math.sqrt(0.75 * 0.25 * 0.02)
    assert z == pytest.approx(expected)
    assert p == pytest.approx(1 - NormalDist().cdf(expected))
    assert stats.two_proportion_z(5, 10, 0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("bad", [[], None])
def test_empty_samples_are_refused(bad: list[float] | None) -> None:
    with pytest.raises(ValueError):
        stats.ks_statistic(bad or [], [1.0])
    with pytest.raises(ValueError):
        stats.wasserstein([1.0], bad or [])
