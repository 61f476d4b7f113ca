"""Building the route flags from settings: the store, the known-adapter check, the service.

The gateway (phase 2) and the CLI's direct mode both build through here, so there is one
place that picks Redis or the in-process store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from registry.errors import LoraRouterError
from registry.home import Home
from registry.store import RegistryStore
from router.flags.memory import MemoryRouteStore
from router.flags.redis_store import RedisRouteStore
from router.flags.state import load_routes_file
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


@asynccontextmanager
async def open_route_store(settings: Settings, *, seed: bool = True) -> AsyncIterator[RouteStore]:
    """A started store, seeded from the routes file when it exists (closed on exit)."""
    store = build_route_store(settings)
    await store.start()
    try:
        if seed and settings.routes_path.is_file():
            await store.seed(load_routes_file(settings.routes_path))
        yield store
    finally:
        await store.close()
