"""Keeps an engine's resident adapters in step with the route flags this process applied.

The route store calls its subscribers on whatever thread applied a change (the Redis
store's listener thread, or the event loop for the in-process store), so the subscriber
only hops to the event loop (``loop.call_soon_threadsafe``) and marks the residency dirty;
one task runs :meth:`Residency.reconcile` with every referenced adapter, coalescing bursts
of changes into one pass. A reconcile after a resync (a reconnect to Redis, a missed
message) loads what the routes now reference, so a replica that comes back catches up;
the replica's heartbeat is held back while anything referenced is missing
(:class:`~router.flags.member.ReplicaMember` ``ready``). Unreferenced adapters are unloaded
after their in-flight requests finish; adapters loaded for a change not committed yet stay
for their grace period, and a timer re-runs the reconcile when it ends. A slow periodic pass
(``interval_s``) retries loads that failed and heals anything a notification missed.

The worker survives every error (:mod:`router.flags.loops`); ``status()`` tells ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lora_router.router.flags import metrics
from lora_router.router.flags.loops import LoopHealth, LoopStatus
from lora_router.router.flags.residency import ReconcileOutcome, Residency
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore

log = logging.getLogger(__name__)


class Reconciler:
    """Runs ``residency.reconcile`` after route changes (see the module docstring)."""

    def __init__(
        self, store: RouteStore, residency: Residency, *, interval_s: float = 5.0
    ) -> None:
        self._store = store
        self._residency = residency
        self._interval_s = interval_s  # backstop: retry failed loads, expire protections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last: ReconcileOutcome | None = None
        self.passes = 0  # completed reconciles (tests wait on it)
        self.health = LoopHealth("reconciler")

    def status(self) -> LoopStatus:
        task = self._task
        return self.health.status(task is not None and not task.done())

    def start(self) -> None:
        """Subscribe to the store and start the worker (call inside the serving loop)."""
        self._loop = asyncio.get_running_loop()
        self._store.subscribe(self._on_change)
        self._task = asyncio.create_task(self._run(), name="residency-reconciler")
        self.kick()  # catch changes applied before we subscribed

    async def stop(self) -> None:
        self._loop = None  # later notifications are dropped
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._residency.wait_unloads()

    async def load_for_change(self, adapters: set[str]) -> None:
        """Load for a change that is not committed yet (the two-phase gate): the adapters
        are protected for the residency's grace period, after which a reconcile unloads
        them unless the change (or another) references them by then."""
        try:
            await self._residency.ensure(adapters)
        finally:
            self.recheck_in(self._residency.protect_s + 0.05)

    def kick(self) -> None:
        """Ask for a reconcile (event-loop thread only)."""
        self._dirty.set()

    def _on_change(self, state: RouteState) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(self.kick)

    async def _run(self) -> None:
        with self.health.running():
            while self._loop is not None:  # cleared by stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), self._interval_s)
                self._dirty.clear()
                try:
                    await self._pass()
                except Exception as exc:  # never let the worker die: the next change retries
                    metrics.RECONCILES.labels("failed").inc()
                    await asyncio.sleep(self.health.failed(exc, "residency reconcile failed"))
                else:
                    self.health.succeeded()

    async def _pass(self) -> None:
        outcome = await self._residency.reconcile(self._residency.referenced(self._store.all()))
        self.last = outcome
        self.passes += 1
        metrics.RECONCILES.labels("failed" if outcome.failed else "ok").inc()
        if outcome.recheck_in_s is not None:
            self.recheck_in(outcome.recheck_in_s + 0.05)

    def recheck_in(self, delay_s: float) -> None:
        """Reconcile again after ``delay_s`` (event-loop thread; the earliest request wins),
        e.g. when adapters loaded for an uncommitted change lose their protection."""
        loop = asyncio.get_running_loop()
        at = loop.time() + delay_s
        timer = self._timer
        if timer is not None and not timer.cancelled() and loop.time() < timer.when() <= at:
            return  # an earlier recheck is pending
        if timer is not None:
            timer.cancel()
        self._timer = loop.call_at(at, self.kick)
