"""Prometheus metrics of the inference-log writer (default registry, process-wide)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter(
    "lora_router_log_rows_written_total", "inference_log rows inserted (duplicates excluded)"
)
SPOOLED = Counter(
    "lora_router_log_spooled_total",
    "Records written to the local spool instead of the database",
    ["reason"],  # queue_full | sink_unavailable | sink_error | closed | shutdown | recovered
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
# durability: the journal, disk errors, corrupt segments, records at risk
DISK_ERRORS = Counter(
    "lora_router_log_disk_errors_total",
    "Failed writes or fsyncs of the log's local files",
    ["file", "error"],  # file: journal | spool | rejected; error: ENOSPC, EIO, ...
)
JOURNAL_OK = Gauge(
    "lora_router_log_journal_ok", "1 while every record reaches the journal before its response"
)
UNJOURNALED = Gauge(
    "lora_router_log_unjournaled",
    "Records held in memory only (journal not writable): a process crash would lose them",
)
HELD = Gauge(
    "lora_router_log_held", "Records neither the database nor the spool could take, kept in memory"
)
DROPPED = Counter(
    "lora_router_log_dropped_total",
    "Records lost: in memory only (journal not writable) beyond the memory bound, or at exit",
)
CORRUPT_LINES = Counter(
    "lora_router_log_corrupt_lines_total", "Unreadable lines found in spool or journal segments"
)
QUARANTINED = Gauge(
    "lora_router_log_quarantined_segments",
    "Spool/journal segments with unreadable lines, moved to quarantine/ for an operator",
)
RECOVERED = Counter(
    "lora_router_log_journal_recovered_total",
    "Records replayed from journal segments of dead processes",
)
DEGRADED = Gauge("lora_router_log_degraded", "1 while /readyz lists a log problem")
