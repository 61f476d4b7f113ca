"""The drift monitor: reads the inference log incrementally and raises alerts with evidence.

State is kept per stream: route x adapter (``model_id``) x arm (live, canary, shadow).
Each stream has:

- quality tests (:mod:`router.drift.quality`): the overall one and one per slice the
  route's guard protects, fed by labels as they arrive (late, and only for some requests),
  each a calibrated sequential test against its gate bar. The bars of a live adapter are
  its own baseline's; a canary's or shadow's are the live adapter's (a candidate must be
  at least as good as what it would replace), falling back to its own;
- input and output drift (:mod:`router.drift.inputs`) on a window of recent requests
  against the adapter's own baseline.

One :meth:`DriftMonitor.tick` reads what is new (rows, first labels), updates the tests and
commits the checkpoint (cursors + test state) together with the alerts it raised, in one
transaction that fails if another monitor committed since (then this one drops its
in-memory state and reloads). The guard acts on the stored alerts afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lora_router.router.drift import alerts as metrics
from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.baseline_source import BaselineFn
from lora_router.router.drift.events import Alert, AlertIn, Checkpoint, LogRow
from lora_router.router.drift.inputs import DriftFinding, StreamInputs
from lora_router.router.drift.policy import DEFAULT_POLICY, GuardPolicy
from lora_router.router.drift.quality import OVERALL, QualityAlarm, StreamQuality
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore

log = logging.getLogger(__name__)

STREAM_TTL = timedelta(days=14)  # a stream with no traffic this long leaves the checkpoint


@dataclass(slots=True)
class Stream:
    route: str
    model_id: str
    arm: str
    quality: StreamQuality
    inputs: StreamInputs
    last_seen: datetime
    signature: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.route}|{self.model_id}|{self.arm}"


@dataclass(frozen=True, slots=True)
class TickReport:
    rows: int
    labels: int
    alerts: list[Alert] = field(default_factory=list)


class DriftMonitor:
    """See the module docstring. ``holder`` names this monitor in the checkpoint;
    ``outbox``: queue every alert for the webhook."""

    def __init__(
        self, store: DriftStore, routes: RouteStore, baselines: BaselineFn, *,
        holder: str, outbox: bool = False, window: int = 1000, batch: int = 5000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.routes = routes
        self.baselines = baselines
        self.holder = holder
        self.outbox = outbox
        self.window = window
        self.batch = batch
        self.clock = clock or (lambda: datetime.now(UTC))
        self.streams: dict[str, Stream] = {}
        self._saved: dict[str, Any] = {}
        self._cp: Checkpoint | None = None

    def reset(self) -> None:
        """Forget the in-memory state; the next tick reloads the checkpoint."""
        self.streams.clear()
        self._saved = {}
        self._cp = None

    async def tick(self) -> TickReport:
        """Read what is new, update the tests, commit the checkpoint with the alerts."""
        if self._cp is None:
            self._cp = await self.store.load_checkpoint()
            self._saved = dict(self._cp.state.get("streams", {}))
        cp = self._cp
        rows = await self.store.read_rows(cp.rows, self.batch)
        labels = await self.store.read_labels(cp.labels, self.batch)
        if not rows and not labels:
            return TickReport(0, 0)
        try:
            found = self._observe(rows, labels)
            new = Checkpoint(cp.version, rows[-1].pos if rows else cp.rows,
                             labels[-1].pos if labels else cp.labels, self._state())
            stored = await self.store.commit_tick(new, cp.version, found, holder=self.holder,
                                                  outbox=self.outbox)
        except BaseException:
            self.reset()  # what was applied in memory is not committed: reload it
            raise
        self._cp = new
        for alert in stored:
            metrics.observe_alert(alert)
            log.warning("drift alert #%s: %s", alert.id, alert.summary())
        return TickReport(len(rows), len(labels), stored)

    def _observe(self, rows: Sequence[LogRow], labels: Sequence[LogRow]) -> list[AlertIn]:
        found: list[AlertIn] = []
        touched: dict[str, Stream] = {}
        for row in rows:
            stream = self._stream(row)
            if stream is not None:
                stream.inputs.observe(row)
                touched[stream.key] = stream
        for stream in touched.values():
            if stream.inputs.due():
                for f in stream.inputs.evaluate(self.baselines(stream.model_id)):
                    found.append(self._input_alert(stream, f))
        for row in labels:
            stream = self._stream(row)
            if stream is None:
                continue
            for alarm in stream.quality.observe(row):
                found.append(self._quality_alert(stream, alarm))
            touched[stream.key] = stream
        for stream in touched.values():
            metrics.observe_stream(stream.route, stream.arm, stream.quality)
            metrics.observe_inputs(stream.route, stream.arm, stream.inputs)
        return found

    def _stream(self, row: LogRow) -> Stream | None:
        if row.route is None or row.arm is None or row.status != "ok":
            return None
        key = f"{row.route}|{row.model_id}|{row.arm}"
        stream = self.streams.get(key)
        if stream is None:
            stream = Stream(row.route, row.model_id, row.arm, StreamQuality(),
                            StreamInputs(window=self.window), row.served_at)
            self.streams[key] = stream
        stream.last_seen = max(stream.last_seen, row.served_at)
        self._configure(stream)
        return stream

    def _configure(self, stream: Stream) -> None:
        state = self.routes.get(stream.route)
        policy = (state.guard if state is not None else None) or DEFAULT_POLICY
        own = self.baselines(stream.model_id)
        gates = self._gates(stream, state, own)
        signature = (policy, tuple(sorted(gates.items())))
        if signature == stream.signature:
            return
        first = not stream.signature
        stream.signature = signature
        stream.quality.configure(policy, gates, own)
        saved = self._saved.pop(stream.key, None) if first else None
        if isinstance(saved, dict):
            stream.quality.load_json(saved.get("quality", {}))
            stream.inputs.load_json(saved.get("inputs", {}))

    def _gates(self, stream: Stream, state: RouteState | None,
               own: Baseline | None) -> dict[str, float]:
        if stream.arm != "live" and state is not None and state.live != stream.model_id:
            incumbent = self.baselines(state.live)
            if incumbent is not None and incumbent.gates:
                return dict(incumbent.gates)
        return dict(own.gates) if own is not None else {}

    def _state(self) -> dict[str, Any]:
        horizon = self.clock() - STREAM_TTL
        streams = {k: v for k, v in self._saved.items()
                   if isinstance(v, dict) and str(v.get("last_seen", "")) >= horizon.isoformat()}
        for key, s in self.streams.items():
            streams[key] = {"quality": s.quality.to_json(), "inputs": s.inputs.to_json(),
                            "last_seen": s.last_seen.isoformat()}
        return {"streams": streams}

    # --- alerts ---------------------------------------------------------------------------

    def _route_context(self, route: str) -> tuple[int | None, GuardPolicy | None]:
        state = self.routes.get(route)
        return (state.version, state.guard) if state is not None else (None, None)

    def _quality_alert(self, s: Stream, alarm: QualityAlarm) -> AlertIn:
        version, guard = self._route_context(s.route)
        first, last = alarm.window
        return AlertIn(
            created_at=self.clock(), route=s.route, model_id=s.model_id, arm=s.arm,
            signal="quality" if alarm.test == OVERALL else "slice_quality",
            detector=alarm.test, method="bernoulli-cusum", severity="critical",
            window_start=first.at if first else None, window_end=last.at if last else None,
            n=alarm.n, estimate=alarm.estimate, bound=alarm.ci[1], statistic=alarm.statistic,
            threshold=alarm.design.h, baseline=alarm.bar, evidence=alarm.evidence(),
            route_version=version,
            guard_status="pending" if guard is not None and guard.auto_rollback else "off",
        )

    def _input_alert(self, s: Stream, f: DriftFinding) -> AlertIn:
        version, _ = self._route_context(s.route)
        return AlertIn(
            created_at=self.clock(), route=s.route, model_id=s.model_id, arm=s.arm,
            signal="output" if f.signal == "output" else "input", detector=f.feature,
            method=f.method, severity="warning", window_start=f.window[0],
            window_end=f.window[1], n=f.n, estimate=f.statistic, bound=None,
            statistic=f.statistic, threshold=f.threshold, baseline=None,
            evidence={**f.evidence, "n": f.n, "window": {"from": f.window[0].isoformat(),
                                                          "to": f.window[1].isoformat()}},
            route_version=version, guard_status="none",
        )
