"""The local spool: rows the database could not take yet, as JSON lines.

Files live in ``<home>/log/spool/``. A process appends to its own open segment
(``seg-<ns>-<pid>.jsonl.open``); ``seal()`` renames it to ``.jsonl``, and only sealed segments
are replayed, then deleted once the sink has them. Replay is safe to repeat: inserts are
idempotent on ``request_id``. Open segments of dead processes (and of an earlier process
with this pid: a restarted container's pid 1) are sealed on start.

Each line is ``{"r": row, "i": input_row_or_null}``. Rows carry features, never the raw
prompt; the prompt appears only in ``"i"``, which exists only when the input store is on.
Segments are created with mode 0600 (the directory 0700): they may hold raw prompts and
subject ids. ``scrub_subject`` rewrites sealed segments without a subject's input rows (the
rows themselves stay, to be replayed); open segments of live writers are left to the sink's
deletion tombstone, which drops those input rows when they are replayed.

Appends are one ``write(2)`` each; a write cut short (disk full) is cut off the file again,
so a failed append leaves no torn line behind, and raises ``OSError`` for the caller to keep
its rows. ``read_segment`` never raises for bad content: lines that are not rows are counted
(the writer then quarantines the segment, see ``router.log.files``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_router.router.log.files import pid_alive, split_lines, write_private
from lora_router.router.log.rows import Row, input_from_json, row_from_json, to_json

log = logging.getLogger(__name__)

_OPEN = ".jsonl.open"
_SEALED = ".jsonl"
_STARTED_NS = time.time_ns()  # segments of this pid named before this are an earlier process's

Pair = tuple[Row, Row | None]


@dataclass(frozen=True)
class SpoolContents:
    pairs: list[Pair]
    bad: int  # lines that are not rows (corrupt bytes, a torn last line)


def _owner(name: str) -> tuple[int, int]:
    """(ns, pid) from ``seg-<ns>-<pid>.jsonl.open``; (-1, -1) when the name has none."""
    try:
        ns, pid = name[: -len(_OPEN)].split("-")[-2:]
        return int(ns), int(pid)
    except ValueError:
        return -1, -1


def _parse(line: bytes) -> Pair:
    obj: dict[str, Any] = json.loads(line)
    inp = obj.get("i")
    return row_from_json(obj["r"]), None if inp is None else input_from_json(inp)


class Spool:
    """Append rows durably; hand sealed segments back for replay. Thread-safe."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20) -> None:
        self.dir = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._dirty = False
        self.pending = 0  # lines appended by this process and not yet replayed
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._seal_orphans()

    def _seal_orphans(self) -> None:
        for p in self.dir.glob(f"*{_OPEN}"):
            ns, pid = _owner(p.name)
            earlier_me = pid == os.getpid() and ns < _STARTED_NS
            if earlier_me or (pid != os.getpid() and not pid_alive(pid)):
                with contextlib.suppress(FileNotFoundError):
                    p.rename(p.with_name(p.name[: -len(".open")]))
        for p in self.dir.glob("*.scrub"):  # a scrub that died before its rename
            pid_text = p.name.rsplit(".", 2)[-2]
            if pid_text.isdigit() and not pid_alive(int(pid_text)):
                p.unlink(missing_ok=True)

    def append(self, pairs: Sequence[Pair], *, fsync: bool = False) -> None:
        """Append (row, input row) pairs; ``fsync`` forces them to disk before returning.
        ``OSError`` (disk full, I/O error): nothing of this call stays in the file."""
        if not pairs:
            return
        data = "".join(
            json.dumps({"r": to_json(r), "i": None if i is None else to_json(i)}) + "\n"
            for r, i in pairs
        ).encode()
        with self._lock:
            if self._fd is None:
                self._path = self.dir / f"seg-{time.time_ns()}-{os.getpid()}{_OPEN}"
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._size = 0
            self._write_locked(self._fd, data)
            if fsync:
                os.fsync(self._fd)
            else:
                self._dirty = True
            self.pending += len(pairs)
            if self._size >= self._segment_bytes:
                self._seal_locked()

    def _write_locked(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            if len(view) < len(data):
                try:
                    os.ftruncate(fd, self._size)
                except OSError:  # cannot cut it off: close the segment, a torn line ends it
                    self._seal_locked()
            raise
        self._size += len(data)

    def _seal_locked(self) -> None:
        if self._fd is None or self._path is None:
            return
        fd, path = self._fd, self._path
        self._fd = self._path = None
        self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
            path.rename(path.with_name(path.name[: -len(".open")]))

    def sync(self) -> None:
        """fsync what was appended without ``fsync`` (before its journal records go)."""
        with self._lock:
            if self._dirty and self._fd is not None:
                os.fsync(self._fd)
                self._dirty = False

    def seal(self) -> None:
        """Close the open segment so that it can be replayed."""
        with self._lock:
            self._seal_locked()

    def sealed(self) -> list[Path]:
        """Sealed segments, oldest first."""
        return sorted(self.dir.glob(f"*{_SEALED}"))

    def has_work(self) -> bool:
        return self.pending > 0 or bool(self.sealed())

    @staticmethod
    def read_segment(path: Path) -> SpoolContents:
        """The pairs in one segment, and how many lines were not pairs."""
        lines, torn = split_lines(path.read_bytes())
        pairs, bad = [], int(torn)
        for line in lines:
            try:
                pairs.append(_parse(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                bad += 1
        return SpoolContents(pairs, bad)

    @staticmethod
    def read(path: Path) -> Iterator[Pair]:
        """The pairs in one segment (lines that are not pairs are skipped)."""
        yield from Spool.read_segment(path).pairs

    def scrub_subject(self, subject: str) -> int:
        """Drop ``subject``'s input rows from every sealed segment (each rewritten to a
        0600 temporary file, fsynced, then renamed over the old one); returns how many."""
        dropped = 0
        with self._lock:
            for path in self.sealed():
                dropped += _scrub_segment(path, subject)
        return dropped

    def done(self, path: Path, lines: int) -> None:
        """A sealed segment reached the sink (or was quarantined): forget it."""
        path.unlink(missing_ok=True)
        with self._lock:
            self.pending = max(0, self.pending - lines)

    def close(self) -> None:
        """Seal the open segment (what is in it is replayed by the next writer)."""
        self.seal()


def _scrub_line(line: bytes, subject: str) -> bytes | None:
    """The line without ``subject``'s input row; None when it has none (kept as is)."""
    try:
        obj = json.loads(line)
        inp = obj.get("i")
    except (ValueError, AttributeError):
        return None
    if not isinstance(inp, dict) or inp.get("subject") != subject:
        return None
    obj["i"] = None
    return json.dumps(obj).encode()


def _scrub_segment(path: Path, subject: str) -> int:
    data = path.read_bytes()
    lines = data.split(b"\n")
    dropped = 0
    for n, line in enumerate(lines):
        new = _scrub_line(line, subject) if line.strip() else None
        if new is not None:
            lines[n] = new
            dropped += 1
    if dropped:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.scrub")
        write_private(tmp, b"\n".join(lines))
        os.replace(tmp, path)
    return dropped
