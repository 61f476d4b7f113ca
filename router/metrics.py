"""Per-request Prometheus metrics, and the gauges ``GET /metrics`` refreshes when scraped.

Every request the gateway finishes (served, failed or cancelled; shadow copies too, with
arm ``shadow``) yields one inference record; :meth:`RequestMetrics.tee` wraps the recorder
so that each record also moves the series below. No I/O and no allocation of label tuples
on the request path beyond one dict lookup: the label children of a (route, model_id, arm)
seen before are cached.

Label values are bounded:

- ``route``: a configured route, or ``none`` (a request that named an adapter id or the
  base, or a name that resolved to nothing);
- ``model_id``: the base's name, or an adapter that is resident or registered (has a model
  card); anything else (a garbage model name, an unregistered id) is ``other``;
- ``arm``: ``live``, ``canary``, ``shadow`` (route requests), ``pinned`` (an adapter id),
  ``base``, or ``unknown`` (the name resolved to nothing).

Never a request id, a user or a routing key.

Series: ``lora_router_requests_total`` and ``lora_router_request_errors_total``
{route, model_id, arm}; ``lora_router_request_latency_seconds`` {route, model_id, arm}
(served requests, as logged in ``latency_ms``); ``lora_router_prompt_tokens_total``,
``lora_router_completion_tokens_total`` and ``lora_router_engine_seconds_total``
{route, model_id} (served requests; engine seconds as in :mod:`router.log.cost`).
Refreshed per scrape (:func:`observe_routes`, :func:`observe_log`): the flag version each
route has applied, the snapshot's staleness per route, the log's queue depth and spool
backlog.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from lora_router.adapters.engine import Engine
from lora_router.ground.home import Home
from lora_router.ground.ids import is_adapter_id
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import StoreHealth
from lora_router.router.log import metrics as log_metrics
from lora_router.router.log.record import InferenceRecord

log = logging.getLogger(__name__)

Recorder = Callable[[InferenceRecord], None]
OTHER = "other"  # a model_id outside the known set
NONE = "none"  # no route
UNKNOWN = "unknown"  # no arm: the name resolved to nothing

_LABELS = ("route", "model_id", "arm")
REQUESTS = Counter("lora_router_requests_total",
                   "Requests finished (served, failed or cancelled; shadow copies included)",
                   _LABELS)
ERRORS = Counter("lora_router_request_errors_total",
                 "Requests that failed or were cancelled", _LABELS)
LATENCY = Histogram(
    "lora_router_request_latency_seconds", "Time to serve a request (served requests)",
    _LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
PROMPT_TOKENS = Counter("lora_router_prompt_tokens_total", "Prompt tokens of served requests",
                        ["route", "model_id"])
COMPLETION_TOKENS = Counter("lora_router_completion_tokens_total",
                            "Completion tokens of served requests", ["route", "model_id"])
ENGINE_SECONDS = Counter(
    "lora_router_engine_seconds_total",
    "Engine time charged to served requests (each forward pass split among its rows)",
    ["route", "model_id"],
)
ROUTE_VERSION = Gauge("lora_router_route_flag_version",
                      "The newest flag version of a route this replica applied", ["route"])
ROUTE_SNAPSHOT_AGE = Gauge(
    "lora_router_route_snapshot_age_seconds",
    "Staleness of the route's state: time since the last full resync from Redis "
    "(0 for in-process stores; NaN when never synced)", ["route"])
SPOOL_PENDING = Gauge("lora_router_log_spool_pending",
                      "Records this process spooled and has not replayed yet")
SPOOL_SEGMENTS = Gauge("lora_router_log_spool_segments",
                       "Sealed segments waiting in the spool directory (any process)")


@dataclass(frozen=True, slots=True)
class _Children:
    requests: Any
    errors: Any
    latency: Any
    prompt: Any
    completion: Any
    engine: Any


def known_models(engine: Engine, home: Home) -> Callable[[str], bool]:
    """Whether a model_id may be a label value: the base, a resident adapter, or an adapter
    with a model card. Called once per new (route, model_id, arm), and for every request
    whose model is not known (those are never cached)."""
    base = engine.base.name

    def known(model_id: str) -> bool:
        if model_id == base or model_id in engine.resident_adapters():
            return True
        return is_adapter_id(model_id) and home.model_card_path(model_id).is_file()

    return known


class RequestMetrics:
    """Moves the request series for each inference record (see the module docstring)."""

    def __init__(self, known: Callable[[str], bool], base_name: str) -> None:
        self._known = known
        self._base = base_name
        self._children: dict[tuple[str | None, str, str | None], _Children] = {}
        self._by_labels: dict[tuple[str, str, str], _Children] = {}

    @classmethod
    def for_engine(cls, engine: Engine, home: Home) -> RequestMetrics:
        return cls(known_models(engine, home), engine.base.name)

    def tee(self, recorder: Recorder) -> Recorder:
        """``recorder``, observing each record first (a failure here never reaches it)."""

        def record(rec: InferenceRecord) -> None:
            try:
                self.observe(rec)
            except Exception:  # metrics must never fail a request or lose its record
                log.exception("metrics failed for request %s", rec.request_id)
            recorder(rec)

        return record

    def observe(self, rec: InferenceRecord) -> None:
        key = (rec.route, rec.model_id, rec.arm)
        ch = self._children.get(key)
        if ch is None:
            ch = self._resolve(rec)
        ch.requests.inc()
        if rec.status != "ok":
            ch.errors.inc()
            return
        if rec.latency_ms is not None:
            ch.latency.observe(rec.latency_ms / 1000.0)
        if rec.prompt_tokens:
            ch.prompt.inc(rec.prompt_tokens)
        if rec.completion_tokens:
            ch.completion.inc(rec.completion_tokens)
        if rec.engine_ms:
            ch.engine.inc(rec.engine_ms / 1000.0)

    def _resolve(self, rec: InferenceRecord) -> _Children:
        """The children for a record not seen before; cached only when its model is known."""
        known = self._known(rec.model_id)
        labels = (rec.route or NONE, rec.model_id if known else OTHER, self._arm(rec, known))
        ch = self._by_labels.get(labels)
        if ch is None:
            route, model = labels[0], labels[1]
            ch = _Children(REQUESTS.labels(*labels), ERRORS.labels(*labels),
                           LATENCY.labels(*labels), PROMPT_TOKENS.labels(route, model),
                           COMPLETION_TOKENS.labels(route, model),
                           ENGINE_SECONDS.labels(route, model))
            self._by_labels[labels] = ch
        if known:
            self._children[(rec.route, rec.model_id, rec.arm)] = ch
        return ch

    def _arm(self, rec: InferenceRecord, known: bool) -> str:
        if rec.route is not None:
            return rec.arm if rec.arm in ("live", "canary", "shadow") else UNKNOWN
        if rec.arm is None or not known:
            return UNKNOWN
        return "base" if rec.model_id == self._base else "pinned"


def observe_routes(states: Mapping[str, RouteState], health: StoreHealth) -> None:
    """Set the per-route gauges from this process's snapshot (no I/O). Requests served from
    an earlier version while an adapter loads count in ``lora_router_route_fallbacks_total``."""
    age = health.age_s()
    if age is None:  # in-process stores are always current; Redis never synced: unknown
        age = 0.0 if health.connected else math.nan
    for gauge in (ROUTE_VERSION, ROUTE_SNAPSHOT_AGE):
        gauge.clear()  # a deleted route leaves no series behind
    for route, state in states.items():
        ROUTE_VERSION.labels(route).set(state.version)
        ROUTE_SNAPSHOT_AGE.labels(route).set(age)


def observe_log(status: Mapping[str, Any]) -> None:
    """Set the log gauges from the writer's status (``LogWriter.status``)."""
    log_metrics.QUEUE_DEPTH.set(status.get("queued", 0))
    SPOOL_PENDING.set(status.get("spool_pending", 0))
    SPOOL_SEGMENTS.set(status.get("spool_segments", 0))
