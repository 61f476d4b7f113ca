"""Who runs the monitor: a lease in Redis, so that of several replicas exactly one acts.

``SET key token NX PX ttl`` takes the lease when nobody holds it; the holder renews it
each round with a compare-and-expire script (only while the key still holds its token)
and releases it on shutdown with a compare-and-delete script, so a replica never renews
or deletes a lease another one has taken since. A holder that cannot renew (Redis down,
or the key expired and another took it) stops acting at once; one that stalls longer than
the TTL may act once more before it notices, which is why the monitor's checkpoint and the
guard's route changes are compare-and-set as well: the lease avoids double work, those
make a double action impossible.

Without Redis (embedded mode), :class:`LocalLease` always holds: there is one process.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

import redis.asyncio as aredis

from lora_router.router.flags.listener import NETWORK_ERRORS

log = logging.getLogger(__name__)

LEASE_KEY = "lora-router:drift:monitor-lease"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease(Protocol):
    holder: str

    async def acquire(self) -> bool:
        """Take or renew the lease; True while this process holds it."""
        ...

    async def release(self) -> None: ...


class LocalLease:
    """The embedded mode's lease: always held."""

    def __init__(self, holder: str) -> None:
        self.holder = holder

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class RedisLease:
    """The lease in Redis (see the module docstring)."""

    def __init__(self, client: aredis.Redis, holder: str, *, ttl_s: float = 10.0,
                 key: str = LEASE_KEY) -> None:
        self.client = client
        self.holder = holder
        self.key = key
        self.ttl_ms = max(int(ttl_s * 1000), 100)
        self.token = f"{holder}:{uuid.uuid4().hex}"
        self.held = False

    async def acquire(self) -> bool:
        try:
            if self.held:
                renewed = await self.client.eval(_RENEW, 1, self.key, self.token,
                                                 self.ttl_ms)
                self.held = bool(renewed)
                if not self.held:
                    log.warning("drift monitor lease lost (%s)", self.holder)
            if not self.held:
                taken = await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms)
                self.held = bool(taken)
                if self.held:
                    log.info("drift monitor lease taken by %s", self.holder)
        except NETWORK_ERRORS as exc:
            if self.held:
                log.warning("drift monitor lease: Redis unreachable (%s); not acting", exc)
            self.held = False
        return self.held

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            await self.client.eval(_RELEASE, 1, self.key, self.token)
        except NETWORK_ERRORS as exc:  # it expires on its own
            log.warning("drift monitor lease: release failed (%s)", exc)

    async def holder_token(self) -> str | None:
        """The token of whoever holds the lease now (None: nobody)."""
        raw = await self.client.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw
