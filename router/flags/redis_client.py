"""Every Redis client of the gateway and the CLI is made here: timeouts, names, health checks.

A process makes its clients once (the gateway in ``router.components.build_components``, the
CLI's direct mode in ``router.flags.client.open_client``), hands them to the route store, its
listener thread, the replica registry and the drift lease, and closes them once at the end.

Each purpose keeps a client (and so a connection pool) of its own because their timeouts
differ on purpose: a route write fails fast (the caller gets a 503 and may retry), the replica
handshake waits on load acknowledgements, and the listener thread needs synchronous
connections so that a busy event loop cannot delay a flip. Every client names itself
``lora-router:<purpose>`` (``CLIENT LIST`` on the server shows who holds which connection),
and pings a connection left idle for :data:`HEALTH_CHECK_S` before using it again, so that one
dropped while idle (a Redis restart, a middlebox) is replaced before a call instead of failing
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aredis

from lora_router.router.settings import Settings

CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_S = 30.0
STORE_TIMEOUT_S = 1.0  # route writes and the listener: fail fast, serve the last-known state
LEASE_TIMEOUT_S = 2.0
CHECK_TIMEOUT_S = 2.0  # one-off reads before a start (``lora-router serve``'s checks)


def client_name(purpose: str) -> str:
    return f"lora-router:{purpose}"


def async_client(
    url: str, *, purpose: str, timeout_s: float,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> aredis.Redis:
    """An asyncio client for ``purpose`` (no connection is made until its first call)."""
    return aredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        client_name=client_name(purpose),
        health_check_interval=HEALTH_CHECK_S,
    )


def sync_client(
    url: str, *, purpose: str, timeout_s: float,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> redis.Redis:
    """A blocking client for ``purpose`` (a thread of its own, or a one-off check)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        client_name=client_name(purpose),
        health_check_interval=HEALTH_CHECK_S,
    )


def store_client(url: str, timeout_s: float = STORE_TIMEOUT_S) -> aredis.Redis:
    """The route store's: compare-and-set writes and audit reads."""
    return async_client(url, purpose="route-store", timeout_s=timeout_s,
                        connect_timeout_s=timeout_s)


def listener_client(url: str, timeout_s: float = STORE_TIMEOUT_S) -> redis.Redis:
    """The flag listener thread's: its subscription, resyncs and applied reports."""
    return sync_client(url, purpose="flag-listener", timeout_s=timeout_s,
                       connect_timeout_s=timeout_s)


def replicas_client(url: str, ack_timeout_s: float) -> aredis.Redis:
    """The replica registry's, heartbeat's and load handshake's: above the longest blocking
    call on it (a BLPOP for load acknowledgements, within ``ack_timeout_s``)."""
    return async_client(url, purpose="replicas", timeout_s=ack_timeout_s + 1)


def lease_client(url: str) -> aredis.Redis:
    """The drift monitor's lease: a slow Redis skips a round rather than delaying it."""
    return async_client(url, purpose="drift-lease", timeout_s=LEASE_TIMEOUT_S,
                        connect_timeout_s=LEASE_TIMEOUT_S)


@dataclass(slots=True)
class RedisClients:
    """One process's Redis clients (see the module docstring); :meth:`aclose` closes all."""

    url: str
    store: aredis.Redis
    listener: redis.Redis
    replicas: aredis.Redis  # registry, heartbeat, load requests and their acks
    lease: aredis.Redis  # the drift monitor's lease

    @classmethod
    def of(cls, settings: Settings) -> RedisClients:
        """The clients for ``settings.redis_url`` (which must be set); none connects yet."""
        url = settings.redis_url
        if url is None:
            raise ValueError("RedisClients.of needs settings.redis_url")
        return cls(
            url=url,
            store=store_client(url),
            listener=listener_client(url),
            replicas=replicas_client(url, settings.flags_ack_timeout_s),
            lease=lease_client(url),
        )

    async def aclose(self) -> None:
        for client in (self.store, self.replicas, self.lease):
            await client.aclose()
        self.listener.close()
