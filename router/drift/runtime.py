"""The drift monitor inside a gateway: built from settings, run as background tasks.

Every replica runs :class:`DriftRuntime`; each round (``drift_interval_s``) it takes or
renews the lease (Redis, when ``REDIS_URL`` is set; in-process otherwise) and only the
holder reads the log, raises alerts and runs the guard. Webhook delivery (when
``drift_webhook_url`` is set) runs in its own task, so a slow webhook never delays
detection. Both loops survive every error (logged, counted, backed off) and report their
liveness in :meth:`status`. The monitor's store is the inference log's database
(``DATABASE_URL``, else ``<home>/log/inference.db``). The lease's Redis client is the
process's (:class:`router.flags.redis_client.RedisClients`), passed in by the gateway's
components; one is made (and closed with the runtime) only when none is given.

After the guard has handled a round's alerts, each new quality or slice-quality alert goes
to the correction flywheel (:func:`router.drift.flywheel.on_alert`: a retraining trigger and
an export of the labelled failures under ``<home>/flywheel/``) in a task of its own, so an
export never delays the next round; its errors are logged and counted
(``lora_router_drift_flywheel_exports_total{outcome="failed"}``), never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aredis

from lora_router.ground.errors import ConfigError
from lora_router.ground.home import Home
from lora_router.router.drift import alerts
from lora_router.router.drift.alerts import OutboxDelivery, WebhookSender
from lora_router.router.drift.baseline_source import BaselineSource, StoredLoader
from lora_router.router.drift.baselines import load_baseline
from lora_router.router.drift.events import Alert
from lora_router.router.drift.flywheel import QUALITY_SIGNALS, on_alert
from lora_router.router.drift.guard import Guard
from lora_router.router.drift.lease import Lease, LocalLease, RedisLease
from lora_router.router.drift.monitor import DriftMonitor, TickReport
from lora_router.router.drift.pg_store import PostgresDriftStore
from lora_router.router.drift.sqlite_store import SqliteDriftStore
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.loops import LoopHealth
from lora_router.router.flags.redis_client import lease_client
from lora_router.router.flags.route_service import RouteService
from lora_router.router.log.factory import sqlite_path
from lora_router.router.settings import Settings

log = logging.getLogger(__name__)


def build_drift_store(settings: Settings, home: Home) -> DriftStore:
    """PostgreSQL when ``DATABASE_URL`` is set, else the home's SQLite log (not opened)."""
    if settings.database_url:
        return PostgresDriftStore(settings.database_url)
    return SqliteDriftStore(sqlite_path(home))


def build_webhook(settings: Settings) -> WebhookSender | None:
    url = settings.drift_webhook_url
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError("drift_webhook_url must be an http:// or https:// URL")
    if settings.drift_webhook_secret is None:
        raise ConfigError("drift_webhook_url needs drift_webhook_secret (the HMAC key)")
    secret = settings.drift_webhook_secret.get_secret_value().encode()
    return WebhookSender(url, secret, timeout_s=settings.drift_webhook_timeout_s)


