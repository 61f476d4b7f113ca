"""Prometheus metrics of the inference-log writer (default registry, process-wide)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter(
    "lora_router_log_rows_written_total", "inference_log rows inserted (duplicates excluded)"
)
SPOOLED = Counter(
    "lora_router_log_spooled_total",
    "Records written to the local spool instead of the database",
    ["reason"],  # queue_full | sink_unavailable | sink_error | closed | shutdown
)
REPLAYED = Counter("lora_router_log_replayed_total", "Spooled rows replayed into the database")
REJECTED = Counter(
    "lora_router_log_rejected_total", "Rows the database refused (kept in rejected.jsonl)"
)
QUEUE_DEPTH = Gauge("lora_router_log_queue_depth", "Records waiting in the writer's queue")
SINK_UP = Gauge("lora_router_log_sink_up", "1 when the last write to the log database succeeded")
BATCH_SECONDS = Histogram(
    "lora_router_log_batch_seconds",
    "Time to write one batch to the log database",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
