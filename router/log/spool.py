"""The local append-only spool: rows the database could not take yet, as JSON lines.

Files live in ``<home>/log/spool/``. A process appends to its own open segment
(``seg-<ns>-<pid>.jsonl.open``); ``seal()`` renames it to ``.jsonl``, and only sealed segments
are replayed, then deleted once the sink has them. Replay is safe to repeat: inserts are
idempotent on ``request_id``. Open segments of dead processes are sealed on start.

Each line is ``{"r": row, "i": input_row_or_null}``. Rows carry features, never the raw
prompt; the prompt appears only in ``"i"``, which exists only when the input store is on.
Segments are created with mode 0600 (the directory 0700): they may hold raw prompts and
subject ids. ``scrub_subject`` rewrites sealed segments without a subject's input rows (the
rows themselves stay, to be replayed); open segments of live writers are left to the sink's
deletion tombstone, which drops those input rows when they are replayed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from router.log.rows import Row, input_from_json, row_from_json, to_json

log = logging.getLogger(__name__)

_OPEN = ".jsonl.open"
_SEALED = ".jsonl"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """Append rows durably; hand sealed segments back for replay. Thread-safe."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20) -> None:
        self.dir = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._path: Path | None = None
        self._size = 0
        self.pending = 0  # lines appended by this process and not yet replayed
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._seal_orphans()

    def _seal_orphans(self) -> None:
        for p in self.dir.glob(f"*{_OPEN}"):
            try:
                pid = int(p.name[: -len(_OPEN)].rsplit("-", 1)[1])
            except (IndexError, ValueError):
                pid = -1
            if pid != os.getpid() and not _pid_alive(pid):
                p.rename(p.with_name(p.name[: -len(".open")]))
        for p in self.dir.glob("*.scrub"):  # a scrub that died before its rename
            pid_text = p.name.rsplit(".", 2)[-2]
            if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                p.unlink(missing_ok=True)

    def append(self, pairs: Sequence[tuple[Row, Row | None]], *, fsync: bool = False) -> None:
        """Append (row, input row) pairs; ``fsync`` forces them to disk before returning."""
        if not pairs:
            return
        data = "".join(
            json.dumps({"r": to_json(r), "i": None if i is None else to_json(i)}) + "\n"
            for r, i in pairs
        )
        with self._lock:
            if self._fh is None:
                self._path = self.dir / f"seg-{time.time_ns()}-{os.getpid()}{_OPEN}"
                self._fh = _open_private(self._path, os.O_APPEND)
                self._size = 0
            self._fh.write(data)
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())
            self._size += len(data)
            self.pending += len(pairs)
            if self._size >= self._segment_bytes:
                self._seal_locked()

    def _seal_locked(self) -> None:
        if self._fh is None or self._path is None:
            return
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._path.rename(self._path.with_name(self._path.name[: -len(".open")]))
        self._fh = self._path = None

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
    def read(path: Path) -> Iterator[tuple[Row, Row | None]]:
        """The pairs in one segment; a torn last line (crash mid-write) is skipped."""
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    obj: dict[str, Any] = json.loads(line)
                    inp = obj.get("i")
                    yield row_from_json(obj["r"]), None if inp is None else input_from_json(inp)
                except (ValueError, KeyError, TypeError):
                    log.warning("spool %s line %s unreadable; skipped", path.name, n)

    def scrub_subject(self, subject: str) -> int:
        """Drop ``subject``'s input rows from every sealed segment (each rewritten to a
        0600 temporary file, fsynced, then renamed over the old one); returns how many."""
        dropped = 0
        with self._lock:
            for path in self.sealed():
                dropped += _scrub_segment(path, subject)
        return dropped

    def done(self, path: Path, lines: int) -> None:
        """A sealed segment reached the sink: delete it."""
        path.unlink(missing_ok=True)
        with self._lock:
            self.pending = max(0, self.pending - lines)

    def close(self) -> None:
        """Seal the open segment (what is in it is replayed by the next writer)."""
        self.seal()


def _open_private(path: Path, flag: int) -> IO[str]:
    """A text file created owner-only (0600) whatever the umask lets through."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o600)
    return os.fdopen(fd, "w" if flag & os.O_TRUNC else "a", encoding="utf-8")


def _scrub_line(line: str, subject: str) -> str | None:
    """The line without ``subject``'s input row; None when it has none (kept as is)."""
    try:
        obj = json.loads(line)
        inp = obj.get("i")
    except (ValueError, AttributeError):
        return None
    if not isinstance(inp, dict) or inp.get("subject") != subject:
        return None
    obj["i"] = None
    return json.dumps(obj) + "\n"


def _scrub_segment(path: Path, subject: str) -> int:
    dropped = 0
    out: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            new = _scrub_line(line, subject)
            dropped += new is not None
            out.append(line if new is None else new)
    if dropped:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.scrub")
        with _open_private(tmp, os.O_TRUNC) as fh:
            fh.writelines(out)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return dropped
