"""Prometheus metrics of the route flags (default registry; the gateway exposes /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# residency (router/flags/residency.py, router/flags/reconciler.py)
ADAPTERS_RESIDENT = Gauge(
    "lora_router_adapters_resident",
    "Adapters resident in this process's engine.",
)
ADAPTER_LOADS = Counter(
    "lora_router_adapter_loads_total",
    "Adapter loads attempted by the residency keeper, by outcome.",
    ["outcome"],  # ok | refused (registry: integrity, no card, retired) | error
)
ADAPTER_LOAD_SECONDS = Histogram(
    "lora_router_adapter_load_seconds",
    "Time to make an adapter resident: registry verification (hashing its files) plus the "
    "engine's load (successful loads)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
ADAPTER_RESIDENT = Gauge(
    "lora_router_adapter_resident",
    "1 for each adapter resident in this process's engine (registered adapters only)",
    ["model_id"],
)
ADAPTER_UNLOADS = Counter(
    "lora_router_adapter_unloads_total",
    "Adapters unloaded (after draining) because no route references them, by outcome.",
    ["outcome"],  # ok | error
)
RECONCILES = Counter(
    "lora_router_reconciles_total",
    "Residency reconciles run after applied route changes, by outcome.",
    ["outcome"],  # ok | failed (a referenced adapter could not be loaded)
)
REPLICA_REGISTERED = Gauge(
    "lora_router_replica_registered",
    "1 while this gateway replica is registered (heartbeat) in Redis as serving.",
)

# long-lived loops (router/flags/loops.py): flags_listener | heartbeat | load_responder |
# reconciler
LOOP_ALIVE = Gauge(
    "lora_router_loop_alive",
    "1 while this process's long-lived loop is running (0: stopped; /readyz is then 503).",
    ["loop"],
)
LOOP_ERRORS = Counter(
    "lora_router_loop_errors_total",
    "Errors a long-lived loop survived (logged, backed off, continued), by kind.",
    ["loop", "kind"],  # network | redis (e.g. READONLY) | malformed (a bad message) | other
)
ROUTE_FALLBACKS = Counter(
    "lora_router_route_fallbacks_total",
    "Requests served from an earlier route version because the newest one names an adapter "
    "this replica has not loaded yet (it is loading, or failed to load).",
    ["route"],
)
