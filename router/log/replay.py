"""Replaying what is on local disk: sealed spool segments, and journal segments of dead
processes (the records a SIGKILL, an OOM kill or a machine crash left unwritten).

Both are idempotent (inserts ignore a ``request_id`` already there). A segment with lines
that cannot be read has its readable rows written, then is quarantined (moved, bytes
untouched, to ``quarantine/`` beside it) and counted: it never blocks the segments after it.
A segment that the sink cannot take now stays for a later pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.log import leftovers, metrics
from lora_router.router.log.delivery import Built, Delivery, Tag, pairs_of
from lora_router.router.log.files import quarantine
from lora_router.router.log.journal import Journal
from lora_router.router.log.leftovers import Leftover, Outcome
from lora_router.router.log.record import InferenceRecord

log = logging.getLogger(__name__)

Build = Callable[[list[tuple[InferenceRecord, Tag]]], list[Built]]


def _corrupt(path: Path, bad: int) -> None:
    metrics.CORRUPT_LINES.inc(bad)
    dest = quarantine(path)
    log.error("log segment %s: %s unreadable line(s); quarantined to %s", path.name, bad, dest)


async def replay_spool(d: Delivery, batch_size: int, *, force: bool = False) -> None:
    """Replay sealed spool segments, oldest first, while the sink takes them (``force``:
    even while the sink rests after a failure)."""
    if (d.sink_resting() and not force) or not d.spool.has_work():
        return
    try:
        d.spool.seal()
    except OSError as exc:
        d.disk_failed("spool", exc)
    for path in d.spool.sealed():
        try:
            contents = await asyncio.to_thread(d.spool.read_segment, path)
        except FileNotFoundError:
            continue  # another writer replayed it
        except OSError as exc:  # unreadable file (I/O error): aside, and on with the next
            log.error("spool segment %s unreadable: %s", path.name, exc)
            _corrupt(path, 0)
            continue
        pairs = contents.pairs
        try:
            for i in range(0, len(pairs), batch_size):
                metrics.REPLAYED.inc(await d.write(pairs[i : i + batch_size]))
        except LogStoreUnavailable as exc:
            log.warning("spool replay stopped, sink unavailable: %s", exc)
            d.mark_down(exc)
            return
        if contents.bad:
            _corrupt(path, contents.bad)
        d.spool.done(path, len(pairs) + contents.bad)
        log.info("replayed spool segment %s (%s rows)", path.name, len(pairs))


async def recover_journal(d: Delivery, journal: Journal, build: Build, batch_size: int) -> None:
    """Write the records of dead processes' journal segments (sink, else spool)."""
    claims = await asyncio.to_thread(leftovers.claim, journal.dir, journal.paths())
    for n, lo in enumerate(claims):
        outcome: Outcome = "keep"
        try:
            outcome = await _recover_one(d, lo, build, batch_size)
        finally:
            leftovers.release(lo, outcome)
        if outcome == "keep":  # neither sink nor spool: the rest waits for a later pass
            for rest in claims[n + 1 :]:
                leftovers.release(rest, "keep")
            return


async def _recover_one(d: Delivery, lo: Leftover, build: Build, batch_size: int) -> Outcome:
    try:
        contents = await asyncio.to_thread(leftovers.read, lo.path)
    except OSError as exc:
        log.error("journal segment %s unreadable: %s", lo.path.name, exc)
        return "quarantine"
    recs = contents.records
    for i in range(0, len(recs), batch_size):
        built = await asyncio.to_thread(build, [(r, None) for r in recs[i : i + batch_size]])
        if not await d.durably(pairs_of(built), "recovered"):
            return "keep"
    if recs:
        metrics.RECOVERED.inc(len(recs))
        log.warning("recovered %s records from journal segment %s of a process that died",
                    len(recs), lo.path.name)
    if contents.bad:
        metrics.CORRUPT_LINES.inc(contents.bad)
        return "quarantine"
    return "done"
