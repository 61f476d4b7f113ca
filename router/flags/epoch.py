"""When the replica registry can be trusted to list every live replica again.

Redis keeps nothing on disk: after it restarts empty (or fails over, or is flushed) the
registry (:mod:`router.flags.replicas`) is empty until the replicas' next heartbeats, and
an empty registry must not read as "no replica to wait for": a change would commit with
nobody having loaded its adapter.

``REPLICAS_EPOCH`` holds the Redis server time at which the current registry began; the
first heartbeat or gated writer that finds it missing creates it (``scripts.EPOCH``: one
clock, Redis's, for every process). A writer trusts the registry once the epoch is
``settle_s`` old, ``settle_s`` being the replicas' heartbeat TTL. Why that is enough: the
epoch began after the data was lost; a replica that has beaten since is registered, and one
that has not beaten for a whole TTL would have expired by now had nothing been lost. So from
then on the registry says what it would have said had Redis never lost it. Until then the
load gate waits (bounded by its timeout) or refuses with ``ReplicaRegistrySettling`` (503).
A brand-new Redis looks the same, so the first gated change on it may wait up to a TTL.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aredis

from lora_router.ground.errors import FlagStoreUnavailable, ReplicaRegistrySettling
from lora_router.router.flags import keys, scripts
from lora_router.router.flags.loops import NETWORK_ERRORS, REDIS_ERRORS

log = logging.getLogger(__name__)


class RegistryEpoch:
    """The registry's epoch in Redis (see the module docstring)."""

    def __init__(self, client: aredis.Redis, settle_s: float) -> None:
        self._client = client
        self.settle_s = settle_s
        self._script = client.register_script(scripts.EPOCH)

    async def age_s(self) -> float:
        """Seconds since the registry's epoch began (creating it now if it is missing)."""
        try:
            try:
                since, now = await self._script(keys=[keys.REPLICAS_EPOCH])
            except NETWORK_ERRORS:  # idle pooled connections a Redis restart killed: once
                # more on fresh ones (idempotent; connections in use, e.g. the load
                # responder's subscription, are left alone)
                await self._client.connection_pool.disconnect(inuse_connections=False)
                since, now = await self._script(keys=[keys.REPLICAS_EPOCH])
        except REDIS_ERRORS as exc:
            raise FlagStoreUnavailable(f"replica registry: {exc}") from exc
        return max(0.0, (int(now) - int(since)) / 1000)

    async def wait_settled(self, timeout_s: float) -> float:
        """Return once the registry lists every live replica (its epoch is ``settle_s``
        old), waiting up to ``timeout_s``; ``ReplicaRegistrySettling`` (503) when that
        would take longer. Returns the seconds waited."""
        left = self.settle_s - await self.age_s()
        if left <= 0:
            return 0.0
        if left > timeout_s:
            raise ReplicaRegistrySettling(
                f"the replica registry is re-forming: Redis lost its data (a restart, "
                f"failover or flush) {self.settle_s - left:.1f} s ago and replicas may not "
                f"have re-registered yet, so a change that every replica must load first "
                f"cannot be gated for another {left:.1f} s; retry then",
                retry_after_s=round(left, 1),
            )
        log.info("replica registry re-forming after a Redis data loss: waiting %.1f s", left)
        await asyncio.sleep(left)
        return left
