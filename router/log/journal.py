"""The journal: every inference record is on local disk before its response is sent.

Contract:

- ``append(rec)`` (the request path, any thread) serialises the record's fields into one JSON
  line and hands it to the kernel with one ``write(2)`` on this process's open segment
  (``O_APPEND``, no Python buffer): no hashing, no fsync. When it returns the line is in the
  OS page cache, so a process crash (SIGKILL, OOM kill) loses nothing. It returns the
  segment that holds the record, or ``memory`` when the line could not be written (disk
  full, I/O error): then the record exists only in the writer's memory until it reaches the
  database or the spool; ``health()`` and ``lora_router_log_unjournaled`` say how many such
  records a crash would lose. The next append tries the disk again.
- A background thread fdatasyncs every segment written since its last pass (and the folder
  after a segment is created) every ``fsync_interval_s``: a machine crash loses at most the
  records appended in the last interval.
- ``settle(tags)``: records reached the database (committed), the spool (fsynced) or the
  dead-letter file. ``rotate()`` closes the open segment once it is ``rotate_s`` old or
  ``segment_bytes`` big; ``collect()`` deletes closed segments whose records are all settled.
  Raw prompts thus stay on disk about ``rotate_s`` plus one batch after they are written.
- Segments are ``j-<ns>-<pid>.jsonl`` (0600, folder 0700); their first line names the
  fields. The owner holds an exclusive ``flock`` on each of its segments until it deletes it:
  a segment another process can lock belongs to a dead process, whatever its pid says
  (``router.log.leftovers`` replays those).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from lora_router.router.log import metrics
from lora_router.router.log.files import error_name, fsync_dir
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.rows import as_utc

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InferenceRecord))
PREFIX, SUFFIX = "j-", ".jsonl"
FORMAT = 1
_KNOWN = frozenset(FIELDS)
_values = operator.attrgetter(*FIELDS)
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def encode(rec: InferenceRecord) -> bytes:
    """One journal line: the record's field values, in ``FIELDS`` order."""
    try:
        return to_json(_values(rec), fallback=str) + b"\n"
    except ValueError:  # e.g. a lone surrogate in the text: the stdlib escapes it
        return (json.dumps(_values(rec), default=str) + "\n").encode()


def header() -> bytes:
    return json.dumps({"journal": FORMAT, "fields": FIELDS}).encode() + b"\n"


