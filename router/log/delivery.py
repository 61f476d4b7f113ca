"""Where built rows go: the sink, else the spool, else memory; the state ``/readyz`` shows.

Contract:

- ``deliver(built)`` writes to the sink (one transaction; a refused row is retried alone and
  dead-lettered to ``rejected.jsonl``). Sink down or failing: the rows go to the spool,
  fsynced; the sink is retried with exponential backoff (``sink_resting``). Spool not
  writable either (disk full): the rows are ``held`` in memory and retried every step, up
  to ``held_max``; past it the oldest are given up: a record the journal holds stays there
  for the next start (``left_in_journal``), one it does not is lost (``dropped``, counted in
  ``lora_router_log_dropped_total`` and logged). Nothing is dropped silently.
- Every row that reached the sink, the fsynced spool or the dead-letter file is settled in
  the journal (its journal segment can go).
- ``spill(built, reason)`` is the synchronous path (queue full, after close): an appended,
  not fsynced, spool line; the writer fsyncs the spool before deleting journal segments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.log import metrics
from lora_router.router.log.files import error_name
from lora_router.router.log.journal import Journal, Segment
from lora_router.router.log.rows import Row, to_json
from lora_router.router.log.sink import LogSink, RowRejected
from lora_router.router.log.spool import Pair, Spool

log = logging.getLogger(__name__)

Tag = Segment | None  # the journal segment holding the record (None: not journaled by us)
Built = tuple[Pair, Tag]


def pairs_of(built: Sequence[Built]) -> list[Pair]:
    return [p for p, _ in built]


class Delivery:
    """The sink, the spool and the records held in memory between them (module docstring)."""

    def __init__(
        self,
        sink: LogSink,
        spool: Spool,
        journal: Journal,
        *,
        retry_initial_s: float,
        retry_max_s: float,
        rejected_path: Path,
        held_max: int,
    ) -> None:
        self.sink, self.spool, self.journal = sink, spool, journal
        self._retry_initial = self._backoff = retry_initial_s
        self._retry_max = retry_max_s
        self.rejected = rejected_path
        self._held_max = held_max
        self.held: deque[Built] = deque()
        self.healthy = False
        self.sink_error: str | None = None
        self.spool_error: str | None = None
        self.dropped = 0
        self.left_in_journal = 0
        self._retrying = 0
        self._down_until = 0.0

    # --- sink health ------------------------------------------------------------------

    def sink_resting(self) -> bool:
        return not self.healthy and time.monotonic() < self._down_until

    def mark_up(self) -> None:
        if not self.healthy:
            log.info("inference log sink %s is up", self.sink.name)
        self.healthy = True
        self.sink_error = None
        self._backoff = self._retry_initial
        metrics.SINK_UP.set(1)

    def mark_down(self, exc: BaseException) -> None:
        self.healthy = False
        self.sink_error = str(exc) or type(exc).__name__
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)
        metrics.SINK_UP.set(0)

    # --- the sink -----------------------------------------------------------------------

    async def write(self, pairs: Sequence[Pair]) -> int:
        """Write pairs; on a refused row, retry one by one and dead-letter the refused."""
        rows = [r for r, _ in pairs]
        inputs = [i for _, i in pairs if i is not None]
        try:
            with metrics.BATCH_SECONDS.time():
                n = await self.sink.write(rows, inputs)
            self.mark_up()
            return n
        except RowRejected:
            if len(pairs) == 1:
                await asyncio.to_thread(self.dead_letter, pairs[0][0])
                return 0
        total = 0
        for pair in pairs:
            total += await self.write([pair])
        return total

    async def deliver(self, built: list[Built]) -> None:
        """Sink, else spool (fsynced), else held in memory."""
        if not built:
            return
        if self.sink_resting():
            await self.to_spool(built, "sink_unavailable")
            return
        try:
            n = await self.write(pairs_of(built))
        except LogStoreUnavailable as exc:
            log.warning("inference log sink unavailable (%s); spooling %s rows", exc, len(built))
            self.mark_down(exc)
            await self.to_spool(built, "sink_unavailable")
            return
        except Exception as exc:  # unexpected: keep the rows, back off, say so loudly
            log.exception("inference log write failed; spooling %s rows", len(built))
            self.mark_down(exc)
            await self.to_spool(built, "sink_error")
            return
        metrics.ROWS_WRITTEN.inc(n)
        self.journal.settle(t for _, t in built)
        if not self.held:
            self.spool_error = None  # nothing depends on the spool now

    async def durably(self, pairs: list[Pair], reason: str) -> bool:
        """Sink, else fsynced spool; False when neither took them (the caller keeps them)."""
        if not self.sink_resting():
            try:
                metrics.ROWS_WRITTEN.inc(await self.write(pairs))
                return True
            except Exception as exc:  # any failure: the spool takes them
                log.warning("inference log sink failed (%s); spooling %s rows", exc, len(pairs))
                self.mark_down(exc)
        try:
            await asyncio.to_thread(self.spool.append, pairs, fsync=True)
        except OSError as exc:
            self.disk_failed("spool", exc)
            return False
        self.spool_error = None
        metrics.SPOOLED.labels(reason).inc(len(pairs))
        return True

    # --- the spool and memory -------------------------------------------------------------

    async def to_spool(self, built: list[Built], reason: str) -> None:
        try:
            await asyncio.to_thread(self.spool.append, pairs_of(built), fsync=True)
        except OSError as exc:
            self.disk_failed("spool", exc)
            self.hold(built)
            return
        self._spooled(built, reason)

    def spill(self, built: list[Built], reason: str) -> None:
        """Synchronous, not fsynced spool append (see the module docstring)."""
        try:
            self.spool.append(pairs_of(built))
        except OSError as exc:
            self.disk_failed("spool", exc)
            self.hold(built)
            return
        self._spooled(built, reason)

    def _spooled(self, built: list[Built], reason: str) -> None:
        self.spool_error = None
        self.journal.settle(t for _, t in built)
        metrics.SPOOLED.labels(reason).inc(len(built))

    def hold(self, built: list[Built]) -> None:
        self.held.extend(built)
        while len(self.held) > self._held_max:
            self.give_up(self.held.popleft())
        metrics.HELD.set(self.held_count)

    def give_up(self, item: Built) -> None:
        """A held record no longer kept in memory: in the journal, or lost (counted)."""
        _, tag = item
        if tag is not None and tag is not self.journal.memory:
            self.left_in_journal += 1  # its segment stays on disk for the next start
            return
        if tag is not None:
            self.journal.settle([tag])
        self.dropped += 1
        metrics.DROPPED.inc()
        log.error("inference log record %s lost: neither the database, the spool nor the "
                  "journal could take it", item[0][0].get("request_id"))

    @property
    def held_count(self) -> int:
        """Records held in memory, those being retried right now included."""
        return len(self.held) + self._retrying

    async def retry_held(self, n: int) -> None:
        chunk = [self.held.popleft() for _ in range(min(n, len(self.held)))]
        self._retrying = len(chunk)
        try:
            await self.deliver(chunk)
        finally:
            self._retrying = 0
            metrics.HELD.set(len(self.held))

    def dead_letter(self, row: Row) -> None:
        log.error("inference log row %s rejected; kept in %s", row.get("request_id"),
                  self.rejected)
        metrics.REJECTED.inc()
        try:
            fd = os.open(self.rejected, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(to_json(row), default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.disk_failed("rejected", exc)
            self.dropped += 1
            metrics.DROPPED.inc()

    def disk_failed(self, file: str, exc: OSError) -> None:
        metrics.DISK_ERRORS.labels(file, error_name(exc)).inc()
        message = f"{file} not writable: {error_name(exc)}: {exc.strerror or exc}"
        if file == "spool":
            if self.spool_error is None:
                log.error("inference log %s", message)
            self.spool_error = message
        else:
            log.error("inference log %s", message)
