"""A gateway replica's side of :mod:`router.flags.replicas`: heartbeat and load answers.

Phase-2 start order in the gateway: ``LoadResponder.start()`` (subscribed, so no request is
missed), load every adapter the routes reference, then ``ReplicaMember.start()`` (now live
and counted by writers), then report ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aredis

from registry.errors import LoraRouterError
from router.flags import keys
from router.flags.listener import NETWORK_ERRORS
from router.flags.replicas import LoadAck, LoadFn, LoadRequest, ReplicaInfo

log = logging.getLogger(__name__)

_ACK_TTL_S = 60


class ReplicaMember:
    """Keeps this replica registered (heartbeat key with a TTL) until :meth:`stop`."""

    def __init__(
        self,
        client: aredis.Redis,
        info: ReplicaInfo,
        *,
        ttl_s: float = 5.0,
        interval_s: float = 1.0,
    ) -> None:
        self._client = client
        self.info = info
        self._ttl_ms = int(ttl_s * 1000)
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"replica-heartbeat-{self.info.id}")

    async def stop(self) -> None:
        """Deregister at once (a crashed replica instead expires after ``ttl_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
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

    async def set_resident(self, adapters: set[str]) -> None:
        rid = self.info.id
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.resident_key(rid))
        if adapters:
            pipe.sadd(keys.resident_key(rid), *sorted(adapters))
        await pipe.execute()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.beat()
            except NETWORK_ERRORS as exc:
                log.warning("replica %s: heartbeat failed: %s", self.info.id, exc)


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

    async def start(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(keys.LOAD_REQUEST_CHANNEL)
        self._task = asyncio.create_task(self._run(), name=f"load-responder-{self.replica_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    async def _run(self) -> None:
        assert self._pubsub is not None
        while True:
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
