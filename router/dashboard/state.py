"""What the dashboard shows, assembled from the route service, the inference log and the
drift monitor's tables.

Route states come from the in-process snapshot (no I/O, always current). Everything that
needs I/O is cached for ``ttl_s`` with one computation in flight (:class:`TtlCache`): a
route's audit (until its version changes), the traffic figures per window (counted and
grouped by the database, read on the reader's worker: a few rows per adapter, slice and
time bucket however busy the gateway), and the open alerts and incidents. A part that
cannot be read says why (``available``/``note``) and the rest of the state is still
served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.router.dashboard.cache import TtlCache
from lora_router.router.dashboard.queries import open_alerts, open_incidents, traffic_counts
from lora_router.router.dashboard.reader import LogReader, build_reader
from lora_router.router.dashboard.traffic import DriftIndex, Frame, summarize, with_drift
from lora_router.router.dashboard.views import (
    AuditItem,
    CostOut,
    DashboardState,
    DriftOut,
    RouteOut,
    TrafficOut,
    Viewer,
    Window,
)
from lora_router.router.drift.groups import slice_features
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import StoreOut
from lora_router.router.log.cost import PriceBook, cost_report
from lora_router.router.log.factory import sqlite_path
from lora_router.router.settings import Prices, Settings

WINDOWS: dict[str, tuple[timedelta, int]] = {  # window: (length, bucket seconds)
    "15m": (timedelta(minutes=15), 30),
    "1h": (timedelta(hours=1), 120),
}
ALERTS_SINCE = timedelta(hours=24)
COST_WINDOW = ("24h", timedelta(hours=24))  # the cost panel: the last day, cached 30 s
COST_TTL_S = 30.0
MAX_SLICE_FEATURES = 4
Clock = Callable[[], datetime]


class DashboardService:
    """The state behind ``GET /admin/dashboard/state`` (see the module docstring)."""

    def __init__(
        self, routes: RouteService, reader: LogReader, *, drift_monitor: bool,
        ttl_s: float = 2.0, audit_limit: int = 10,
        clock: Clock | None = None, prices: PriceBook | None = None, currency: str = "USD",
    ) -> None:
        self._routes = routes
        self._reader = reader
        self._drift_monitor = drift_monitor
        self.ttl_s = ttl_s
        self._audit_limit = audit_limit
        self._clock = clock or (lambda: datetime.now(UTC))
        self._audit: TtlCache[tuple[list[AuditItem], str | None]] = TtlCache(
            max(ttl_s, 10.0), max_keys=256)
        self._traffic: TtlCache[TrafficOut] = TtlCache(ttl_s)
        self._drift: TtlCache[DriftOut] = TtlCache(ttl_s)
        self._prices = prices or PriceBook(Prices())
        self._currency = currency
        self._cost: TtlCache[CostOut] = TtlCache(max(ttl_s, COST_TTL_S))

    @classmethod
    def build(cls, settings: Settings, home: Home, routes: RouteService) -> DashboardService:
        reader = build_reader(settings.database_url, sqlite_path(home))
        return cls(routes, reader, drift_monitor=settings.drift_enabled,
                   prices=PriceBook.of(settings), currency=settings.price_currency)

    async def close(self) -> None:
        await self._reader.close()

    async def state(self, viewer: Viewer, window: Window) -> DashboardState:
        states = self._routes.routes()
        drift = await self._drift.get("drift", self._read_drift)
        protected = tuple(dict.fromkeys(p for s in states if s.guard for p in s.guard.protect))
        traffic = await self._traffic.get(
            (window, protected), lambda: self._read_traffic(window, protected)
        )
        # drift status set here, not in the cached figures: both parts are equally fresh
        traffic = traffic.model_copy(update={"models": with_drift(traffic.models,
                                                                   _drift_index(drift))})
        return DashboardState(
            generated_at=self._clock(),
            refresh_s=self.ttl_s,
            viewer=viewer,
            store=StoreOut.of(self._routes.store.health()),
            routes=[await self._route(s) for s in states],
            traffic=traffic,
            drift=drift,
            cost=await self._cost.get("cost", self._read_cost),
        )

    async def _route(self, state: RouteState) -> RouteOut:
        audit, note = await self._audit.get(
            state.route, lambda: self._read_audit(state.route), stamp=state.version
        )
        return RouteOut.of(state, audit, note)

    async def _read_audit(self, route: str) -> tuple[list[AuditItem], str | None]:
        try:
            entries = await self._routes.audit(route, self._audit_limit)
        except LoraRouterError as exc:  # the store is down: the route itself still shows
            return [], f"audit unavailable: {exc.message}"
        return [AuditItem.of(e) for e in reversed(entries)], None

    async def _read_traffic(self, window: Window, protected: tuple[str, ...]) -> TrafficOut:
        length, bucket_s = WINDOWS[window]
        until = self._clock()
        frame = Frame(until - length, until, bucket_s)
        features = slice_features(protected)[:MAX_SLICE_FEATURES]
        out = TrafficOut(window=window, since=frame.since, until=until, bucket_s=bucket_s,
                         requests=0, available=True, note=None, models=[])
        try:
            counts = await traffic_counts(
                self._reader, since=frame.since, bucket_s=bucket_s, features=features
            )
        except LoraRouterError as exc:
            return out.model_copy(update={"available": False, "note": exc.message})
        # tens of milliseconds of Python for a busy window: off the event loop
        models = await asyncio.to_thread(summarize, counts, frame,
                                         protected=frozenset(protected))
        requests = sum(m.overall.requests for m in models)
        note = None if requests else "no requests logged in this window"
        return out.model_copy(update={"requests": requests, "models": models, "note": note})

    async def _read_cost(self) -> CostOut:
        window, length = COST_WINDOW
        try:
            report = await cost_report(self._reader, self._prices,
                                       since=self._clock() - length, currency=self._currency)
        except LoraRouterError as exc:
            return CostOut(window=window, available=False, note=exc.message, report=None)
        note = None if report.priced else "no prices configured: costs are not estimated"
        return CostOut(window=window, available=True, note=note, report=report)

    async def _read_drift(self) -> DriftOut:
        monitor: Literal["on", "off"] = "on" if self._drift_monitor else "off"
        try:
            since = self._clock() - ALERTS_SINCE
            alerts = await open_alerts(self._reader, since=since, limit=100)
            incidents = await open_incidents(self._reader, limit=50)
        except LoraRouterError as exc:
            return DriftOut(monitor=monitor, available=False, note=exc.message, alerts=[],
                            incidents=[])
        note = None if self._drift_monitor else "the drift monitor is off on this gateway"
        return DriftOut(monitor=monitor, available=True, note=note, alerts=alerts,
                        incidents=incidents)


def _drift_index(drift: DriftOut) -> DriftIndex:
    if not drift.available:
        return DriftIndex(level="unknown")
    if drift.monitor == "off" and not drift.alerts:
        return DriftIndex(level="off")
    return DriftIndex(alerts=drift.alerts)
