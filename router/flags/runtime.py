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
then stops the rest. The Redis clients are the process's (:mod:`router.flags.redis_client`):
passed in, closed by whoever made them.

:func:`build_route_service` is the one assembly of a :class:`RouteService` from settings,
shared with the CLI's direct-to-Redis mode (:func:`router.flags.client.open_client`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lora_router.ground.errors import ConfigError, LoraRouterError, RouteChangeRefused
from lora_router.ground.home import Home
from lora_router.registry.card_cache import CardCache
from lora_router.router.flags import route_status
from lora_router.router.flags.factory import (
    build_route_store,
    default_replica_id,
    home_known_adapters,
    reconcile_cards,
    seed_routes_file,
)
from lora_router.router.flags.loops import LoopStatus
from lora_router.router.flags.member import LoadResponder, ReplicaMember
from lora_router.router.flags.reconciler import Reconciler
from lora_router.router.flags.redis_client import RedisClients
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.replicas import ReplicaInfo, ReplicaRegistry
from lora_router.router.flags.residency import Residency
from lora_router.router.flags.route_service import (
    DefaultRollback,
    OnCommit,
    PrepareFn,
    RouteService,
)
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import RouteStore
from lora_router.router.routing import ServingRoutes
from lora_router.router.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FlagsRuntime:
    """What :meth:`start` built; ``member``/``responder``/``redis`` only in Redis mode."""

    replica_id: str
    store: RouteStore
    service: RouteService
    residency: Residency
    reconciler: Reconciler
    serving: ServingRoutes
    redis: RedisClients | None = None  # the process's; closed by whoever made them
    responder: LoadResponder | None = None
    member: ReplicaMember | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        home: Home,
        residency: Residency,
        redis: RedisClients | None,
        *,
        with_registry: bool = True,
    ) -> FlagsRuntime:
        """Bring the flags up (module docstring); on failure, stop what started and raise.

        ``redis``: the clients for ``settings.redis_url`` (None exactly when it is unset).
        ``with_registry``: keep model-card lifecycle status in step with committed changes
        and take default rollback targets from the cards (:mod:`router.flags.route_status`).
        """
        if (redis is None) != (settings.redis_url is None):
            raise ConfigError("the flags need Redis clients exactly when REDIS_URL is set")
        replica_id = default_replica_id(settings)
        registry = replica_registry(settings, redis)
        store = build_route_store(
            settings, replica_id=replica_id if redis else None, clients=redis
        )
        reconciler = Reconciler(store, residency, interval_s=settings.flags_resync_s)
        service = build_route_service(
            settings, home, store, registry=registry,
            local_prepare=local_gate(reconciler.load_for_change, replica_id),
            with_registry=with_registry,
        )
        serving = ServingRoutes(store, residency.missing)
        rt = cls(replica_id, store, service, residency, reconciler, serving, redis)
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
        client = self.redis.replicas if self.redis is not None else None
        if client is not None:
            self.responder = LoadResponder(client, self.replica_id, self._answer_load)
            await self.responder.start()
        await residency.ensure(residency.referenced(self.store.all()))
        self.reconciler.start()
        if client is not None:
            self.member = ReplicaMember(
                client,
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
            "mode": "redis" if self.redis is not None else "embedded",
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
        await self.service.settle()  # the cards' record of the last changes
        await self.store.close()


def replica_registry(settings: Settings, redis: RedisClients | None) -> ReplicaRegistry | None:
    """The writer's view of the gateway replicas on ``redis`` (None: embedded, no Redis)."""
    if redis is None:
        return None
    return ReplicaRegistry(redis.replicas, settle_s=settings.replica_ttl_s)


def build_route_service(
    settings: Settings,
    home: Home,
    store: RouteStore,
    *,
    registry: ReplicaRegistry | None,
    local_prepare: PrepareFn | None = None,
    with_registry: bool = True,
) -> RouteService:
    """The route operations over ``store``, as the gateway and the CLI's direct mode run them.

    With a replica ``registry`` every live replica loads a change's new adapters before it
    commits, and each change waits for the replicas to apply it; without one,
    ``local_prepare`` loads them (the embedded gateway). Adapters must be registered and not
    retired; ``with_registry`` adds the model-card hooks (:func:`registry_hooks`).
    """
    on_commit, default_rollback = registry_hooks(home, store) if with_registry else (None, None)
    prepare = (
        registry.load_gate(settings.flags_ack_timeout_s) if registry is not None else local_prepare
    )
    return RouteService(
        store,
        known_adapters=home_known_adapters(home),
        prepare=prepare,
        replicas=registry,
        apply_timeout_s=settings.flags_apply_timeout_s,
        on_commit=on_commit,
        default_rollback=default_rollback,
        max_policy_chars=settings.max_policy_chars,
    )


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
