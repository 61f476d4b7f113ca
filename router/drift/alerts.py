"""Alerts out of the process: Prometheus series and the signed webhook.

Every alert is first stored in the log database (:meth:`DriftStore.commit_tick`); with a
webhook configured, the same transaction queues it in ``drift_outbox``. Delivery
(:class:`OutboxDelivery`) posts what is due, one JSON body per event, signed with
HMAC-SHA256 (header ``X-LoRA-Router-Signature: t=<unix seconds>,v1=<hex>`` over
``"<t>." + body``; the receiver recomputes it with the shared secret and rejects old ``t``),
with a timeout; a failure reschedules the event with exponential backoff. An event leaves
the outbox only on a 2xx, so a dead webhook loses nothing: events wait (and count in
``lora_router_drift_outbox_pending``) until it is back. Delivery is at least once; the
``X-LoRA-Router-Event-Id`` header lets the receiver drop a repeat.

Metric labels are bounded: route, arm, signal, and a test or feature name (``overall``, a
protected slice, a baseline feature); never an adapter version or a request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from prometheus_client import Counter, Gauge

from lora_router.router.drift.events import Alert, OutboxItem

if TYPE_CHECKING:
    from lora_router.router.drift.inputs import StreamInputs
    from lora_router.router.drift.quality import StreamQuality
    from lora_router.router.drift.store import DriftStore

log = logging.getLogger(__name__)

ALERTS = Counter(
    "lora_router_drift_alerts_total", "Drift alerts raised", ["route", "arm", "signal"]
)
QUALITY_PROGRESS = Gauge(
    "lora_router_drift_quality_statistic_ratio",
    "A quality test's CUSUM statistic over its alarm threshold (1 = alarm)",
    ["route", "arm", "test"],
)
QUALITY_LABELS = Gauge(
    "lora_router_drift_quality_labels", "Labelled requests a quality test has seen",
    ["route", "arm", "test"],
)
GUARD_ACTIONS = Counter(
    "lora_router_drift_guard_actions_total", "Guard decisions on quality alerts",
    ["route", "outcome"],  # acted | conflict | stale | off | failed
)
WEBHOOK = Counter(
    "lora_router_drift_webhook_deliveries_total", "Webhook delivery attempts", ["outcome"]
)
OUTBOX_PENDING = Gauge(
    "lora_router_drift_outbox_pending", "Events waiting for webhook delivery"
)
FLYWHEEL = Counter(
    "lora_router_drift_flywheel_exports_total",
    "Retraining triggers recorded and exported after quality alerts", ["outcome"],  # ok|failed
)
DRIFT_STATISTIC = Gauge(
    "lora_router_drift_statistic",
    "A feature's last input/output drift statistic against the adapter's baseline "
    "(method psi: alert at 0.25; ks: the KS D, alert from 0.1 with p < 0.001)",
    ["route", "arm", "signal", "feature", "method"],
)
IN_DRIFT = Gauge(
    "lora_router_drift_in_drift",
    "1 while a feature is in drift (alerted and not cleared yet)",
    ["route", "arm", "signal", "feature"],
)
LEADER = Gauge("lora_router_drift_monitor_leader", "1 while this process runs the monitor")
TICKS = Counter("lora_router_drift_monitor_ticks_total", "Monitor ticks", ["outcome"])

SIGNATURE_HEADER = "X-LoRA-Router-Signature"
EVENT_HEADER = "X-LoRA-Router-Event-Id"


def observe_alert(alert: Alert) -> None:
    ALERTS.labels(alert.route, alert.arm or "-", alert.signal).inc()


def observe_stream(route: str, arm: str, quality: StreamQuality) -> None:
    for key, test in quality.tests.items():
        c = test.cusum
        QUALITY_PROGRESS.labels(route, arm, key).set(c.value / max(c.design.threshold, 1))
        QUALITY_LABELS.labels(route, arm, key).set(c.n)


def observe_inputs(route: str, arm: str, inputs: StreamInputs) -> None:
    for (signal, feature, method), value in inputs.statistics.items():
        DRIFT_STATISTIC.labels(route, arm, signal, feature, method).set(value)
        IN_DRIFT.labels(route, arm, signal, feature).set(
            1 if f"{signal}:{feature}" in inputs.active else 0)


def sign(secret: bytes, body: bytes, at: int) -> str:
    """The signature header's value for ``body`` sent at unix time ``at``."""
    mac = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, *, now: int | None = None,
           tolerance_s: int = 300) -> bool:
    """What a receiver checks: the signature matches and is at most ``tolerance_s`` old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else int(time.time())) - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), header)


class WebhookSender:
    """POSTs one outbox event; raises ``httpx.HTTPError`` (or ``WebhookRefused``) on failure."""

    def __init__(self, url: str, secret: bytes, *, timeout_s: float = 5.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._secret = secret
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._own_client = client is None

    async def send(self, item: OutboxItem) -> None:
        body = _body(item)
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
            EVENT_HEADER: f"{item.kind}-{item.ref_id}",
        }
        resp = await self._client.post(self.url, content=body, headers=headers)
        if not resp.is_success:
            raise WebhookRefused(f"webhook answered {resp.status_code}")

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()


class WebhookRefused(Exception):
    """The webhook answered, but not with a 2xx."""


def _body(item: OutboxItem) -> bytes:
    return json.dumps(item.payload, sort_keys=True, separators=(",", ":")).encode()


class OutboxDelivery:
    """Delivers due outbox events; backoff ``initial_s * 2**attempts`` up to ``max_s``."""

    def __init__(
        self, store: DriftStore, sender: WebhookSender, *, initial_s: float = 1.0,
        max_s: float = 300.0, clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.initial_s = initial_s
        self.max_s = max_s
        self.clock = clock or (lambda: datetime.now(UTC))

    async def run(self, limit: int = 50) -> int:
        """Try every due event once (oldest first); returns how many were delivered."""
        delivered = 0
        for item in await self.store.due_outbox(limit):
            try:
                await self.sender.send(item)
            except (httpx.HTTPError, WebhookRefused) as exc:
                delay = min(self.initial_s * 2 ** item.attempts, self.max_s)
                await self.store.outbox_retry(item.id, f"{type(exc).__name__}: {exc}",
                                              self.clock() + timedelta(seconds=delay))
                WEBHOOK.labels("failed").inc()
                log.warning("drift webhook: event %s-%s not delivered (%s); retry in %.1fs",
                            item.kind, item.ref_id, exc, delay)
                break  # one failure ends the round: a dead webhook costs one timeout
            await self.store.outbox_delivered(item.id)
            WEBHOOK.labels("delivered").inc()
            delivered += 1
        OUTBOX_PENDING.set(await self.store.outbox_pending())
        return delivered