class DriftRuntime:
    """The monitor, the guard, the lease and the webhook delivery of one replica."""

    def __init__(
        self, monitor: DriftMonitor, guard: Guard, lease: Lease, *,
        delivery: OutboxDelivery | None = None, interval_s: float = 1.0,
        on_close: Callable[[], Any] | None = None, home: Home | None = None,
    ) -> None:
        self.monitor = monitor
        self.home = home  # where the flywheel exports (None: no flywheel)
        self.guard = guard
        self.lease = lease
        self.delivery = delivery
        self.interval_s = interval_s
        self.leader = False
        self.last_report: TickReport | None = None
        self._opened = False
        self._on_close = on_close
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._health = LoopHealth("drift-monitor")
        self._webhook_health = LoopHealth("drift-webhook")
        self._flywheel: set[asyncio.Task[None]] = set()
        self.flywheel_counts = {"ok": 0, "failed": 0}

    @classmethod
    def build(
        cls, settings: Settings, home: Home, service: RouteService, *, holder: str,
        stored: StoredLoader | None = load_baseline, redis: aredis.Redis | None = None,
    ) -> DriftRuntime:
        """From settings (see the module docstring); nothing starts until :meth:`start`.
        ``redis``: the lease's client when ``settings.redis_url`` is set (its owner closes
        it); without one the runtime makes its own."""
        store = build_drift_store(settings, home)
        sender = build_webhook(settings)
        client = None  # made here, so closed here
        lease: Lease = LocalLease(holder)
        if settings.redis_url:
            if redis is None:
                redis = client = lease_client(settings.redis_url)
            lease = RedisLease(redis, holder, ttl_s=settings.drift_lease_ttl_s)
        monitor = DriftMonitor(store, service.store, BaselineSource(home, stored=stored),
                               holder=holder, outbox=sender is not None,
                               window=settings.drift_window)
        guard = Guard(service, store, outbox=sender is not None)
        delivery = OutboxDelivery(store, sender) if sender is not None else None

        async def on_close() -> None:
            if sender is not None:
                await sender.close()
            if client is not None:
                await client.aclose()

        return cls(monitor, guard, lease, delivery=delivery,
                   interval_s=settings.drift_interval_s, on_close=on_close, home=home)

    @property
    def store(self) -> DriftStore:
        return self.monitor.store

    async def step(self) -> bool:
        """One round: the lease, then (holder only) a tick and the guard. True if held."""
        held = await self.lease.acquire()
        if not held:
            if self.leader:
                self.monitor.reset()  # another monitor holds the state now
            self.leader = False
            alerts.LEADER.set(0)
            return False
        self.leader = True
        alerts.LEADER.set(1)
        if not self._opened:
            await self.store.open()
            self._opened = True
        report = await self.monitor.tick()
        self.last_report = report
        try:
            await self.guard.run()
        finally:  # the guard's errors leave its alerts pending; the flywheel needs no action
            self._start_flywheel(report.alerts)
        return True

    def _start_flywheel(self, alerts_: list[Alert]) -> None:
        """One task for the round's alerts (in turn: one adapter's alerts share a trigger)."""
        todo = [a for a in alerts_
                if a.signal in QUALITY_SIGNALS and not a.evidence.get("repeat")]
        if self.home is None or not todo:
            return
        task = asyncio.create_task(self._export_all(todo), name="drift-flywheel")
        self._flywheel.add(task)
        task.add_done_callback(self._flywheel.discard)

    async def _export_all(self, todo: list[Alert]) -> None:
        for alert in todo:
            await self._export(alert)

    async def _export(self, alert: Alert) -> None:
        """One alert's flywheel export; errors are logged and counted, never raised."""
        assert self.home is not None
        try:
            fresh = await self.store.alert(alert.id)  # with the incident the guard opened
            done = await on_alert(self.store, self.home, fresh or alert)
        except Exception:
            self.flywheel_counts["failed"] += 1
            alerts.FLYWHEEL.labels("failed").inc()
            log.exception("drift flywheel: export for alert #%s failed", alert.id)
            return
        if done is not None:
            self.flywheel_counts["ok"] += 1
            alerts.FLYWHEEL.labels("ok").inc()
            log.info("drift flywheel: alert #%s -> retraining trigger %s, %d failures in %s",
                     alert.id, done.trigger.id, done.rows, done.dir)

    async def wait_flywheel(self, timeout_s: float = 30.0) -> None:
        """Wait for the flywheel exports started so far (at most ``timeout_s``)."""
        if self._flywheel:
            await asyncio.wait(set(self._flywheel), timeout=timeout_s)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._loop(), name="drift-monitor"))
        if self.delivery is not None:
            self._tasks.append(asyncio.create_task(self._deliver(), name="drift-webhook"))

    async def _loop(self) -> None:
        with self._health.running():
            while not self._stop.is_set():
                delay = self.interval_s
                try:
                    await self.step()
                    self._health.succeeded()
                except Exception as exc:  # a long-lived loop: log, back off, go on
                    self.monitor.reset()
                    delay = max(delay, self._health.failed(exc, "drift monitor round"))
                    alerts.TICKS.labels("error").inc()
                else:
                    alerts.TICKS.labels("ok" if self.leader else "follower").inc()
                await self._pause(delay)

    async def _deliver(self) -> None:
        assert self.delivery is not None
        with self._webhook_health.running():
            while not self._stop.is_set():
                try:
                    if self.leader and self._opened:
                        await self.delivery.run()
                    self._webhook_health.succeeded()
                    delay = self.interval_s
                except Exception as exc:
                    delay = max(self.interval_s,
                                self._webhook_health.failed(exc, "drift webhook round"))
                await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def close(self, timeout_s: float = 15.0) -> None:
        """Stop the loops (between rounds: a round in flight finishes, so no database call
        is cut off mid-way), release the lease, close the store and clients."""
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in late:  # stuck past the timeout: cut it off
                log.warning("drift task %s did not stop in %ss; cancelled", task.get_name(),
                            timeout_s)
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
        self._tasks.clear()
        await self.wait_flywheel(timeout_s)
        if self._flywheel:  # still exporting: cut off (`incident export` writes it again)
            for task in self._flywheel:
                task.cancel()
            await asyncio.wait(set(self._flywheel), timeout=5.0)
        with contextlib.suppress(Exception):
            await self.lease.release()
        alerts.LEADER.set(0)
        await self.store.close()
        self._opened = False
        if self._on_close is not None:
            await self._on_close()

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and people: the loops, whether this replica is the monitor,
        and what its last tick read."""
        alive = bool(self._tasks) and not self._tasks[0].done()
        report = self.last_report
        return {
            "leader": self.leader,
            "holder": self.lease.holder,
            "loop": self._health.status(alive).as_dict(),
            "last_tick": None if report is None else {
                "rows": report.rows, "labels": report.labels, "alerts": len(report.alerts)},
            "flywheel": {"running": len(self._flywheel), **self.flywheel_counts},
        }

