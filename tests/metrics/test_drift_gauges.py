"""Drift gauges: each feature's last drift statistic and whether it is in drift, per route
and arm (never per adapter or request), as the monitor evaluates a stream's window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from lora_router.router.drift import alerts
from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.events import LogRow
from lora_router.router.drift.inputs import StreamInputs

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _row(i: int, language: str) -> LogRow:
    return LogRow(pos=(0, i), request_id=f"r{i}", model_id="m@v1", route="gauges",
                  arm="canary", flag_version=1, features={"language": language},
                  served_at=T0 + timedelta(seconds=i), was_correct=None, failure_cluster=None,
                  status="ok")


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_psi_and_in_drift_follow_the_window() -> None:
    baseline = Baseline(adapter_id="m@v1", features={"language": {"en": 0.5, "es": 0.5}}, n=1000)
    inputs = StreamInputs(window=200, every=100, min_rows=100)
    for i in range(200):
        inputs.observe(_row(i, "en" if i % 2 else "es"))
    assert inputs.evaluate(baseline) == []
    alerts.observe_inputs("gauges", "canary", inputs)
    labels = {"route": "gauges", "arm": "canary", "signal": "input", "feature": "language"}
    assert _gauge("lora_router_drift_statistic", **labels, method="psi") == 0.0
    assert _gauge("lora_router_drift_in_drift", **labels) == 0
    for i in range(200, 400):  # Spanish only: a major shift
        inputs.observe(_row(i, "es"))
    (finding,) = inputs.evaluate(baseline)
    alerts.observe_inputs("gauges", "canary", inputs)
    psi = _gauge("lora_router_drift_statistic", **labels, method="psi")
    assert psi == finding.statistic and psi is not None and psi > 0.25
    assert _gauge("lora_router_drift_in_drift", **labels) == 1
