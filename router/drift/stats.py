"""Distribution distances and bounds for drift, as pure functions (no I/O, no state).

Categorical features (language, predicted label): PSI and Jensen-Shannon divergence between
two distributions given as ``{category: weight}`` (counts or fractions; normalised here).
Numeric features (lengths, entity counts): two-sample Kolmogorov-Smirnov and the
1-Wasserstein distance, either between two samples or between a sample and a reference
given by its quantiles (how :class:`router.drift.baseline_model.Baseline` stores them).
Outcome rates: the Wilson score interval and the two-proportion z test (the fixed-window
test batch tools run, used by ``bench/drift_detection.py`` as the comparison).
The sequential test on outcomes is in :mod:`router.drift.sequential`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence

PSI_EPS = 1e-4  # floor for a category's share: PSI is infinite for an empty bin otherwise


def normalise(weights: Mapping[str, float]) -> dict[str, float]:
    """Fractions summing to 1 (empty or all-zero input: empty dict)."""
    total = float(sum(w for w in weights.values() if w > 0))
    if total <= 0:
        return {}
    return {k: max(w, 0.0) / total for k, w in weights.items()}


def _aligned(
    expected: Mapping[str, float], actual: Mapping[str, float]
) -> list[tuple[float, float]]:
    p, q = normalise(expected), normalise(actual)
    return [(p.get(k, 0.0), q.get(k, 0.0)) for k in sorted(set(p) | set(q))]


def psi(expected: Mapping[str, float], actual: Mapping[str, float], eps: float = PSI_EPS) -> float:
    """Population stability index: sum over categories of (a - e) * ln(a / e), shares
    floored at ``eps``. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift."""
    total = 0.0
    for e, a in _aligned(expected, actual):
        e, a = max(e, eps), max(a, eps)
        total += (a - e) * math.log(a / e)
    return total


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence in bits: symmetric, 0 for equal distributions, 1 at most."""
    total = 0.0
    for a, b in _aligned(p, q):
        m = (a + b) / 2
        if a > 0:
            total += 0.5 * a * math.log2(a / m)
        if b > 0:
            total += 0.5 * b * math.log2(b / m)
    return max(total, 0.0)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    if not a or not b:
        raise ValueError("ks_statistic needs two non-empty samples")
    xs, ys = sorted(a), sorted(b)
    n, m = len(xs), len(ys)
    d = 0.0
    for v in sorted(set(xs) | set(ys)):
        fa = bisect.bisect_right(xs, v) / n
        fb = bisect.bisect_right(ys, v) / m
        d = max(d, abs(fa - fb))
    return d


def ks_pvalue(d: float, n: int, m: int | None = None) -> float:
    """Asymptotic p-value of a KS statistic ``d`` (one sample of size ``n`` against a known
    distribution, or two samples of sizes ``n`` and ``m``), with Stephens' small-sample
    correction of the Kolmogorov distribution."""
    ne = float(n) if m is None else n * m / (n + m)
    if ne <= 0:
        return 1.0
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
    return min(max(total, 0.0), 1.0)


def quantile_cdf(levels: Sequence[float], quantiles: Sequence[float], x: float) -> float:
    """The CDF at ``x`` of the distribution whose quantile function interpolates linearly
    between ``(levels[i], quantiles[i])`` (levels ascending from 0 to 1)."""
    if len(levels) != len(quantiles) or len(levels) < 2:
        raise ValueError("quantile_cdf needs matching levels and quantiles (at least 2)")
    if x < quantiles[0]:
        return 0.0
    if x >= quantiles[-1]:
        return 1.0
    i = bisect.bisect_right(quantiles, x) - 1  # quantiles[i] <= x < quantiles[i+1]
    lo, hi = quantiles[i], quantiles[i + 1]
    if hi <= lo:
        return levels[i + 1]
    return levels[i] + (levels[i + 1] - levels[i]) * (x - lo) / (hi - lo)


def ks_to_quantiles(sample: Sequence[float], levels: Sequence[float],
                    quantiles: Sequence[float]) -> float:
    """One-sample KS statistic of ``sample`` against the reference given by its quantiles."""
    if not sample:
        raise ValueError("ks_to_quantiles needs a non-empty sample")
    xs = sorted(sample)
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = quantile_cdf(levels, quantiles, x)
        d = max(d, abs((i + 1) / n - f), abs(f - i / n))
    # between sample points the empirical CDF is flat while the reference may rise: check
    # the reference's knots too
    for lv, q in zip(levels, quantiles, strict=True):
        fe = bisect.bisect_right(xs, q) / n
        d = max(d, abs(fe - lv))
    return min(d, 1.0)


def empirical_quantile(sorted_xs: Sequence[float], u: float) -> float:
    """The empirical quantile (inverse CDF) at ``u`` of an ascending sample."""
    n = len(sorted_xs)
    return float(sorted_xs[min(int(u * n), n - 1)])


def wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein (earth mover's) distance between two samples: the area between their
    CDFs, in the units of the feature."""
    if not a or not b:
        raise ValueError("wasserstein needs two non-empty samples")
    xs, ys = sorted(a), sorted(b)
    points = sorted(set(xs) | set(ys))
    total = 0.0
    for lo, hi in itertools.pairwise(points):
        fa = bisect.bisect_right(xs, lo) / len(xs)
        fb = bisect.bisect_right(ys, lo) / len(ys)
        total += abs(fa - fb) * (hi - lo)
    return total


def wasserstein_to_quantiles(sample: Sequence[float], levels: Sequence[float],
                             quantiles: Sequence[float], steps: int = 400) -> float:
    """1-Wasserstein distance between a sample and a reference given by its quantiles:
    the integral over u of |F_sample^-1(u) - F_ref^-1(u)| (midpoint rule)."""
    if not sample:
        raise ValueError("wasserstein_to_quantiles needs a non-empty sample")
    xs = sorted(sample)
    total = 0.0
    for k in range(steps):
        u = (k + 0.5) / steps
        total += abs(empirical_quantile(xs, u) - quantile_at(levels, quantiles, u))
    return total / steps


def quantile_at(levels: Sequence[float], quantiles: Sequence[float], u: float) -> float:
    """The reference's quantile at ``u`` (linear between the given levels)."""
    i = min(max(bisect.bisect_right(levels, u) - 1, 0), len(levels) - 2)
    l0, l1 = levels[i], levels[i + 1]
    w = 0.0 if l1 <= l0 else (u - l0) / (l1 - l0)
    return quantiles[i] + w * (quantiles[i + 1] - quantiles[i])


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_z(k_ref: int, n_ref: int, k_cur: int, n_cur: int) -> tuple[float, float]:
    """Pooled two-proportion z test of "the current rate is lower than the reference":
    returns (z, one-sided p-value). z**2 is the 2x2 chi-square statistic (no continuity
    correction). (0, 1) when either sample is empty or the pooled rate is 0 or 1."""
    if n_ref <= 0 or n_cur <= 0:
        return 0.0, 1.0
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    var = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if var <= 0:
        return 0.0, 1.0
    z = (k_ref / n_ref - k_cur / n_cur) / math.sqrt(var)
    return z, normal_sf(z)