def decode(line: bytes, fields: tuple[str, ...] = FIELDS) -> InferenceRecord:
    """A record from a journal line written with ``fields``; ``ValueError`` if it is not one."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(fields):
        raise ValueError("not a journal record")
    kw: dict[str, Any] = {k: v for k, v in zip(fields, values, strict=True) if k in _KNOWN}
    if not isinstance(kw.get("request_id"), str) or not isinstance(kw.get("served_at"), str):
        raise ValueError("journal record without request_id or served_at")
    kw["served_at"] = as_utc(datetime.fromisoformat(kw["served_at"]))
    try:
        return InferenceRecord(**kw)
    except TypeError as exc:  # a required field missing
        raise ValueError(str(exc)) from exc


class Segment:
    """One journal file (or ``memory``, the records no file holds); counts are per process."""

    __slots__ = ("appended", "born", "dirty", "fd", "path", "settled", "size")

    def __init__(self, path: Path | None, fd: int, size: int = 0) -> None:
        self.path, self.fd, self.size = path, fd, size
        self.appended = self.settled = 0
        self.born = time.monotonic()
        self.dirty = True

    @property
    def pending(self) -> int:
        return self.appended - self.settled


class Journal:
    """Append-only, per-process record journal (see the module docstring). Thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync_interval_s: float = 1.0,
        rotate_s: float = 2.0,
        segment_bytes: int = 4 << 20,
    ) -> None:
        self.dir = directory
        self.fsync_interval_s = fsync_interval_s
        self._rotate_s = rotate_s
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._active: Segment | None = None
        self._closed_segments: list[Segment] = []
        self.memory = Segment(None, -1)
        self._dir_dirty = False
        self.write_error: str | None = None
        self.sync_error: str | None = None
        self.last_sync = time.monotonic()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- the request path -------------------------------------------------------------

    def append(self, rec: InferenceRecord) -> Segment:
        """Write one record (see the module docstring); never raises for a disk error."""
        data = encode(rec)
        with self._lock:
            try:
                seg = self._active or self._open_locked()
                n = os.write(seg.fd, data)  # raises only when it wrote nothing
                if n != len(data):
                    self._finish_locked(seg, data, n)
            except OSError as exc:
                self._write_failed_locked(exc)
                self.memory.appended += 1
                return self.memory
            seg.size += len(data)
            seg.appended += 1
            seg.dirty = True
            if self.write_error is not None:
                log.warning("inference log journal writable again (%s)", self.dir)
                self.write_error = None
                metrics.JOURNAL_OK.set(1)
            return seg

    def _finish_locked(self, seg: Segment, data: bytes, written: int) -> None:
        """The rest of a line the kernel took only part of; on failure the part is cut off
        (or, if that fails too, the segment closed: its torn tail is its last line)."""
        view = memoryview(data)[written:]
        try:
            while view:
                view = view[os.write(seg.fd, view) :]
        except OSError:
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                self._close_active_locked()
            raise

    def _open_locked(self) -> Segment:
        name = f"{PREFIX}{time.time_ns()}-{os.getpid()}{SUFFIX}"
        tmp = self.dir / f".{name}.tmp"  # locked before it gets a name others look for
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            head = header()
            os.write(fd, head)
            os.rename(tmp, self.dir / name)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        seg = self._active = Segment(self.dir / name, fd, len(head))
        self._dir_dirty = True
        return seg

    def _write_failed_locked(self, exc: OSError) -> None:
        metrics.DISK_ERRORS.labels("journal", error_name(exc)).inc()
        if self.write_error is None:
            log.error("inference log journal not writable (%s): records are kept in memory "
                      "only until they reach the database or the spool", exc)
            metrics.JOURNAL_OK.set(0)
        self.write_error = f"{error_name(exc)}: {exc.strerror or exc}"

    # --- the writer's side --------------------------------------------------------------

    def settle(self, tags: Iterable[Segment | None]) -> None:
        """These records are safe elsewhere (database, fsynced spool, dead letters)."""
        with self._lock:
            for seg in tags:
                if seg is not None:
                    seg.settled += 1

    @property
    def unjournaled(self) -> int:
        """Records held in memory only: a process crash would lose them."""
        return self.memory.pending

    def rotate(self, *, force: bool = False) -> None:
        """Close the open segment when it is old or big enough (``force``: whatever it is)."""
        with self._lock:
            seg = self._active
            if seg is None or (seg.appended == 0 and not force):
                return
            if force or seg.size >= self._segment_bytes or (
                time.monotonic() - seg.born >= self._rotate_s
            ):
                self._close_active_locked()

    def _close_active_locked(self) -> None:
        if self._active is not None:
            self._closed_segments.append(self._active)
            self._active = None

    def collect(self, sync_first: Callable[[], None] | None = None) -> int:
        """Delete closed segments whose records are all settled; ``sync_first`` (the spool's
        fsync) runs before anything is deleted. Returns how many were deleted."""
        with self._lock:
            done = [s for s in self._closed_segments if s.pending <= 0]
            self._closed_segments = [s for s in self._closed_segments if s.pending > 0]
        if not done:
            return 0
        try:
            if sync_first is not None:
                sync_first()
        except OSError:
            with self._lock:
                self._closed_segments.extend(done)
            raise
        for seg in done:
            assert seg.path is not None
            seg.path.unlink(missing_ok=True)
            os.close(seg.fd)  # releases its lock
        return len(done)

    def segments(self) -> int:
        with self._lock:
            return len(self._closed_segments) + (self._active is not None)

    def paths(self) -> set[Path]:
        """This journal's own segment files."""
        with self._lock:
            segs = [*self._closed_segments, *([self._active] if self._active else [])]
        return {s.path for s in segs if s.path is not None}

    # --- durability -----------------------------------------------------------------------

    def sync(self) -> None:
        """fdatasync what was written since the last pass (and the folder, after a create)."""
        with self._lock:
            segs = [s for s in (*self._closed_segments, self._active) if s and s.dirty]
            fds = []
            try:
                for seg in segs:
                    fds.append(os.dup(seg.fd))  # a segment deleted meanwhile stays valid
                    seg.dirty = False
            except OSError as exc:
                self._sync_failed(exc, segs)
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        try:
            for fd in fds:
                _datasync(fd)
            if dir_dirty:
                fsync_dir(self.dir)
            self.last_sync = time.monotonic()
            self.sync_error = None
        except OSError as exc:
            self._sync_failed(exc, segs)
        finally:
            for fd in fds:
                os.close(fd)

    def _sync_failed(self, exc: OSError, segs: list[Segment]) -> None:
        for seg in segs:
            seg.dirty = True
        self._dir_dirty = True
        metrics.DISK_ERRORS.labels("journal", error_name(exc)).inc()
        log.error("inference log journal fsync failed: %s", exc)
        self.sync_error = f"fsync {error_name(exc)}: {exc.strerror or exc}"

    def start_syncing(self) -> None:
        """Start the fsync thread (every ``fsync_interval_s``)."""
        if self._syncer is None:
            self._stop.clear()
            self._syncer = threading.Thread(
                target=self._sync_loop, name="log-journal-fsync", daemon=True
            )
            self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval_s):
            try:
                self.sync()
            except Exception:  # the thread must outlive any error
                log.exception("inference log journal sync pass failed")

    def close(self, sync_first: Callable[[], None] | None = None) -> None:
        """Stop the fsync thread, delete settled segments, fsync and release the rest (a
        later start replays them)."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=self.fsync_interval_s + 30)
            self._syncer = None
        self.rotate(force=True)
        self.collect(sync_first)
        self.sync()
        with self._lock:
            for seg in self._closed_segments:
                os.close(seg.fd)
            if self._closed_segments:
                log.warning("inference log journal: %s segment(s) left for the next start",
                            len(self._closed_segments))
            self._closed_segments = []

    def health(self) -> dict[str, Any]:
        error = self.write_error or self.sync_error
        return {
            "ok": error is None,
            "error": error,
            "unjournaled": self.unjournaled,
            "segments": self.segments(),
            "fsync_interval_s": self.fsync_interval_s,
            "last_fsync_age_s": round(time.monotonic() - self.last_sync, 3),
        }
