"""Building the route flags from settings: the store, the known-adapter check, seeding.

The gateway (phase 2) and the CLI's direct mode both build through here, so there is one
place that picks Redis or the embedded durable store (SQLite at
``Settings.flags_db_path``), and one place that seeds the routes file (through
``RouteService.seed``, which refuses unknown or retired adapters before any write; routes
the store holds already keep their stored state).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import redis

from lora_router.ground.errors import (
    AdapterNotFound,
    ConfigError,
    FlagStoreUnavailable,
    LoraRouterError,
)
from lora_router.ground.home import Home
from lora_router.registry.card_cache import CardCache
from lora_router.router.flags import keys, route_status
from lora_router.router.flags.redis_client import CHECK_TIMEOUT_S, RedisClients, sync_client
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.flags.state import check_route_adapters, load_routes_file
from lora_router.router.flags.store import RouteStore
from lora_router.router.settings import Settings


def default_replica_id(settings: Settings) -> str:
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def build_route_store(
    settings: Settings, *, replica_id: str | None = None, clients: RedisClients | None = None
) -> RouteStore:
    """Redis when ``settings.redis_url`` is set, else the durable embedded store in the
    SQLite file ``settings.flags_db_path`` (not started). ``clients``: the process's Redis
    clients (the store then makes none of its own)."""
    if settings.redis_url:
        return RedisRouteStore(
            settings.redis_url, resync_s=settings.flags_resync_s, replica_id=replica_id,
            client=clients.store if clients else None,
            listener_client=clients.listener if clients else None,
        )
    return SqliteRouteStore(settings.flags_db_path)


def home_known_adapters(home: Home) -> Callable[[], set[str]]:
    """Adapters a route may name: registered (a model card in the home) and not retired.

    An adapter directory without a model card is not routable: the gateway refuses to load
    it (``registry.integrity.verify_adapter``), so a route must not point at it either.
    Cards are read through a :class:`CardCache`: a card file is parsed again only when it
    changed (a stat per card per call otherwise), and never with its status history.
    """
    cards = CardCache(home)

    def known() -> set[str]:
        out = set()
        for adapter_id in cards.model_ids():
            try:
                if cards.model_card(adapter_id).status != "retired":
                    out.add(adapter_id)
            except (LoraRouterError, OSError):
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
    else:
        stored = sqlite_route_names(settings.flags_db_path)
    states = {r: s for r, s in states.items() if r not in stored}
    try:
        check_route_adapters(states, home_known_adapters(home)())
    except AdapterNotFound as exc:
        raise ConfigError(f"routes file {path}: {exc.message}", **exc.detail) from exc


def stored_route_names(redis_url: str, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
    """The routes that exist in Redis (one blocking read, for checks before start)."""
    client = sync_client(
        redis_url, purpose="route-check", timeout_s=timeout_s, connect_timeout_s=timeout_s
    )
    try:
        names = client.hkeys(keys.ROUTES)
    except redis.RedisError as exc:
        raise FlagStoreUnavailable(f"route store: Redis at {redis_url}: {exc}") from exc
    finally:
        client.close()
    return {n.decode() if isinstance(n, bytes) else str(n) for n in names}


def holds_home_routes(settings: Settings) -> bool:
    """Whether the store holds the home's route table: Redis, or the embedded store of the
    home's own routes file. A gateway on another routes file (``--routes``) serves a table
    of its own; the home's cards do not describe it at start."""
    return bool(settings.redis_url) or (
        settings.routes_path.expanduser().resolve() == settings.home / "routes.yaml"
    )


async def reconcile_cards(settings: Settings, home: Home, store: RouteStore) -> None:
    """At start: bring the home's model-card status in line with the routes in force
    (:func:`router.flags.route_status.reconcile_route_status`, in a worker thread), when the
    store holds the home's route table (:func:`holds_home_routes`)."""
    if holds_home_routes(settings):
        await asyncio.to_thread(route_status.reconcile_route_status, home, store.all())


def sqlite_route_names(path: Path) -> set[str]:
    """The routes the embedded store's file at ``path`` holds (none when there is no file
    or it is not a route store yet; the gateway's start reports a bad file)."""
    if not path.is_file():
        return set()
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            return {str(r) for (r,) in db.execute("SELECT route FROM routes")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()


@asynccontextmanager
async def open_route_store(
    settings: Settings, *, seed: bool = False, clients: RedisClients | None = None
) -> AsyncIterator[RouteStore]:
    """A started store (closed on exit). ``seed``: first create the routes file's missing
    routes, checked against the home's known adapters (:func:`seed_routes_file`); the CLI's
    read-only commands never seed. ``clients``: as for :func:`build_route_store`."""
    store = build_route_store(settings, clients=clients)
    await store.start()
    try:
        if seed and settings.routes_path.is_file():
            known = home_known_adapters(Home.at(settings.home))
            await seed_routes_file(RouteService(store, known_adapters=known), settings.routes_path)
        yield store
    finally:
        await store.close()
