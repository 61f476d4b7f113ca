"""Local files of the inference log (journal, spool, dead letters): owner-only creation,
durable renames, line splitting that survives corrupt bytes, and quarantine.

A segment with lines that cannot be read is moved, bytes untouched, to a ``quarantine/``
folder beside it (owner-only), so that it never blocks the segments after it and an operator
can look at it; ``/readyz`` and ``lora_router_log_quarantined_segments`` count what is there.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

QUARANTINE = "quarantine"


def write_private(path: Path, data: bytes) -> None:
    """Create (or truncate) ``path`` owner-only with ``data``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the folder's entries (new, renamed, deleted files) survive a machine crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def error_name(exc: OSError) -> str:
    """``ENOSPC``, ``EIO``, ...: a metric label for a disk error."""
    return errno.errorcode.get(exc.errno or 0, "OSError")


def split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Complete lines (without their newline, blank ones left out), and whether the data
    ends in a torn line (bytes after the last newline: a write cut short)."""
    parts = data.split(b"\n")
    torn = parts[-1].strip() != b""
    return [p for p in parts[:-1] if p.strip()], torn


def quarantine(path: Path) -> Path | None:
    """Move a segment into ``quarantine/`` beside it; None when it is gone already (another
    process quarantined or replayed it first)."""
    qdir = path.parent / QUARANTINE
    qdir.mkdir(mode=0o700, exist_ok=True)
    dest = qdir / path.name
    n = 0
    while dest.exists():
        n += 1
        dest = qdir / f"{path.name}.{n}"
    try:
        path.rename(dest)
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
    return dest


def quarantined(directory: Path) -> int:
    """How many files wait in the folder's ``quarantine/``."""
    qdir = directory / QUARANTINE
    try:
        return sum(1 for p in qdir.iterdir() if p.is_file())
    except FileNotFoundError:
        return 0
