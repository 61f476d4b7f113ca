"""How the CLI reaches the route operations: a running gateway (HTTP) or Redis directly.

Over HTTP the API key (``LORA_ROUTER_API_KEY``), else the admin token
(``LORA_ROUTER_ADMIN_TOKEN``, the same setting the gateway reads), is sent as
``Authorization: Bearer``.

Both clients return the admin API's wire shapes (:mod:`router.flags.views`), so the CLI
renders one thing. Over HTTP, the gateway's error codes come back as the same
``LoraRouterError`` subclasses (a 409 ``version_conflict`` is a ``VersionConflict``), and a
route name is percent-escaped into the path; a name no route can have (``a/b``, ``..``) is
``RouteNotFound`` without a request, as in direct mode.

Directly, read-only calls (routes, show, audit) never write: a change first creates its
route from the home's routes file when Redis lacks it (checked like any seed: an unknown
or retired adapter is refused before anything is written). The route service is assembled
as the gateway assembles its own (:func:`router.flags.runtime.build_route_service`): every
live gateway replica loads a change's new adapters before it commits.

A direct change that reached no gateway replica, because none is registered on that Redis,
is stored all the same, but nothing serves it yet: :func:`nothing_serves` tells, and
:func:`not_served_message` says so plainly (the CLI prints it and exits non-zero, so that an
on-call rollback that took effect nowhere never reads as done).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from lora_router.ground.errors import ConfigError, InvalidId, LoraRouterError, RouteNotFound
from lora_router.ground.home import Home
from lora_router.ground.ids import check_name
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.factory import open_route_store, seed_routes_file
from lora_router.router.flags.redis_client import RedisClients
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.runtime import build_route_service, replica_registry
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import AuditOut, ChangeOut, RoutesOut, StoreOut
from lora_router.router.settings import Settings


def nothing_serves(change: ChangeOut) -> bool:
    """Whether a change made directly in Redis reached no live gateway replica (none was
    registered, or every one stopped heartbeating before applying it)."""
    return change.applied is not None and not change.applied.replicas


def not_served_message(change: ChangeOut) -> str:
    """What to tell the person who made a change that :func:`nothing_serves`."""
    s = change.state
    return (
        f"{change.action} {s.route}: version {s.version} is STORED in Redis, but NOTHING "
        "SERVES IT YET: no gateway replica is registered on this Redis (REDIS_URL), so none "
        "applied it and no adapter was loaded; it takes effect when a gateway starts on "
        "this Redis"
    )


class FlagsClient(Protocol):
    async def routes(self) -> RoutesOut: ...
    async def show(self, route: str) -> RouteState: ...
    async def audit(self, route: str, limit: int) -> AuditOut: ...
    async def change(self, route: str, action: str, **fields: Any) -> ChangeOut: ...
    async def set_guard(self, route: str, guard: GuardPolicy | None, *, reason: str,
                        expected_version: int | None = None) -> ChangeOut: ...


class ServiceClient:
    """In-process calls on a :class:`RouteService` (the CLI's direct-to-Redis mode)."""

    def __init__(
        self, service: RouteService, actor: str, routes_file: Path | None = None
    ) -> None:
        self.service = service
        self.actor = actor
        self.routes_file = routes_file  # where a change finds a route Redis lacks

    async def routes(self) -> RoutesOut:
        s = self.service
        return RoutesOut(routes=s.routes(), store=StoreOut.of(s.store.health()))

    async def show(self, route: str) -> RouteState:
        return self.service.show(route)

    async def audit(self, route: str, limit: int) -> AuditOut:
        return AuditOut(route=route, entries=await self.service.audit(route, limit))

    async def change(self, route: str, action: str, **fields: Any) -> ChangeOut:
        file = self.routes_file
        if self.service.store.get(route) is None and file is not None and file.is_file():
            # only this route: another route's error in the file must not block this change
            await seed_routes_file(self.service, file, only={route})
        op = getattr(self.service, action.replace("-", "_"))
        return ChangeOut.of(await op(route, actor=self.actor, **fields))

    async def set_guard(self, route: str, guard: GuardPolicy | None, *, reason: str,
                        expected_version: int | None = None) -> ChangeOut:
        """The route's drift guard policy (None removes it): ``RouteService.set_guard``."""
        return await self.change(route, "set-guard", guard=guard, reason=reason,
                                 expected_version=expected_version)


class HttpClient:
    """The admin API of a running gateway."""

    def __init__(self, http: httpx.AsyncClient, actor: str) -> None:
        self.http = http
        self.actor = actor

    async def routes(self) -> RoutesOut:
        return RoutesOut.model_validate(await self._call("GET", "/admin/routes"))

    async def show(self, route: str) -> RouteState:
        return RouteState.model_validate(await self._call("GET", _route_path(route)))

    async def audit(self, route: str, limit: int) -> AuditOut:
        data = await self._call("GET", _route_path(route, "audit"), params={"limit": limit})
        return AuditOut.model_validate(data)

    async def change(self, route: str, action: str, **fields: Any) -> ChangeOut:
        body = {"actor": self.actor, **fields}
        data = await self._call("POST", _route_path(route, action), json=body)
        return ChangeOut.model_validate(data)

    async def set_guard(self, route: str, guard: GuardPolicy | None, *, reason: str,
                        expected_version: int | None = None) -> ChangeOut:
        """``POST /admin/routes/{route}/guard``."""
        body = {"actor": self.actor, "reason": reason, "expected_version": expected_version,
                "guard": None if guard is None else guard.model_dump(mode="json")}
        data = await self._call("POST", _route_path(route, "guard"), json=body)
        return ChangeOut.model_validate(data)

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            where = self.http.base_url
            raise ConnectionError(f"cannot reach the gateway at {where}: {exc}") from exc
        if response.is_success:
            return response.json()
        raise _error_of(response)


def _route_path(route: str, action: str | None = None) -> str:
    """``/admin/routes/{route}[/{action}]``, the name escaped. A name that is not a valid
    route name names no route; it is refused here, since the server decodes ``%2F`` before
    it routes (``a/audit`` would reach route ``a``'s audit)."""
    try:
        check_name(route, "route")
    except InvalidId:
        raise RouteNotFound(f"no route {route!r}", route=route) from None
    path = f"/admin/routes/{quote(route, safe='')}"
    return f"{path}/{action}" if action else path


def _error_of(response: httpx.Response) -> LoraRouterError:
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "internal_error", f"HTTP {response.status_code}: {response.text[:200]}"
    cls = _ERRORS_BY_CODE.get(code, LoraRouterError)
    return cls(message)


def _error_classes(cls: type[LoraRouterError]) -> dict[str, type[LoraRouterError]]:
    out = {cls.code: cls}
    for sub in cls.__subclasses__():
        out.update(_error_classes(sub))
    return out


_ERRORS_BY_CODE = _error_classes(LoraRouterError)


@asynccontextmanager
async def open_client(
    settings: Settings, url: str | None, actor: str, timeout_s: float = 30.0
) -> AsyncIterator[FlagsClient]:
    """HTTP when ``url`` is given; else Redis directly (``REDIS_URL``): see the module
    docstring for when routes are created from the routes file."""
    if url:
        headers = {}
        secret = settings.api_key or settings.admin_token  # LORA_ROUTER_API_KEY, else the
        if secret is not None:  # gateway's LORA_ROUTER_ADMIN_TOKEN
            headers["Authorization"] = f"Bearer {secret.get_secret_value()}"
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as http:
            yield HttpClient(http, actor)
        return
    if not settings.redis_url:
        raise ConfigError(
            "no gateway and no Redis: pass --url http://HOST:PORT of a running gateway, "
            "or set REDIS_URL to change the routes in Redis directly"
        )
    clients = RedisClients.of(settings)
    try:
        async with open_route_store(settings, clients=clients) as store:
            service = build_route_service(
                settings, Home.at(settings.home), store,
                registry=replica_registry(settings, clients),
            )
            try:
                yield ServiceClient(service, actor, settings.routes_path)
            finally:  # the cards' record of a change (stored, served or not) before exit
                await service.settle()
    finally:
        await clients.aclose()
