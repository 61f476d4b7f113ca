"""Building the route flags from settings: the store, the known-adapter check, seeding.

The gateway (phase 2) and the CLI's direct mode both build through here, so there is one
place that picks Redis or the in-process store, and one place that seeds the routes file
(through ``RouteService.seed``, which refuses unknown or retired adapters before any write).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis

from registry.errors import AdapterNotFound, ConfigError, FlagStoreUnavailable, LoraRouterError
from registry.home import Home
from registry.store import RegistryStore
from router.flags import keys
from router.flags.memory import MemoryRouteStore
from router.flags.redis_store import RedisRouteStore
from router.flags.service import RouteService
from router.flags.state import check_route_adapters, load_routes_file
from router.flags.store import RouteStore
from router.settings import Settings


def default_replica_id(settings: Settings) -> str:
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def build_route_store(settings: Settings, *, replica_id: str | None = None) -> RouteStore:
    """Redis when ``settings.redis_url`` is set, else the in-process store (not started)."""
    if settings.redis_url:
        return RedisRouteStore(
            settings.redis_url, resync_s=settings.flags_resync_s, replica_id=replica_id
        )
    return MemoryRouteStore()


def home_known_adapters(home: Home) -> Callable[[], set[str]]:
    """Adapters a route may name: registered (a model card in the home) and not retired.

    An adapter directory without a model card is not routable: the gateway refuses to load
    it (``registry.integrity.verify_adapter``), so a route must not point at it either.
    """
    registry = RegistryStore(home)

    def known() -> set[str]:
        out = set()
        for adapter_id in registry.list_model_ids():
            try:
                if registry.get_model_card(adapter_id).status != "retired":
                    out.add(adapter_id)
            except LoraRouterError:
                continue  # an unreadable card is not a safe route target
        return out

    return known


async def seed_routes_file(
    service: RouteService, path: Path, only: set[str] | None = None
) -> None:
    """Create the routes of the routes file at ``path`` (only those in ``only``, when given)
    that the store lacks, through ``service.seed``: a route naming an unknown or retired
    adapter refuses the whole seed before anything is written (``ConfigError`` naming the
    file, the route and the adapters)."""
    states = load_routes_file(path)
    if only is not None:
        states = {r: s for r, s in states.items() if r in only}
    try:
        await service.seed(states)
    except AdapterNotFound as exc:
        raise ConfigError(f"routes file {path}: {exc.message}", **exc.detail) from exc


def check_routes_file(settings: Settings, home: Home) -> None:
    """Check, without writing anything, what seeding the routes file at start would refuse:
    the routes it would create (in Redis mode, those not in Redis yet) must name only
    known adapters. ``ConfigError`` names the file, route and adapters; an unreachable
    Redis is ``FlagStoreUnavailable``. (``lora-router serve`` runs it for a clean error;
    the gateway's start checks again in ``RouteService.seed``.)"""
    path = settings.routes_path
    states = load_routes_file(path)
    if settings.redis_url:
        stored = stored_route_names(settings.redis_url)
        states = {r: s for r, s in states.items() if r not in stored}
    try:
        check_route_adapters(states, home_known_adapters(home)())
    except AdapterNotFound as exc:
        raise ConfigError(f"routes file {path}: {exc.message}", **exc.detail) from exc


def stored_route_names(redis_url: str, timeout_s: float = 2.0) -> set[str]:
    """The routes that exist in Redis (one blocking read, for checks before start)."""
    client = redis.Redis.from_url(
        redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        names = client.hkeys(keys.ROUTES)
    except redis.RedisError as exc:
        raise FlagStoreUnavailable(f"route store: Redis at {redis_url}: {exc}") from exc
    finally:
        client.close()
    return {n.decode() if isinstance(n, bytes) else str(n) for n in names}


@asynccontextmanager
async def open_route_store(
    settings: Settings, *, seed: bool = False
) -> AsyncIterator[RouteStore]:
    """A started store (closed on exit). ``seed``: first create the routes file's missing
    routes, checked against the home's known adapters (:func:`seed_routes_file`); the CLI's
    read-only commands never seed."""
    store = build_route_store(settings)
    await store.start()
    try:
        if seed and settings.routes_path.is_file():
            known = home_known_adapters(Home.at(settings.home))
            await seed_routes_file(RouteService(store, known_adapters=known), settings.routes_path)
        yield store
    finally:
        await store.close()
