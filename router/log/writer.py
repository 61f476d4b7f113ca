"""The inference-log writer: the request path enqueues, a background task writes batches.

Contract:

- ``record(rec)`` is synchronous and never blocks on I/O: it appends to a bounded in-memory
  queue (about a microsecond). When the queue is full (``queue_max``), the record is written
  synchronously to the local spool instead (loses nothing; counted in
  ``lora_router_log_spooled_total{reason="queue_full"}``). It may be called from any thread.
- A background task takes up to ``batch_size`` records as soon as that many are queued, or
  whatever is queued every ``flush_ms``; computes their input features in a worker thread
  (dropping the raw prompt), and writes them to the sink in one transaction.
- Sink down or slow (``LogStoreUnavailable``): the batch goes to the spool (fsynced) and the
  sink is retried with exponential backoff; once a write succeeds, sealed spool segments are
  replayed (idempotent on ``request_id``). Rows the database refuses go to
  ``<home>/log/rejected.jsonl``.
- ``close()`` drains the queue (the spool takes what the sink cannot) and replays the spool
  once more; records arriving after ``close()`` go straight to the spool.
- ``delete_subject(s)`` covers what is not written yet: it writes what is queued, rewrites
  this home's sealed spool segments without that subject's input rows, then records the
  subject's deletion tombstone in the sink, which drops its input rows stored until now
  whenever they are written (live or replayed, by any writer). A sink that is down raises
  ``LogStoreUnavailable``: the deletion is not done until the tombstone is recorded.
- Spool segments and ``rejected.jsonl`` are created with mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from registry.errors import LogStoreUnavailable, RequestNotFound
from router.log import metrics
from router.log.record import InferenceRecord
from router.log.rows import Row, RowBuilder, to_json
from router.log.sink import LogSink, RowRejected
from router.log.spool import Spool

log = logging.getLogger(__name__)

Pair = tuple[Row, Row | None]
_SCAN_EVERY_S = 5.0
_PURGE_EVERY_S = 3600.0


class LogWriter:
    """Batches ``InferenceRecord``s into a ``LogSink``, spooling when it cannot."""

    def __init__(
        self,
        sink: LogSink,
        spool: Spool,
        builder: RowBuilder,
        *,
        batch_size: int = 256,
        flush_ms: float = 200.0,
        queue_max: int = 10_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        rejected_path: Path | None = None,
        input_retention_days: int | None = None,
        close_timeout_s: float = 30.0,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self._builder = builder
        self._batch_size = batch_size
        self._flush_s = flush_ms / 1000.0
        self._queue_max = queue_max
        self._retry_initial = self._backoff = retry_initial_s
        self._retry_max = retry_max_s
        self._rejected = rejected_path or spool.dir.parent / "rejected.jsonl"
        self._retention = input_retention_days
        self._close_timeout = close_timeout_s
        self._queue: deque[InferenceRecord] = deque()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.healthy = False
        self._down_until = 0.0
        self._next_scan = 0.0
        self._next_purge = 0.0

    # --- the request path -------------------------------------------------------------

    def record(self, rec: InferenceRecord) -> None:
        """Enqueue one record (synchronous, non-blocking; see the module docstring)."""
        if self._closing:
            self._spill(rec, "closed")
            return
        q = self._queue
        if len(q) >= self._queue_max:
            self._spill(rec, "queue_full")
            return
        q.append(rec)
        if len(q) >= self._batch_size and self._wake is not None and not self._wake.is_set():
            self._kick()

    def _kick(self) -> None:
        assert self._wake is not None and self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _spill(self, rec: InferenceRecord, reason: str) -> None:
        pairs = self._build([rec])
        self.spool.append(pairs)
        metrics.SPOOLED.labels(reason).inc(len(pairs))

    def _build(self, batch: list[InferenceRecord]) -> list[Pair]:
        """Rows for records; a record that cannot be turned into a row is dead-lettered."""
        pairs = []
        for rec in batch:
            try:
                pairs.append(self._builder.build(rec))
            except Exception:  # a malformed record must not take its batch down
                log.exception("inference record %s could not be built", rec.request_id)
                fields = {k: v for k, v in asdict(rec).items()
                          if k not in ("prompt", "route_key")}
                self._dead_letter(fields)
        return pairs

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sink (migrations) and start the background task; a sink that is down
        does not stop the start (records spool until it is back)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        try:
            await self.sink.open()
            self._mark_up()
        except LogStoreUnavailable as exc:
            log.warning("inference log sink %s unavailable at start: %s", self.sink.name, exc)
            self._mark_down()
        self._task = asyncio.create_task(self._run(), name="inference-log-writer")

    async def close(self) -> None:
        """Drain the queue into the sink (or the spool), replay the spool, close the sink."""
        self._closing = True
        if self._task is None:
            self._spool_queue("shutdown")
            self.spool.close()
            return
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout)
        except TimeoutError:
            log.warning("inference log drain exceeded %ss; spooling the rest", self._close_timeout)
            self._task.cancel()
            self._spool_queue("shutdown")
        self.spool.close()
        await self.sink.close()
        self._task = None

    def _spool_queue(self, reason: str) -> None:
        while self._queue:
            self._spill(self._queue.popleft(), reason)

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and metrics: sink name and health, queue depth, spool backlog
        (``spool_pending``: rows this process spooled and has not replayed yet;
        ``spool_segments``: sealed segments in the spool directory, of any process)."""
        return {
            "sink": self.sink.name,
            "healthy": self.healthy,
            "queued": len(self._queue),
            "spool_pending": self.spool.pending,
            "spool_segments": len(self.spool.sealed()),
        }

    # --- the background task ------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if len(self._queue) < self._batch_size and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_s)
            try:
                async with self._lock:
                    await self._step()
            except Exception:  # never let the writer die; rows are already spooled
                log.exception("inference log writer step failed")
                await asyncio.sleep(self._flush_s)
            if self._closing and not self._queue:
                async with self._lock:
                    await self._replay(force=True)
                return

    async def _step(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        metrics.QUEUE_DEPTH.set(len(self._queue))
        if batch:
            pairs = await asyncio.to_thread(self._build, batch)
            await self._deliver(pairs)
        now = time.monotonic()
        if self.spool.pending or now >= self._next_scan:
            self._next_scan = now + _SCAN_EVERY_S
            await self._replay()
        if self._retention and now >= self._next_purge and self.healthy:
            self._next_purge = now + _PURGE_EVERY_S
            await self._purge_expired()

    async def flush(self) -> None:
        """Write what is queued at the time of the call, then replay the spool (records
        arriving meanwhile are left to the background task, so a flush always ends)."""
        async with self._lock:
            todo = len(self._queue)
            while todo > 0 and self._queue:
                todo -= min(self._batch_size, len(self._queue))
                await self._step()
            await self._replay(force=True)

    # --- delivery ---------------------------------------------------------------------

    def _sink_resting(self) -> bool:
        return not self.healthy and time.monotonic() < self._down_until

    def _mark_up(self) -> None:
        if not self.healthy:
            log.info("inference log sink %s is up", self.sink.name)
        self.healthy = True
        self._backoff = self._retry_initial
        metrics.SINK_UP.set(1)

    def _mark_down(self) -> None:
        self.healthy = False
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)
        metrics.SINK_UP.set(0)

    async def _deliver(self, pairs: list[Pair]) -> None:
        if self._sink_resting():
            await self._to_spool(pairs, "sink_unavailable")
            return
        try:
            n = await self._write(pairs)
            metrics.ROWS_WRITTEN.inc(n)
        except LogStoreUnavailable as exc:
            log.warning("inference log sink unavailable (%s); spooling %s rows", exc, len(pairs))
            self._mark_down()
            await self._to_spool(pairs, "sink_unavailable")
        except Exception:  # unexpected: keep the rows, back off, say so loudly
            log.exception("inference log write failed; spooling %s rows", len(pairs))
            self._mark_down()
            await self._to_spool(pairs, "sink_error")

    async def _write(self, pairs: Sequence[Pair]) -> int:
        """Write pairs; on a refused row, retry one by one and dead-letter the refused."""
        rows = [r for r, _ in pairs]
        inputs = [i for _, i in pairs if i is not None]
        try:
            with metrics.BATCH_SECONDS.time():
                n = await self.sink.write(rows, inputs)
            self._mark_up()
            return n
        except RowRejected:
            if len(pairs) == 1:
                await asyncio.to_thread(self._dead_letter, pairs[0][0])
                return 0
        total = 0
        for pair in pairs:
            total += await self._write([pair])
        return total

    def _dead_letter(self, row: Row) -> None:
        log.error("inference log row %s rejected; kept in %s", row.get("request_id"),
                  self._rejected)
        metrics.REJECTED.inc()
        fd = os.open(self._rejected, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(to_json(row), default=str) + "\n")

    async def _to_spool(self, pairs: list[Pair], reason: str) -> None:
        await asyncio.to_thread(self.spool.append, pairs, fsync=True)
        metrics.SPOOLED.labels(reason).inc(len(pairs))

    async def _replay(self, *, force: bool = False) -> None:
        """Replay sealed spool segments while the sink takes them (``force``: even while the
        sink rests after a failure)."""
        if (self._sink_resting() and not force) or not self.spool.has_work():
            return
        self.spool.seal()
        for path in self.spool.sealed():
            pairs = await asyncio.to_thread(self._read_segment, path)
            try:
                for i in range(0, len(pairs), self._batch_size):
                    chunk = pairs[i : i + self._batch_size]
                    metrics.REPLAYED.inc(await self._write(chunk))
            except LogStoreUnavailable as exc:
                log.warning("spool replay stopped, sink unavailable: %s", exc)
                self._mark_down()
                return
            self.spool.done(path, len(pairs))
            log.info("replayed spool segment %s (%s rows)", path.name, len(pairs))

    def _read_segment(self, path: Path) -> list[Pair]:
        return list(self.spool.read(path))

    async def _purge_expired(self) -> None:
        assert self._retention is not None
        before = datetime.now(UTC) - timedelta(days=self._retention)
        try:
            n = await self.sink.purge_inputs(before=before)
            if n:
                log.info("input store: purged %s rows older than %s days", n, self._retention)
        except LogStoreUnavailable as exc:
            log.warning("input store purge failed: %s", exc)

    # --- feedback and queries -----------------------------------------------------------

    async def feedback(
        self, request_id: str, was_correct: bool, failure_cluster: str | None = None
    ) -> None:
        """Set a request's outcome (idempotent). A record still queued or spooled is written
        first; ``RequestNotFound`` when no record has that id."""
        if await self.sink.set_feedback(request_id, was_correct, failure_cluster):
            return
        await self.flush()
        if not await self.sink.set_feedback(request_id, was_correct, failure_cluster):
            raise RequestNotFound(f"no inference-log record with request id {request_id!r}")

    async def delete_subject(self, subject: str) -> int:
        """Delete a data subject's input-store rows, written or spooled (see the module
        docstring); returns how many were deleted from the sink and the spool."""
        await self.flush()
        async with self._lock:  # the spool first: scrubbed even when the sink is down
            self.spool.seal()
            scrubbed = await asyncio.to_thread(self.spool.scrub_subject, subject)
        return scrubbed + await self.sink.purge_inputs(subject=subject)
