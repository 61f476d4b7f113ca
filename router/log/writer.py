"""The inference-log writer: the request path journals and enqueues, a background task writes
batches.

Contract:

- ``record(rec)`` is synchronous and never blocks on the network: it appends the record to
  the journal (one ``write(2)`` of a pre-serialised line, no fsync; see
  ``router.log.journal``) and to a bounded in-memory queue. Once it returns, a process crash
  loses nothing; a machine crash loses at most the last ``fsync_interval_s`` of records.
  When the queue is full (``queue_max``) the record is written synchronously to the local
  spool instead (``lora_router_log_spooled_total{reason="queue_full"}``). When the journal
  cannot be written (disk full), the request is still served and the record kept in memory;
  ``status()`` (``/readyz``) and the metrics say so. It may be called from any thread.
- A background task takes up to ``batch_size`` records as soon as that many are queued, or
  whatever is queued every ``flush_ms``; computes their input features in a worker thread
  (dropping the raw prompt), and writes them to the sink in one transaction (see
  ``router.log.delivery`` for the sink, spool and memory fallbacks). Journal segments whose
  records are all written are deleted.
- On start, and every few seconds, journal segments of dead processes are replayed, and
  sealed spool segments once the sink is up (``router.log.replay``); both are idempotent on
  ``request_id``. Unreadable segments are quarantined and counted, never blocking.
- ``close()`` drains the queue (the spool takes what the sink cannot) and replays the spool
  once more; records arriving after ``close()`` go straight to the spool.
- ``delete_subject(s)`` covers what is not written yet: it writes what is queued, rewrites
  this home's sealed spool segments without that subject's input rows and leftover journal
  segments without its raw prompts, then records the subject's deletion tombstone in the
  sink, which drops its input rows stored until now whenever they are written (live or
  replayed, by any writer). A sink that is down raises ``LogStoreUnavailable``: the
  deletion is not done until the tombstone is recorded.
- Journal and spool segments and ``rejected.jsonl`` are created with mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lora_router.ground.errors import LogStoreUnavailable, RequestNotFound
from lora_router.router.log import leftovers, metrics
from lora_router.router.log.delivery import Built, Delivery, Tag
from lora_router.router.log.files import quarantined
from lora_router.router.log.journal import Journal
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.replay import recover_journal, replay_spool
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool

log = logging.getLogger(__name__)

_SCAN_EVERY_S = 5.0
_PURGE_EVERY_S = 3600.0


class LogWriter:
    """Journals ``InferenceRecord``s and batches them into a ``LogSink``."""

    def __init__(
        self,
        sink: LogSink,
        spool: Spool,
        builder: RowBuilder,
        *,
        journal: Journal | None = None,
        batch_size: int = 256,
        flush_ms: float = 200.0,
        queue_max: int = 10_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        rejected_path: Path | None = None,
        input_retention_days: int | None = None,
        close_timeout_s: float = 30.0,
    ) -> None:
        self.journal = journal or Journal(spool.dir.parent / "journal")
        self._d = Delivery(
            sink, spool, self.journal,
            retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
            rejected_path=rejected_path or spool.dir.parent / "rejected.jsonl",
            held_max=queue_max,
        )
        self._builder = builder
        self._batch_size = batch_size
        self._flush_s = flush_ms / 1000.0
        self._queue_max = queue_max
        self._retention = input_retention_days
        self._close_timeout = close_timeout_s
        self._queue: deque[tuple[InferenceRecord, Tag]] = deque()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_scan = 0.0
        self._next_purge = 0.0
        self._quarantined = 0
        metrics.JOURNAL_OK.set(1)

    @property
    def sink(self) -> LogSink:
        return self._d.sink

    @property
    def spool(self) -> Spool:
        return self._d.spool

    @property
    def healthy(self) -> bool:
        return self._d.healthy

    # --- the request path -------------------------------------------------------------

    def record(self, rec: InferenceRecord) -> None:
        """Journal and enqueue one record (synchronous; see the module docstring)."""
        if self._closing:
            self._d.spill(self._build([(rec, None)]), "closed")
            return
        tag = self.journal.append(rec)
        q = self._queue
        if len(q) >= self._queue_max:
            self._d.spill(self._build([(rec, tag)]), "queue_full")
            return
        q.append((rec, tag))
        if len(q) >= self._batch_size and self._wake is not None and not self._wake.is_set():
            self._kick()

    def _kick(self) -> None:
        assert self._wake is not None and self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _build(self, items: list[tuple[InferenceRecord, Tag]]) -> list[Built]:
        """Rows for records; a record that cannot be turned into a row is dead-lettered."""
        built = []
        for rec, tag in items:
            try:
                built.append((self._builder.build(rec), tag))
            except Exception:  # a malformed record must not take its batch down
                log.exception("inference record %s could not be built", rec.request_id)
                fields = {k: v for k, v in asdict(rec).items()
                          if k not in ("prompt", "route_key")}
                self._d.dead_letter(fields)
                self.journal.settle([tag])
        return built

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sink (migrations) and start the background task; a sink that is down
        (or a database file that is not one) does not stop the start: records spool until
        it is back, and ``status()`` says why."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        try:
            await self.sink.open()
            self._d.mark_up()
        except LogStoreUnavailable as exc:
            log.warning("inference log sink %s unavailable at start: %s", self.sink.name, exc)
            self._d.mark_down(exc)
        self.journal.start_syncing()
        self._task = asyncio.create_task(self._run(), name="inference-log-writer")

    async def close(self) -> None:
        """Drain the queue into the sink (or the spool), replay the spool, close the sink."""
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout)
            except TimeoutError:
                log.warning("inference log drain exceeded %ss; spooling the rest",
                            self._close_timeout)
                self._task.cancel()
        self._spool_queue("shutdown")
        while self._d.held:  # nowhere to go: in the journal for the next start, or lost
            self._d.give_up(self._d.held.popleft())
        try:
            self.spool.close()
        except OSError as exc:
            self._d.disk_failed("spool", exc)
        try:  # settled segments go (the spool fsynced first); the rest stays for next start
            self.journal.close(self.spool.sync)
        except OSError as exc:
            self._d.disk_failed("spool", exc)
        if self._task is not None:
            await self.sink.close()
            self._task = None

    def _spool_queue(self, reason: str) -> None:
        items = list(self._queue)
        self._queue.clear()
        if items:
            self._d.spill(self._build(items), reason)

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
            except Exception:  # never let the writer die; the journal keeps the records
                log.exception("inference log writer step failed")
                await asyncio.sleep(self._flush_s)
            if self._closing and not self._queue:
                try:
                    async with self._lock:
                        await self._catch_up()
                except Exception:  # what is left stays on disk for the next start
                    log.exception("inference log final replay failed")
                return

    async def _step(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
        metrics.QUEUE_DEPTH.set(len(self._queue))
        if batch:
            await self._d.deliver(await asyncio.to_thread(self._build, batch))
        if self._d.held:
            await self._d.retry_held(self._batch_size)
        await self._collect()
        now = time.monotonic()
        if self.spool.pending or now >= self._next_scan:
            if now >= self._next_scan:
                self._next_scan = now + _SCAN_EVERY_S
                await recover_journal(self._d, self.journal, self._build, self._batch_size)
            await replay_spool(self._d, self._batch_size)
            self._count_quarantined()
        if self._retention and now >= self._next_purge and self.healthy:
            self._next_purge = now + _PURGE_EVERY_S
            await self._purge_expired()
        self._publish()

    async def _catch_up(self) -> None:
        """Everything on local disk into the sink, even while it rests after a failure."""
        if self._d.held:
            await self._d.retry_held(len(self._d.held))
        await recover_journal(self._d, self.journal, self._build, self._batch_size)
        await replay_spool(self._d, self._batch_size, force=True)
        await self._collect()
        self._count_quarantined()
        self._publish()

    async def _collect(self) -> None:
        """Delete journal segments whose records are all written (the spool fsynced first)."""
        self.journal.rotate()
        try:
            await asyncio.to_thread(self.journal.collect, self.spool.sync)
        except OSError as exc:
            self._d.disk_failed("spool", exc)

    async def flush(self) -> None:
        """Write what is queued at the time of the call, then replay the spool (records
        arriving meanwhile are left to the background task, so a flush always ends)."""
        async with self._lock:
            todo = len(self._queue)
            while todo > 0 and self._queue:
                todo -= min(self._batch_size, len(self._queue))
                await self._step()
            await self._catch_up()

    # --- health -----------------------------------------------------------------------

    def _count_quarantined(self) -> None:
        self._quarantined = quarantined(self.spool.dir) + quarantined(self.journal.dir)
        metrics.QUARANTINED.set(self._quarantined)

    def _publish(self) -> None:
        metrics.UNJOURNALED.set(self.journal.unjournaled)
        metrics.HELD.set(self._d.held_count)
        metrics.DEGRADED.set(1 if self._problems() else 0)

    def _problems(self) -> list[str]:
        d, j = self._d, self.journal
        out = []
        if not d.healthy:
            out.append(f"sink {self.sink.name} unavailable ({d.sink_error}): records go to "
                       "the spool")
        if j.write_error or j.sync_error:
            out.append(f"journal {j.write_error or j.sync_error}: {j.unjournaled} records in "
                       "memory only, a crash would lose them")
        if d.spool_error:
            out.append(d.spool_error)
        if d.held_count:
            out.append(f"{d.held_count} records held in memory: neither the database nor the "
                       "spool takes them")
        if d.dropped:
            out.append(f"{d.dropped} records lost (memory bound or exit while held)")
        if d.left_in_journal:
            out.append(f"{d.left_in_journal} records left in the journal for the next start")
        if self._quarantined:
            out.append(f"{self._quarantined} unreadable segment(s) in quarantine/ "
                       f"({self.spool.dir.parent})")
        return out

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and metrics: sink name and health (and its last error), queue
        depth, spool backlog (``spool_pending``: rows this process spooled and has not
        replayed yet; ``spool_segments``: sealed segments in the spool directory, of any
        process), the journal (``unjournaled``: records a crash would lose), records held in
        memory or lost, quarantined segments; ``degraded`` with its ``problems`` in words."""
        problems = self._problems()
        return {
            "sink": self.sink.name,
            "healthy": self.healthy,
            "sink_error": self._d.sink_error,
            "queued": len(self._queue),
            "spool_pending": self.spool.pending,
            "spool_segments": len(self.spool.sealed()),
            "journal": self.journal.health(),
            "held": self._d.held_count,
            "dropped": self._d.dropped,
            "quarantined": self._quarantined,
            "degraded": bool(problems),
            "problems": problems,
        }

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
        async with self._lock:  # the local files first: scrubbed even when the sink is down
            self.journal.rotate(force=True)
            await self._collect()
            self.spool.seal()
            scrubbed = await asyncio.to_thread(self.spool.scrub_subject, subject)
            await asyncio.to_thread(leftovers.scrub_subject, self.journal.dir, subject)
        return scrubbed + await self.sink.purge_inputs(subject=subject)
