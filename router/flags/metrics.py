"""Prometheus metrics of the route flags (default registry; the gateway exposes /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FLAGS_CONNECTED = Gauge(
    "lora_router_flags_connected",
    "1 while this process's route store is connected to Redis (memory store: always 1).",
)
FLAGS_LAST_SYNC = Gauge(
    "lora_router_flags_last_sync_timestamp_seconds",
    "Unix time of the last full resync of the route snapshot from Redis "
    "(staleness = time() - this).",
)
FLAGS_RECONNECTS = Counter(
    "lora_router_flags_reconnects_total",
    "Times the route-flag listener lost Redis and reconnected.",
)
FLAGS_APPLIED = Counter(
    "lora_router_flags_applied_total",
    "Route-state changes applied to this process's snapshot.",
    ["source"],  # message | resync | local
)
FLAGS_WRITES = Counter(
    "lora_router_flags_writes_total",
    "Route-state writes attempted by this process, by outcome.",
    ["outcome"],  # ok | conflict | unavailable
)
