"""Gateway replicas in Redis: presence, applied flag versions, and the load handshake.

Protocol (keys in :mod:`router.flags.keys`):

- **Presence.** A replica (``ReplicaMember``) sets ``replica_key(id)`` (its
  :class:`ReplicaInfo`, TTL ``ttl_s``) and adds its id to ``REPLICAS`` every
  ``interval_s``. It is live while the key exists; readers prune expired ids.
- **Applied versions.** The replica's route store (``RedisRouteStore(replica_id=...)``)
  writes ``applied_key(id)[route] = version`` after applying a change and publishes
  ``{"replica","route","version","at"}`` on ``APPLIED_CHANNEL``. :class:`AppliedWatch`
  waits on those to tell a writer when every live replica has a version.
- **Load handshake** (two-phase residency). The coordinator publishes a
  :class:`LoadRequest` (id, adapters, the replicas it expects) on ``LOAD_REQUEST_CHANNEL``;
  each listed replica's :class:`LoadResponder` loads the adapters and RPUSHes a
  :class:`LoadAck` (ok, or the error code and reason) on ``load_ack_key(id)``. The change
  commits only when every expected replica acked ok within the timeout; a replica whose
  heartbeat expired meanwhile is not waited for. A replica must subscribe (start its
  responder) and load every referenced adapter *before* it registers as live.
- **Epoch** (the registry is complete): after Redis lost its data the registry is empty
  until the next heartbeats; the load gate waits until it has re-formed, or refuses with a
  503 (:mod:`router.flags.epoch`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as aredis
from pydantic import BaseModel, Field, ValidationError

from lora_router.ground.errors import FlagStoreUnavailable, RouteChangeRefused
from lora_router.router.flags import keys
from lora_router.router.flags.epoch import RegistryEpoch
from lora_router.router.flags.listener import REDIS_ERRORS

log = logging.getLogger(__name__)

LoadFn = Callable[[list[str]], Awaitable[None]]


class ReplicaInfo(BaseModel):
    id: str
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    url: str | None = None
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class LoadRequest(BaseModel):
    id: str
    adapters: list[str]
    replicas: list[str]


class LoadAck(BaseModel):
    replica: str
    ok: bool
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """Which live replicas applied ``version``, and how long after the write's ack (ms).

    ``elapsed_ms`` is when the last live replica's apply was seen (None unless every live
    replica applied it in time); ``dropped`` lists replicas that stopped heartbeating
    before applying it: they are not waited for, and do not count in ``elapsed_ms``.
    """

    version: int
    elapsed_ms: float | None
    replicas: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    request_id: str
    acks: dict[str, LoadAck]
    missing: list[str]  # live replicas that did not answer in time

    @property
    def ok(self) -> bool:
        return not self.missing and all(a.ok for a in self.acks.values())

    def reasons(self) -> list[str]:
        out = [f"{r}: {a.code}: {a.reason}" for r, a in sorted(self.acks.items()) if not a.ok]
        return out + [f"{r}: no answer in time" for r in self.missing]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ReplicaRegistry:
    """Reads replica presence and progress, and coordinates loads (the writer's side).

    ``settle_s``: how long after the registry's epoch began (see the module docstring) it
    is trusted to list every live replica: the replicas' heartbeat TTL (``replica_ttl_s``).
    """

    def __init__(self, client: aredis.Redis, *, settle_s: float = 5.0) -> None:
        self._client = client
        self.epoch = RegistryEpoch(client, settle_s)

    async def live(self) -> list[str]:
        """Ids of replicas whose heartbeat has not expired (expired ones are pruned)."""
        try:
            ids = sorted(_text(m) for m in await self._client.smembers(keys.REPLICAS))
            if not ids:
                return []
            alive = await self._alive(ids)
            dead = [r for r, ok in zip(ids, alive, strict=True) if not ok]
            if dead:
                await self._client.srem(keys.REPLICAS, *dead)
        except REDIS_ERRORS as exc:
            raise FlagStoreUnavailable(f"replica registry: {exc}") from exc
        return [r for r, ok in zip(ids, alive, strict=True) if ok]

    async def _alive(self, ids: list[str]) -> list[bool]:
        pipe = self._client.pipeline(transaction=False)
        for r in ids:
            pipe.exists(keys.replica_key(r))
        return [bool(n) for n in await pipe.execute()]

    async def info(self) -> list[ReplicaInfo]:
        out = []
        for r in await self.live():
            raw = await self._client.get(keys.replica_key(r))
            if raw:
                with contextlib.suppress(ValidationError):
                    out.append(ReplicaInfo.model_validate_json(raw))
        return out

    async def applied(self, route: str, replicas: list[str]) -> dict[str, int]:
        pipe = self._client.pipeline(transaction=False)
        for r in replicas:
            pipe.hget(keys.applied_key(r), route)
        values = await pipe.execute()
        return {r: int(v) if v else 0 for r, v in zip(replicas, values, strict=True)}

    async def resident(self, replica: str) -> set[str]:
        return {_text(m) for m in await self._client.smembers(keys.resident_key(replica))}

    @contextlib.asynccontextmanager
    async def watch_applied(self, route: str) -> AsyncIterator[AppliedWatch]:
        """Subscribe before the write, so no replica's report can slip past the wait."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(keys.channel(keys.APPLIED_CHANNEL, self._client))
                # read who is live before the write, so that after the write's ack the wait
                # only reads the reports already buffered (no round trips on the timed path)
                live = await self.live()
            except REDIS_ERRORS as exc:  # Redis down: the change cannot be made (503)
                raise FlagStoreUnavailable(f"replica registry: {exc}") from exc
            yield AppliedWatch(self, pubsub, route, live)
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()

    async def request_load(self, adapters: set[str], timeout_s: float) -> LoadOutcome:
        """Ask every live replica to load ``adapters``; collect acks until ``timeout_s``.

        First waits until the registry is settled (:meth:`RegistryEpoch.wait_settled`), so
        that right after Redis lost its data a change waits for the replicas to re-register
        instead of committing with nobody asked."""
        await self.epoch.wait_settled(timeout_s)
        expected = await self.live()
        req = LoadRequest(id=uuid.uuid4().hex, adapters=sorted(adapters), replicas=expected)
        if not expected:
            return LoadOutcome(req.id, {}, [])
        ack_key = keys.load_ack_key(req.id)
        acks: dict[str, LoadAck] = {}
        deadline = time.monotonic() + timeout_s
        try:
            await self._client.publish(
                keys.channel(keys.LOAD_REQUEST_CHANNEL, self._client), req.model_dump_json())
            while set(expected) - set(acks) and (left := deadline - time.monotonic()) > 0:
                item = await self._client.blpop([ack_key], timeout=min(left, 0.5))
                if item is not None:
                    try:
                        ack = LoadAck.model_validate_json(item[1])
                    except ValidationError:
                        log.warning("ignoring a malformed load ack: %r", item[1][:200])
                        continue
                    acks[ack.replica] = ack
            missing = [r for r in expected if r not in acks]
            if missing:  # do not wait for replicas that died meanwhile
                still = set(await self.live())
                missing = [r for r in missing if r in still]
            await self._client.delete(ack_key)
        except REDIS_ERRORS as exc:
            raise FlagStoreUnavailable(f"replica registry: {exc}") from exc
        return LoadOutcome(req.id, acks, missing)

    def load_gate(self, timeout_s: float) -> Callable[[set[str]], Awaitable[None]]:
        """A ``RouteService`` ``prepare`` hook: every live replica loads, or the change fails."""

        async def prepare(adapters: set[str]) -> None:
            outcome = await self.request_load(adapters, timeout_s)
            if not outcome.ok:
                raise RouteChangeRefused(
                    "not every replica could load "
                    f"{', '.join(sorted(adapters))}: {'; '.join(outcome.reasons())}",
                    reasons=outcome.reasons(),
                )

        return prepare


class AppliedWatch:
    """Waits until every live replica reports a route version (see ``watch_applied``)."""

    _REFRESH_S = 0.1  # re-read presence and applied versions (heals a missed report)

    def __init__(
        self,
        registry: ReplicaRegistry,
        pubsub: aredis.client.PubSub,
        route: str,
        live: list[str],
    ):
        self._registry = registry
        self._pubsub = pubsub
        self._route = route
        self._live = live  # the live replicas when the watch opened (before the write)

    async def wait(self, version: int, *, since: float, timeout_s: float) -> ApplyReport:
        """``since``: ``time.perf_counter()`` at the write's acknowledgement.

        Counts the applied reports against the replicas that were live before the write;
        when none is pending it confirms once with the registry (a replica that joined
        meanwhile, or a report missed). Every ``_REFRESH_S`` while some are pending it
        re-reads the registry: a pending replica whose heartbeat expired is dropped (it
        died), one that applied without a report seen is counted then. The time reported
        is when the last live replica's apply was seen, not when a dead one was dropped.
        """
        progress = _Progress(list(self._live), set(self._live))
        deadline = since + timeout_s
        try:
            confirmed = False  # ``pending`` comes from a registry read with nothing after it
            refresh_at = time.perf_counter() + self._REFRESH_S
            while (now := time.perf_counter()) < deadline:
                if not progress.pending and not confirmed:
                    await self._refresh(version, progress)
                    confirmed = True
                if not progress.pending:
                    break
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(0.05, deadline - now)
                )
                if (
                    message is not None
                    and message["type"] == "message"
                    and self._on_report(message["data"], version, progress.pending)
                ):
                    progress.applied_at = time.perf_counter()
                    confirmed = False
                if progress.pending and time.perf_counter() >= refresh_at:
                    await self._refresh(version, progress)
                    confirmed = True
                    refresh_at = time.perf_counter() + self._REFRESH_S
        except (*REDIS_ERRORS, FlagStoreUnavailable) as exc:
            log.warning("waiting for replicas to apply %s v%s: %s", self._route, version, exc)
            return progress.report(version, None)
        if progress.pending:
            return progress.report(version, None)
        return progress.report(version, ((progress.applied_at or since) - since) * 1e3)

    async def _refresh(self, version: int, progress: _Progress) -> None:
        live = await self._registry.live()
        applied = await self._registry.applied(self._route, live)
        pending = {r for r, v in applied.items() if v < version}
        gone = progress.pending - set(live)
        if progress.pending - gone - pending:  # applied, its report missed: seen now
            progress.applied_at = time.perf_counter()
        progress.dropped.extend(sorted(gone - set(progress.dropped)))
        progress.live, progress.pending = live, pending

    def _on_report(self, data: bytes, version: int, pending: set[str]) -> bool:
        """Take one applied report; True when it was the first from a pending replica."""
        try:
            msg = json.loads(data)
            replica = str(msg["replica"])
            ours = msg["route"] == self._route and int(msg["version"]) >= version
            if ours and replica in pending:
                pending.discard(replica)
                return True
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed applied report: %r", data)
        return False


@dataclass(slots=True)
class _Progress:
    """What :meth:`AppliedWatch.wait` knows so far."""

    live: list[str]
    pending: set[str]
    dropped: list[str] = field(default_factory=list)  # died before applying
    applied_at: float | None = None  # perf_counter when the last live apply was seen

    def report(self, version: int, elapsed_ms: float | None) -> ApplyReport:
        live = [r for r in self.live if r not in self.dropped]
        return ApplyReport(version, elapsed_ms, live, sorted(self.pending), list(self.dropped))
