"""A gateway replica's side of :mod:`router.flags.replicas`: heartbeat and load answers.

Phase-2 start order in the gateway: ``LoadResponder.start()`` (subscribed, so no request is
missed), load every adapter the routes reference, then ``ReplicaMember.start()`` (now live
and counted by writers), then report ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as aredis

from registry.errors import LoraRouterError
from router.flags import keys, metrics
from router.flags.listener import NETWORK_ERRORS
from router.flags.replicas import LoadAck, LoadFn, LoadRequest, ReplicaInfo

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
    adapter is not resident, e.g. after a reconnect that brought a change) the replica
    withdraws its presence key, so writers neither count nor wait for it, and it beats
    again once ready. ``registered`` tells ``/readyz``.
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
        with contextlib.suppress(*NETWORK_ERRORS):
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
        while not self._stopping:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except NETWORK_ERRORS as exc:
                log.warning("replica %s: heartbeat failed: %s", self.info.id, exc)
                self._check_expired()

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
            "replica %s: a referenced adapter is not resident; withdrawn until it is",
            self.info.id,
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

    async def start(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(keys.LOAD_REQUEST_CHANNEL)
        self._task = asyncio.create_task(self._run(), name=f"load-responder-{self.replica_id}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await _stop_task(self._task, f"replica {self.replica_id} load responder")
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    async def _run(self) -> None:
        assert self._pubsub is not None
        while not self._stopping:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except NETWORK_ERRORS as exc:
                log.warning("replica %s: load requests unavailable: %s", self.replica_id, exc)
                await asyncio.sleep(0.5)
                continue
            if message is not None and message["type"] == "message":
                req = LoadRequest.model_validate_json(message["data"])
                if self.replica_id in req.replicas:
                    await self._answer(req)

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
        except NETWORK_ERRORS as exc:
            log.warning("replica %s: could not ack load %s: %s", self.replica_id, req.id, exc)
