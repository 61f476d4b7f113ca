"""The models this gateway serves, as ``GET /v1/models`` and ``GET /v1/models/{id}`` show them.

A valid ``model`` is a route, a registered adapter that is not retired (resident, or loaded
on demand by the first request that names it), or the base's name. Each is described in
OpenAI's Model object shape (``id``, ``object: "model"``, ``created``, ``owned_by``) plus
``kind`` and what the gateway knows of it:

- a route: the state its requests are served by now (``live``, ``canary``, ``shadow``,
  ``rollback_target``, ``flag_version``, as ``x-flag-version`` names it); ``created`` is
  its last change;
- an adapter: ``resident``, ``status`` (its card's lifecycle status), ``base`` (the base it
  was trained on, from its card) and the ``routes`` that reference it; ``created`` is its
  card's creation;
- the base: ``sha256`` (pinned), ``max_context``; ``created`` is when it was pinned.

Route and residency state is read on the event loop; cards and the base pin are files,
read on a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lora_router.adapters.engine import Engine
from lora_router.ground.errors import LoraRouterError, ModelNotFound
from lora_router.ground.home import Home
from lora_router.ground.ids import is_adapter_id
from lora_router.registry.base_pin import read_lock
from lora_router.registry.cards import ModelCard
from lora_router.registry.store import RegistryStore
from lora_router.router.flags.state import RouteState, Split
from lora_router.router.flags.store import RouteStore

OWNER = "lora-router"
Model = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Live:
    """What the event loop knows: the routes' serving states and the resident adapters."""

    routes: dict[str, RouteState]
    resident: frozenset[str]

    def routes_of(self, adapter_id: str) -> list[str]:
        return sorted(r for r, s in self.routes.items() if adapter_id in s.referenced_adapters())


class ModelCatalog:
    """Describes every valid ``model`` (see the module docstring).

    ``route_for(name)`` is the state a route's requests are served by (the gateway's
    ``ServingRoutes.get``). ``ids()`` is cheap (no card is parsed: a card file's presence
    counts) for error messages; ``list_models`` and ``retrieve`` read the cards.
    """

    def __init__(
        self,
        engine: Engine,
        store: RouteStore,
        home: Home,
        route_for: Callable[[str], RouteState | None],
    ) -> None:
        self._engine = engine
        self._store = store
        self._home = home
        self._route_for = route_for

    def _live(self) -> _Live:
        routes = {}
        for name, state in self._store.all().items():
            routes[name] = self._route_for(name) or state
        return _Live(routes, frozenset(self._engine.resident_adapters()))

    def ids(self) -> list[str]:
        """Every valid ``model`` for an error message: routes, adapters, the base."""
        live = self._live()
        registered = {a for a in self._home.list_adapter_ids()
                      if self._home.model_card_path(a).is_file()}
        return [*sorted(live.routes), *sorted(registered | live.resident), self._engine.base.name]

    async def list_models(self) -> list[Model]:
        live = self._live()
        adapters, base = await asyncio.to_thread(self._read_all, live.resident)
        out = [_route_model(s) for _, s in sorted(live.routes.items())]
        out += [self._adapter_model(a, card, live) for a, card in sorted(adapters.items())]
        out.append(base)
        return out

    async def retrieve(self, model_id: str) -> Model:
        """The model ``model_id`` names; ``ModelNotFound`` (404) when it names none."""
        live = self._live()
        state = live.routes.get(model_id)
        if state is not None:
            return _route_model(state)
        if model_id == self._engine.base.name:
            return await asyncio.to_thread(self._base_model)
        if is_adapter_id(model_id):
            card, why = await asyncio.to_thread(self._servable_card, model_id)
            if why is None:
                return self._adapter_model(model_id, card, live)
            if model_id in live.resident:  # loaded, its card gone since: it still serves
                return self._adapter_model(model_id, None, live)
        else:
            why = "no route, adapter or base has that name"
            if "/" in model_id:
                why = "model ids never contain '/'"
        raise ModelNotFound(f"model {model_id!r} not found: {why}", param="model",
                            valid=self.ids())

    # -- files (worker thread) ----------------------------------------------------------------
    def _read_all(self, resident: Iterable[str]) -> tuple[dict[str, ModelCard | None], Model]:
        adapters: dict[str, ModelCard | None] = dict.fromkeys(resident)
        for adapter_id in self._home.list_adapter_ids():
            card, why = self._servable_card(adapter_id)
            if why is None:
                adapters[adapter_id] = card
        return adapters, self._base_model()

    def _servable_card(self, adapter_id: str) -> tuple[ModelCard | None, str | None]:
        """The adapter's card, or why the adapter cannot serve (no files, no card, retired)."""
        if not (self._home.adapter_dir(adapter_id) / "adapter_config.json").is_file():
            return None, "no adapter of that id is registered"
        try:
            card = RegistryStore(self._home).get_model_card(adapter_id)
        except LoraRouterError:
            return None, "the adapter has no model card (not registered)"
        if card.status == "retired":
            return None, "the adapter is retired"
        return card, None

    def _base_model(self) -> Model:
        base = self._engine.base
        try:
            created = int(read_lock(self._home).pinned_at)
        except (LoraRouterError, OSError, ValueError, TypeError):
            created = 0
        return {**_model(base.name, "base", created), "sha256": base.sha256,
                "max_context": base.max_context}

    def _adapter_model(self, adapter_id: str, card: ModelCard | None, live: _Live) -> Model:
        created = _epoch(card.created_at) if card is not None else 0
        base = None
        if card is not None:
            ref = card.base_model
            base = {"name": ref.name, "version": ref.version, "sha256": ref.hash}
        return {
            **_model(adapter_id, "adapter", created),
            "resident": adapter_id in live.resident,
            "status": card.status if card is not None else None,
            "base": base,
            "routes": live.routes_of(adapter_id),
        }


def _model(model_id: str, kind: str, created: int) -> Model:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER,
            "kind": kind}


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _split(split: Split | None) -> Mapping[str, Any] | None:
    return None if split is None else {"adapter": split.adapter, "percent": split.percent}


def _route_model(state: RouteState) -> Model:
    return {
        **_model(state.route, "route", _epoch(state.updated_at)),
        "live": state.live,
        "canary": _split(state.canary),
        "shadow": _split(state.shadow),
        "rollback_target": state.rollback_target,
        "flag_version": state.version,
    }
