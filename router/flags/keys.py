"""Every Redis key, channel and prefix the route flags use, in one place.

``lr:`` namespaces the project; nothing else in the code spells a Redis key.
"""

from __future__ import annotations

from typing import Any, Protocol

PREFIX = "lr:"

# route state (one hash field per route; values are RouteState JSON / int versions)
ROUTES = f"{PREFIX}flags:routes"
VERSIONS = f"{PREFIX}flags:versions"
AUDIT_PREFIX = f"{PREFIX}flags:audit:"  # + route -> stream of committed changes
AUDIT_MAXLEN = 10_000  # approximate cap per route (XADD MAXLEN ~)

# pub/sub channels: names, scoped to a Redis database by :func:`channel` (PUBLISH and
# SUBSCRIBE ignore the db number: two fleets on one server, on databases 0 and 1, would
# otherwise apply each other's changes)
CHANGES_CHANNEL = f"{PREFIX}flags:changes"  # message: the committed RouteState JSON
APPLIED_CHANNEL = f"{PREFIX}flags:applied"  # message: {"replica","route","version","at"}
LOAD_REQUEST_CHANNEL = f"{PREFIX}replicas:load-request"  # message: LoadRequest JSON

# replicas
REPLICAS = f"{PREFIX}replicas"  # set of replica ids (pruned of expired members on read)
REPLICA_PREFIX = f"{PREFIX}replica:"
# when the registry began, in Redis server time (ms): created (once, NX) by the first
# heartbeat or gated writer after Redis started empty or lost its data; it has no TTL, so
# its absence or youth is how a writer knows replicas may not have re-registered yet
REPLICAS_EPOCH = f"{PREFIX}replicas:epoch"
LOAD_ACK_PREFIX = f"{PREFIX}replicas:load-ack:"  # + request id -> list of LoadAck JSON


class _HasPool(Protocol):
    @property
    def connection_pool(self) -> Any: ...


def channel(name: str, client: _HasPool) -> str:
    """``name`` on ``client``'s database: ``lr:flags:changes@3`` for db 3."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return f"{name}@{int(db or 0)}"


def audit_key(route: str) -> str:
    return f"{AUDIT_PREFIX}{route}"


def replica_key(replica_id: str) -> str:
    """Heartbeat key (ReplicaInfo JSON, with a TTL): the replica is live while it exists."""
    return f"{REPLICA_PREFIX}{replica_id}"


def applied_key(replica_id: str) -> str:
    """Hash route -> the flag version this replica has applied."""
    return f"{REPLICA_PREFIX}{replica_id}:applied"


def resident_key(replica_id: str) -> str:
    """Set of adapter ids resident in this replica's engine."""
    return f"{REPLICA_PREFIX}{replica_id}:resident"


def load_ack_key(request_id: str) -> str:
    return f"{LOAD_ACK_PREFIX}{request_id}"
