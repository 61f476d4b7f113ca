"""A gateway replica's side of :mod:`router.flags.replicas`: heartbeat and load answers.

Phase-2 start order in the gateway: ``LoadResponder.start()`` (subscribed, so no request is
missed), load every adapter the routes reference, then ``ReplicaMember.start()`` (now live
and counted by writers), then report ready.

Both loops survive every error class (the network, ``READONLY`` during a failover, a
malformed load request, a bug in a load): they log, count (:mod:`router.flags.loops`), back
off and go on; ``status()`` tells ``/readyz`` whether each is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aredis
from pydantic import ValidationError

from lora_router.ground.errors import LoraRouterError
from lora_router.router.flags import keys, metrics, scripts
from lora_router.router.flags.listener import NETWORK_ERRORS, REDIS_ERRORS
from lora_router.router.flags.loops import LoopHealth, LoopStatus
from lora_router.router.flags.replicas import LoadAck, LoadFn, LoadRequest, ReplicaInfo

log = logging.getLogger(__name__)

_ACK_TTL_S = 60
_STOP_WAIT_S = 10.0


async def _stop_task(task: asyncio.Task[None], what: str) -> None:
    """Cancel ``task`` and wait for it, bounded: a cancellation swallowed inside a Redis
    call (seen with redis-py's socket timeouts on Python 3.11) must not hang shutdown; the
    loops also check their stop flag."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_STOP_WAIT_S)
    if not done:
        log.warning("%s did not stop within %.0f s; abandoned", what, _STOP_WAIT_S)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", what, task.exception())


class ReplicaMember:
    """Keeps this replica registered (heartbeat key with a TTL) until :meth:`stop`.

    ``ready()`` (optional) is checked before each beat: while it is false (a referenced
    adapter is not resident, e.g. after a reconnect that brought a change; or the replica's
    subscriptions are not back yet after one) the replica withdraws its presence key, so
    writers neither count nor wait for it, and it beats again once ready. ``registered``
    is shown by ``/readyz`` (informational: it does not make the replica unready).
    """

    def __init__(
        self,
        client: aredis.Redis,
        info: ReplicaInfo,
        *,
        ttl_s: float = 5.0,
        interval_s: float = 1.0,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self.info = info
        self._ttl_ms = int(ttl_s * 1000)
        self._interval_s = interval_s
        self._ready = ready
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.registered = False  # counted by writers (last beat sent, not withdrawn)
        self.last_beat_at: datetime | None = None
        self.health = LoopHealth("heartbeat")

    def status(self) -> LoopStatus:
        task = self._task
        return self.health.status(task is not None and not task.done())

    async def start(self) -> None:
        await self.beat()
        self._set_registered(True)
        self._task = asyncio.create_task(self._run(), name=f"replica-heartbeat-{self.info.id}")

    async def stop(self) -> None:
        """Deregister at once (a crashed replica instead expires after ``ttl_s``)."""
        self._stopping = True
        if self._task is not None:
            await _stop_task(self._task, f"replica {self.info.id} heartbeat")
            self._task = None
        self._set_registered(False)
        with contextlib.suppress(*REDIS_ERRORS):
            rid = self.info.id
            await self._client.delete(
                keys.replica_key(rid), keys.applied_key(rid), keys.resident_key(rid)
            )
            await self._client.srem(keys.REPLICAS, rid)

    async def beat(self) -> None:
        rid = self.info.id
        pipe = self._client.pipeline(transaction=False)
        pipe.set(keys.replica_key(rid), self.info.model_dump_json(), px=self._ttl_ms)
        pipe.sadd(keys.REPLICAS, rid)
        # progress records outlive a short Redis hiccup but not a dead replica
        pipe.pexpire(keys.applied_key(rid), self._ttl_ms * 10)
        pipe.pexpire(keys.resident_key(rid), self._ttl_ms * 10)
        # the registry's epoch: created by the first beat after Redis lost its data
        pipe.eval(scripts.EPOCH, 1, keys.REPLICAS_EPOCH)
        await pipe.execute()
        self.last_beat_at = datetime.now(UTC)

    async def set_resident(self, adapters: set[str]) -> None:
        rid = self.info.id
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.resident_key(rid))
        if adapters:
            pipe.sadd(keys.resident_key(rid), *sorted(adapters))
        await pipe.execute()

    async def _run(self) -> None:
        with self.health.running():
            while not self._stopping:
                await asyncio.sleep(self._interval_s)
                try:
                    await self.refresh()
                except Exception as exc:  # every error class: READONLY too; beat again later
                    self.health.failed(exc, f"replica {self.info.id}: heartbeat failed")
                    self._check_expired()
                else:
                    self.health.succeeded()

    def _check_expired(self) -> None:
        """After failed beats: once the last beat is older than the TTL, the presence key
        has expired in Redis, so writers no longer count this replica: say so
        (``registered`` and its gauge) until a beat succeeds again."""
        at = self.last_beat_at
        if not self.registered or at is None:
            return
        if (datetime.now(UTC) - at).total_seconds() * 1000 >= self._ttl_ms:
            log.warning("replica %s: no heartbeat for longer than its TTL: not registered "
                        "until Redis is back", self.info.id)
            self._set_registered(False)

    async def refresh(self) -> None:
        """Beat now if ready, else withdraw (also called when residency changed, so a
        replica that caught up is counted again without waiting for the next beat)."""
        if self._task is None or self._stopping:
            return  # not started, or stopped
        if self._ready is None or self._ready():
            await self.beat()
            self._set_registered(True)
        elif self.registered:
            await self._withdraw()

    async def _withdraw(self) -> None:
        """Stop being counted (presence key gone) until ``ready`` holds again."""
        log.warning(
            "replica %s: not ready to be counted (a referenced adapter not resident, or "
            "not in sync with Redis yet); withdrawn until it is", self.info.id,
        )
        await self._client.delete(keys.replica_key(self.info.id))
        self._set_registered(False)

    def _set_registered(self, value: bool) -> None:
        if value and not self.registered:
            log.info("replica %s registered", self.info.id)
        self.registered = value
        metrics.REPLICA_REGISTERED.set(1 if value else 0)


class LoadResponder:
    """Answers load requests addressed to this replica, one at a time, with ``load``.

    ``load(adapter_ids)`` makes the adapters resident, raising a ``LoraRouterError`` (wrong
    base, bad files, no slot) to refuse; the ack carries its code and message.
    """

    def __init__(self, client: aredis.Redis, replica_id: str, load: LoadFn) -> None:
        self._client = client
        self.replica_id = replica_id
        self._load = load
        self._pubsub: aredis.client.PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.health = LoopHealth("load_responder")

    def status(self) -> LoopStatus:
        task = self._task
        return self.health.status(task is not None and not task.done())

    @property
    def listening(self) -> bool:
        """Subscribed on a live connection now: after Redis restarts, false until the
        subscription is back (redis-py reconnects and resubscribes), so that the heartbeat
        holds back meanwhile and writers never wait for an answer that cannot come."""
        conn = self._pubsub.connection if self._pubsub is not None else None
        return conn is not None and bool(conn.is_connected)

    async def start(self) -> None:
        await self._subscribe()
        self._task = asyncio.create_task(self._run(), name=f"load-responder-{self.replica_id}")

    async def _subscribe(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(keys.channel(keys.LOAD_REQUEST_CHANNEL, self._client))

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await _stop_task(self._task, f"replica {self.replica_id} load responder")
            self._task = None
        await self._drop_subscription()

    async def _run(self) -> None:
        with self.health.running():
            while not self._stopping:
                try:
                    message = await self._next()
                except Exception as exc:  # the subscription: reconnect, resubscribe
                    await asyncio.sleep(self.health.failed(
                        exc, f"replica {self.replica_id}: load requests unavailable"
                    ))
                    if not isinstance(exc, NETWORK_ERRORS):  # redis-py resubscribes after
                        await self._drop_subscription()  # network errors; else anew
                    continue
                self.health.succeeded()
                if message is not None and message["type"] == "message":
                    await self._handle(message["data"])

    async def _next(self) -> dict[str, Any] | None:
        if self._pubsub is None:
            await self._subscribe()
        assert self._pubsub is not None
        message: dict[str, Any] | None = await self._pubsub.get_message(
            ignore_subscribe_messages=True, timeout=1.0
        )
        return message

    async def _drop_subscription(self) -> None:
        """Close the subscription; the next read subscribes again."""
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()

    async def _handle(self, data: bytes) -> None:
        """Answer one load request; a malformed one is counted and skipped."""
        try:
            req = LoadRequest.model_validate_json(data)
        except (ValidationError, ValueError, TypeError) as exc:
            self.health.noted(exc, f"ignoring a malformed load request {data[:200]!r}")
            return
        if self.replica_id not in req.replicas:
            return
        try:
            await self._answer(req)
        except Exception as exc:  # never let one request end the responder
            self.health.noted(exc, f"answering load request {req.id}")

    async def _answer(self, req: LoadRequest) -> None:
        try:
            await self._load(req.adapters)
            ack = LoadAck(replica=self.replica_id, ok=True)
        except LoraRouterError as exc:
            ack = LoadAck(replica=self.replica_id, ok=False, code=exc.code, reason=exc.message)
        except Exception as exc:  # a replica must always answer, whatever the engine did
            log.exception("replica %s: loading %s failed", self.replica_id, req.adapters)
            ack = LoadAck(replica=self.replica_id, ok=False, code="internal_error", reason=str(exc))
        pipe = self._client.pipeline(transaction=False)
        pipe.rpush(keys.load_ack_key(req.id), ack.model_dump_json())
        pipe.expire(keys.load_ack_key(req.id), _ACK_TTL_S)
        try:
            await pipe.execute()
        except REDIS_ERRORS as exc:  # the network, or READONLY during a failover
            self.health.noted(exc, f"could not ack load {req.id}")
