"""Route store shared through Redis: compare-and-set writes, local snapshot reads.

Writes run one Lua script (``scripts.PUT``: check version, set, audit, publish) in one
round trip. Reads never touch Redis: they read the :class:`Snapshot` that the
:class:`FlagListener` thread keeps current from pub/sub and periodic resyncs. If Redis
goes away, reads keep the last-known state (fail-static), writes raise
``FlagStoreUnavailable``, and :meth:`health` shows how stale the snapshot is.

Its clients (:mod:`router.flags.redis_client`) are passed in by whoever assembles the process
(the gateway's components, the CLI's direct mode), who closes them; a store given none makes
and closes its own.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aredis

from lora_router.ground.errors import FlagStoreUnavailable, VersionConflict
from lora_router.router.flags import keys, metrics, scripts
from lora_router.router.flags.listener import NETWORK_ERRORS, REDIS_ERRORS, FlagListener
from lora_router.router.flags.loops import LoopStatus
from lora_router.router.flags.redis_client import listener_client, store_client
from lora_router.router.flags.snapshot import Snapshot
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.store import AuditEntry, Listener, RouteStore, StoreHealth

log = logging.getLogger(__name__)


class RedisRouteStore(RouteStore):
    """Route flags in Redis; every process holds a snapshot (see the module docstring).

    ``replica_id`` (a gateway replica) makes this process report the versions it applied,
    so a writer can wait until every replica has a change (:mod:`router.flags.replicas`).
    ``client`` (writes, audit) and ``listener_client`` (the listener thread's): see the
    module docstring; ``timeout_s`` applies to the ones the store makes itself.
    """

    def __init__(
        self,
        url: str,
        *,
        resync_s: float = 5.0,
        timeout_s: float = 1.0,
        start_timeout_s: float = 5.0,
        replica_id: str | None = None,
        client: aredis.Redis | None = None,
        listener_client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.replica_id = replica_id
        self._resync_s = resync_s
        self._timeout_s = timeout_s
        self._start_timeout_s = start_timeout_s
        self._snapshot = Snapshot()
        self._listener: FlagListener | None = None
        self._given = (client, listener_client)
        self._client: aredis.Redis | None = None
        self._listener_client: redis.Redis | None = None
        self._put: Any = None

    async def start(self) -> None:
        """Connect, subscribe and load every route; ``FlagStoreUnavailable`` if Redis is down."""
        given, given_listener = self._given
        self._client = given or store_client(self.url, self._timeout_s)
        self._listener_client = given_listener or listener_client(self.url, self._timeout_s)
        self._put = self._client.register_script(scripts.PUT)
        try:  # fail fast, and have a warm connection for the first write
            await self._client.ping()
            await self._client.script_load(scripts.PUT)
        except REDIS_ERRORS as exc:
            await self.close()
            raise FlagStoreUnavailable(f"route store: Redis at {self.url}: {exc}") from exc
        self._listener = FlagListener(
            self._listener_client,
            self._snapshot,
            resync_s=self._resync_s,
            replica_id=self.replica_id,
        )
        self._listener.start()
        synced = await asyncio.to_thread(self._listener.synced.wait, self._start_timeout_s)
        if not synced:
            await self.close()
            raise FlagStoreUnavailable(f"route store: Redis at {self.url} is not reachable")

    async def close(self) -> None:
        """Stop the listener; close the clients this store made (not those it was given)."""
        given, given_listener = self._given
        if self._listener is not None:
            self._listener.stop()
            await asyncio.to_thread(self._listener.join, 5.0)
            self._listener = None
        if self._listener_client is not None:
            if self._listener_client is not given_listener:
                self._listener_client.close()
            self._listener_client = None
        if self._client is not None:
            if self._client is not given:
                await self._client.aclose()
            self._client = None

    def get(self, route: str) -> RouteState | None:
        return self._snapshot.get(route)

    def all(self) -> dict[str, RouteState]:
        return self._snapshot.all()

    def subscribe(self, fn: Listener) -> None:
        self._snapshot.add_listener(fn)

    def health(self) -> StoreHealth:
        listener = self._listener
        if listener is None:
            return StoreHealth(backend="redis", connected=False, last_sync_at=None)
        return StoreHealth(
            backend="redis", connected=listener.connected, last_sync_at=listener.last_sync_at
        )

    def loops(self) -> list[LoopStatus]:
        """The listener thread's liveness (``/readyz``); none before :meth:`start`."""
        listener = self._listener
        return [] if listener is None else [listener.status()]

    async def seed(self, states: dict[str, RouteState]) -> None:
        for state in states.values():
            try:
                await self.put(state, 0, action="seed")
            except VersionConflict:
                continue  # exists already: the stored state wins

    async def put(
        self, state: RouteState, expected_version: int, action: str = "set"
    ) -> RouteState:
        new = state.model_copy(
            update={"version": expected_version + 1, "updated_at": datetime.now(UTC)}
        )
        if self._put is None:
            raise FlagStoreUnavailable("route store is not started")
        try:
            ok, found = await self._write(new, action)
        except REDIS_ERRORS as exc:  # the network, or e.g. READONLY during a failover
            metrics.FLAGS_WRITES.labels("unavailable").inc()
            raise FlagStoreUnavailable(f"route store: cannot write to Redis: {exc}") from exc
        if not ok:
            metrics.FLAGS_WRITES.labels("conflict").inc()
            raise VersionConflict(
                f"route {new.route!r} is at version {found}, not {expected_version}",
                route=new.route,
                expected=expected_version,
                found=int(found),
            )
        metrics.FLAGS_WRITES.labels("ok").inc()
        if self._snapshot.apply(new):  # read-your-writes in this process
            metrics.FLAGS_APPLIED.labels("local").inc()
        return new

    async def _write(self, new: RouteState, action: str) -> tuple[int, int]:
        """Run the compare-and-set script; after a network error, retry once on fresh
        connections unless the first attempt landed.

        A Redis restart leaves every pooled connection dead, and the client (redis-py's
        default: no retries) would fail the first write after Redis is back. Retrying
        blindly is not safe for a write that may have been applied before the connection
        broke, so the retry first reads back the route: our exact state there means it
        landed.
        """
        assert self._client is not None
        route_keys, args = scripts.script_keys(new.route), scripts.script_args(
            new, action, keys.channel(keys.CHANGES_CHANNEL, self._client))
        try:
            ok, found = await self._put(keys=route_keys, args=args)
            return int(ok), int(found)
        except NETWORK_ERRORS as exc:
            log.info("route store: write of %s failed (%s); retrying on a fresh connection",
                     new.route, exc)
            await self._client.connection_pool.disconnect()
        raw = await self._client.hget(keys.ROUTES, new.route)
        if raw and RouteState.model_validate_json(raw) == new:
            return 1, new.version
        ok, found = await self._put(keys=route_keys, args=args)
        return int(ok), int(found)

    async def audit(self, route: str, limit: int = 1000) -> list[AuditEntry]:
        client = self._require_client()
        try:
            rows: Any = await client.xrevrange(keys.audit_key(route), count=limit)
        except REDIS_ERRORS as exc:
            raise FlagStoreUnavailable(f"route store: cannot read the audit: {exc}") from exc
        return [_audit_entry(route, fields) for _, fields in reversed(rows)]

    def _require_client(self) -> aredis.Redis:
        if self._client is None:
            raise FlagStoreUnavailable("route store is not started")
        return self._client


def _audit_entry(route: str, fields: dict[bytes, bytes]) -> AuditEntry:
    f = {k.decode(): v for k, v in fields.items()}
    before = f.get("before", b"")
    return AuditEntry(
        route=route,
        version=int(f["version"]),
        at=datetime.fromisoformat(f["at"].decode()),
        by=f["by"].decode(),
        reason=f["reason"].decode(),
        action=f["action"].decode(),
        before=RouteState.model_validate_json(before) if before else None,
        after=RouteState.model_validate_json(f["after"]),
    )

