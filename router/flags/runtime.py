"""The route flags of one running gateway: store, route service, reconciler, membership.

:meth:`FlagsRuntime.start` brings them up in the order the two-phase protocol needs
(:mod:`router.flags.replicas`):

1. the route store (Redis when ``REDIS_URL`` is set: its listener thread subscribes, then
   syncs; this replica's applied versions are reported under its replica id), seeded from
   the routes file through the route service (card default rollback targets filled in; a
   route naming an unknown or retired adapter fails the start before anything is written,
   so a bad file never reaches the other replicas);
2. Redis mode: the ``LoadResponder`` (subscribed, so no load request is missed);
3. every referenced adapter verified and loaded (a refusal fails the start, naming the
   adapter and the reason);
4. the reconciler (loads what later changes reference, unloads what they drop);
5. Redis mode: the ``ReplicaMember`` heartbeat (now counted by writers; withdrawn while a
   referenced adapter is missing, the listener is out of sync or the responder is not
   subscribed: :meth:`FlagsRuntime.can_be_counted`), which also publishes the resident set.

Route changes made through this gateway are gated: in Redis mode every live replica loads
the new adapters before the commit (``ReplicaRegistry.load_gate``, which first waits for the
registry to settle after Redis lost its data); embedded, this process's residency does.
Requests are routed by ``serving`` (:class:`~router.routing.ServingRoutes`): a state naming
an adapter still loading here is served as its last fully-resident version meanwhile.
:meth:`loops` lists the long-lived loops for ``/readyz``. :meth:`close` deregisters first,
then stops the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis

from adapters.residency import Residency
from registry import route_status
from registry.card_cache import CardCache
from registry.errors import LoraRouterError, RouteChangeRefused
from registry.home import Home
from router.flags.factory import (
    build_route_store,
    default_replica_id,
    home_known_adapters,
    reconcile_cards,
    seed_routes_file,
)
from router.flags.loops import LoopStatus
from router.flags.member import LoadResponder, ReplicaMember
from router.flags.reconciler import Reconciler
from router.flags.redis_store import RedisRouteStore
from router.flags.replicas import ReplicaInfo, ReplicaRegistry
from router.flags.service import DefaultRollback, OnCommit, PrepareFn, RouteService
from router.flags.state import RouteState
from router.flags.store import RouteStore
from router.routing import ServingRoutes
from router.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FlagsRuntime:
    """What :meth:`start` built; ``member``/``responder``/``client`` only in Redis mode."""

    replica_id: str
    store: RouteStore
    service: RouteService
    residency: Residency
    reconciler: Reconciler
    serving: ServingRoutes
    client: aredis.Redis | None = None
    responder: LoadResponder | None = None
    member: ReplicaMember | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        home: Home,
        residency: Residency,
        *,
        with_registry: bool = True,
    ) -> FlagsRuntime:
        """Bring the flags up (module docstring); on failure, stop what started and raise.

        ``with_registry``: keep model-card lifecycle status in step with committed changes
        and take default rollback targets from the cards (:mod:`registry.route_status`).
        """
        replica_id = default_replica_id(settings)
        client = None
        registry = None
        if settings.redis_url is not None:
            client = aredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.flags_ack_timeout_s + 1,  # BLPOP of load acks
                socket_connect_timeout=2.0,
            )
            registry = ReplicaRegistry(client, settle_s=settings.replica_ttl_s)
        store = build_route_store(settings, replica_id=replica_id if client else None)
        on_commit, default_rollback = (
            registry_hooks(home, store) if with_registry else (None, None)
        )
        reconciler = Reconciler(store, residency, interval_s=settings.flags_resync_s)
        service = RouteService(
            store,
            known_adapters=home_known_adapters(home),
            prepare=(
                registry.load_gate(settings.flags_ack_timeout_s)
                if registry is not None
                else local_gate(reconciler.load_for_change, replica_id)
            ),
            replicas=registry,
            apply_timeout_s=settings.flags_apply_timeout_s,
            on_commit=on_commit,
            default_rollback=default_rollback,
        )
        serving = ServingRoutes(store, residency.missing)
        rt = cls(replica_id, store, service, residency, reconciler, serving, client)
        try:
            await store.start()
            await seed_routes_file(service, settings.routes_path)
            if with_registry:  # cards never disagree with the routes in force
                await reconcile_cards(settings, home, store)
            await rt._serve(settings)
        except BaseException:
            await rt.close()
            raise
        return rt

    async def _serve(self, settings: Settings) -> None:
        residency = self.residency
        if self.client is not None:
            self.responder = LoadResponder(self.client, self.replica_id, self._answer_load)
            await self.responder.start()
        await residency.ensure(residency.referenced(self.store.all()))
        self.reconciler.start()
        if self.client is not None:
            self.member = ReplicaMember(
                self.client,
                ReplicaInfo(id=self.replica_id, url=settings.own_url),
                ttl_s=settings.replica_ttl_s,
                interval_s=settings.replica_heartbeat_s,
                ready=self.can_be_counted,
            )
            await self.member.start()
            residency.on_resident = self._on_resident
            await self.member.set_resident(residency.resident())

    async def _on_resident(self, adapters: set[str]) -> None:
        member = self.member
        if member is not None:
            await member.set_resident(adapters)
            await member.refresh()

    async def _answer_load(self, adapters: list[str]) -> None:
        await self.reconciler.load_for_change(set(adapters))

    def can_be_counted(self) -> bool:
        """What the heartbeat requires to register this replica for writers to count and
        wait for: every referenced adapter resident, the flag listener in sync with Redis
        and the load responder subscribed (after a reconnect they come back one by one)."""
        responder = self.responder
        return (
            self.all_resident()
            and self.store.health().connected
            and (responder is None or responder.listening)
        )

    def all_resident(self) -> bool:
        """Every adapter some route references is resident in this engine."""
        return not self.residency.missing(self.residency.referenced(self.store.all()))

    @property
    def registered(self) -> bool:
        """Counted by writers (Redis mode); embedded there is nothing to register with."""
        return self.member is None or self.member.registered

    def loops(self) -> list[LoopStatus]:
        """Every long-lived loop of these flags that has started, alive or not."""
        out = self.store.loops() if isinstance(self.store, RedisRouteStore) else []
        out.append(self.reconciler.status())
        for part in (self.member, self.responder):
            if part is not None:
                out.append(part.status())
        return out

    def status(self) -> dict[str, Any]:
        """The replica part of ``/readyz``."""
        out: dict[str, Any] = {
            "id": self.replica_id,
            "mode": "redis" if self.client is not None else "embedded",
            "registered": self.registered,
        }
        if self.member is not None:
            at = self.member.last_beat_at
            out["last_heartbeat_at"] = at.isoformat() if at else None
        return out

    async def close(self) -> None:
        """Deregister first (writers stop counting us), then stop answering and listening."""
        if self.member is not None:
            self.residency.on_resident = None
            await self.member.stop()
            self.member = None
        if self.responder is not None:
            await self.responder.stop()
            self.responder = None
        await self.reconciler.stop()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        await self.service.settle()  # the cards' record of the last changes
        await self.store.close()


def local_gate(load: PrepareFn, replica_id: str) -> PrepareFn:
    """The embedded ``prepare``: this process loads the adapters (``load``), or the change
    is refused with the same shape of reason the Redis gate gives (``replica: code: msg``)."""

    async def prepare(adapters: set[str]) -> None:
        try:
            await load(adapters)
        except LoraRouterError as exc:
            reason = f"{replica_id}: {exc.code}: {exc.message}"
        except TimeoutError:
            reason = f"{replica_id}: timeout: loading did not finish in time"
        else:
            return
        raise RouteChangeRefused(
            f"could not load {', '.join(sorted(adapters))}: {reason}", reasons=[reason]
        )

    return prepare


def registry_hooks(home: Home, store: RouteStore) -> tuple[OnCommit, DefaultRollback]:
    """``RouteService`` hooks over the home's registry: card status kept in step with the
    routes, and the card's rollback target as the default one (card files cached)."""
    cards = CardCache(home)

    def on_commit(before: RouteState | None, after: RouteState) -> None:
        route_status.sync_route_status(home, before, after, all_states=store.all())

    def default_rollback(adapter_id: str) -> str | None:
        return route_status.card_rollback_target(home, adapter_id, cards)

    return on_commit, default_rollback
