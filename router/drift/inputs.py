"""Input and output drift of one stream: a rolling window of recent requests vs the baseline.

Categorical features (``language``; the output's ``predicted_label`` against the
baseline's label distribution) are compared with PSI (alert at 0.25, the usual "major
shift"; cleared below 0.1) and Jensen-Shannon divergence (reported). Numeric features
(lengths, entity counts) are compared with the one-sample KS statistic against the
baseline's quantiles (alert when its p-value is below 0.001 *and* D is at least 0.1, so a
big window does not alert on a negligible shift; cleared below half that D) and the
1-Wasserstein distance (reported, also relative to the baseline's interquartile range).
A feature alerts when it crosses into drift and not again until it has cleared.

The window is in memory only: a monitor that takes over starts it empty (the alerts'
"in drift" flags are in the checkpoint, so nothing is raised twice).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lora_router.router.drift import stats
from lora_router.router.drift.baseline_model import NO_LABEL, Baseline
from lora_router.router.drift.events import LogRow
from lora_router.router.drift.policy import feature_value

PSI_ALERT, PSI_CLEAR = 0.25, 0.10
KS_P_ALERT, KS_D_MIN = 1e-3, 0.10
OUTPUT = "predicted_label"


@dataclass(frozen=True, slots=True)
class DriftFinding:
    """One feature crossed into drift."""

    signal: str  # input | output
    feature: str
    method: str  # psi | ks
    statistic: float
    threshold: float
    n: int
    window: tuple[datetime, datetime]
    evidence: dict[str, Any]


def _categorical(value: Any) -> str:
    return NO_LABEL if value is None else str(value)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class StreamInputs:
    """The rolling window of one stream and its evaluation (see the module docstring)."""

    def __init__(self, window: int = 1000, every: int = 100, min_rows: int = 200) -> None:
        self.window = window
        self.every = every
        self.min_rows = min(min_rows, window)
        self.rows: deque[tuple[datetime, dict[str, Any]]] = deque(maxlen=window)
        self.active: set[str] = set()
        self._since_eval = 0
        # (signal, feature, method) -> the statistic of the last evaluation (for metrics)
        self.statistics: dict[tuple[str, str, str], float] = {}

    def observe(self, row: LogRow) -> None:
        self.rows.append((row.served_at, row.features))
        self._since_eval += 1

    def due(self) -> bool:
        return self._since_eval >= self.every and len(self.rows) >= self.min_rows

    def evaluate(self, baseline: Baseline | None) -> list[DriftFinding]:
        """Findings for features that crossed into drift since the last evaluation."""
        self._since_eval = 0
        if baseline is None or len(self.rows) < self.min_rows:
            return []
        span = (self.rows[0][0], self.rows[-1][0])
        findings = []
        checks = [("input", name, dist) for name, dist in baseline.features.items()]
        if baseline.labels:
            checks.append(("output", OUTPUT, baseline.labels))
        for signal, name, dist in checks:
            found = self._categorical(signal, name, dist, span)
            if found is not None:
                findings.append(found)
        for name, quantiles in baseline.numeric.items():
            found = self._numeric(name, baseline, quantiles, span)
            if found is not None:
                findings.append(found)
        return findings

    def _crossed(self, key: str, alert: bool, clear: bool) -> bool:
        if key in self.active:
            if clear:
                self.active.discard(key)
            return False
        if alert:
            self.active.add(key)
            return True
        return False

    def _categorical(self, signal: str, name: str, expected: dict[str, float],
                     span: tuple[datetime, datetime]) -> DriftFinding | None:
        counts = Counter(_categorical(feature_value(f, name)) for _, f in self.rows)
        if signal == "input" and set(counts) == {NO_LABEL}:
            return None  # the feature is not logged for this stream
        value = stats.psi(expected, counts)
        self.statistics[(signal, name, "psi")] = value
        if not self._crossed(f"{signal}:{name}", value >= PSI_ALERT, value < PSI_CLEAR):
            return None
        observed = stats.normalise(counts)
        return DriftFinding(
            signal, name, "psi", value, PSI_ALERT, len(self.rows), span,
            {"psi": value, "js_bits": stats.js_divergence(expected, counts),
             "observed": observed, "baseline": dict(expected), "method": "psi"},
        )

    def _numeric(self, name: str, baseline: Baseline, quantiles: list[float],
                 span: tuple[datetime, datetime]) -> DriftFinding | None:
        levels = baseline.quantile_levels
        values = [v for _, f in self.rows if (v := _numeric(feature_value(f, name))) is not None]
        if len(values) < self.min_rows or len(levels) != len(quantiles):
            return None
        d = stats.ks_to_quantiles(values, levels, quantiles)
        self.statistics[("input", name, "ks")] = d
        p = stats.ks_pvalue(d, len(values), baseline.n or None)
        alert = p < KS_P_ALERT and d >= KS_D_MIN
        if not self._crossed(f"input:{name}", alert, d < KS_D_MIN / 2):
            return None
        w1 = stats.wasserstein_to_quantiles(values, levels, quantiles)
        ref = [stats.quantile_at(levels, quantiles, u) for u in (0.25, 0.5, 0.75)]
        iqr = ref[2] - ref[0]
        xs = sorted(values)
        return DriftFinding(
            "input", name, "ks", d, KS_D_MIN, len(values), span,
            {"ks_d": d, "p_value": p, "wasserstein": w1,
             "wasserstein_per_iqr": w1 / iqr if iqr > 0 else None,
             "observed_quartiles": [stats.empirical_quantile(xs, u) for u in (0.25, 0.5, 0.75)],
             "baseline_quartiles": ref,
             "method": "ks"},
        )

    def to_json(self) -> dict[str, Any]:
        return {"active": sorted(self.active)}

    def load_json(self, data: dict[str, Any]) -> None:
        self.active = set(data.get("active", []))
