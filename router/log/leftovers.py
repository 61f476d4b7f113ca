"""Journal segments left by dead processes (SIGKILL, OOM kill, machine crash).

A segment is a leftover when this process can take its ``flock``: its owner holds one until
it deletes the segment, so a pid reused after a restart (a container's pid 1) or a pid in
another namespace never makes a live segment look dead, nor a dead one look live.
``claim`` takes the locks; the caller replays the records (``read``; inserts are idempotent
on ``request_id``, so records the dead process had already written are no harm) and then
``release``s each claim: ``done`` deletes it, ``quarantine`` moves it aside (it had lines
that are not records), ``keep`` leaves it for a later pass. ``scrub_subject`` rewrites
leftovers without a data subject's raw prompt and subject (features and hashes are derived
first, so the ``inference_log`` rows stay whole).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lora_router.router.log.features import compute_features
from lora_router.router.log.files import (
    fsync_dir,
    pid_alive,
    quarantine,
    split_lines,
    write_private,
)
from lora_router.router.log.journal import FIELDS, PREFIX, SUFFIX, decode, encode, header
from lora_router.router.log.record import InferenceRecord, hash_input, hash_route_key

log = logging.getLogger(__name__)

Outcome = Literal["done", "quarantine", "keep"]


@dataclass(frozen=True)
class Leftover:
    path: Path
    fd: int  # holds the segment's flock until released


@dataclass(frozen=True)
class Contents:
    records: list[InferenceRecord]
    bad: int  # lines that are not records (corrupt bytes, a torn last line)


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink == 0:  # its owner deleted it meanwhile
            raise BlockingIOError
    except OSError:
        os.close(fd)
        return None
    return fd


def claim(directory: Path, own: set[Path] | None = None) -> list[Leftover]:
    """Lock the folder's leftover segments (oldest first), skipping ``own``."""
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        if own and path in own:
            continue
        fd = _try_lock(path)
        if fd is not None:
            out.append(Leftover(path, fd))
    for tmp in directory.glob(f".{PREFIX}*.tmp"):  # a segment start cut short: empty
        fd = _try_lock(tmp)
        if fd is not None:
            tmp.unlink(missing_ok=True)
            os.close(fd)
    return out


def release(lo: Leftover, outcome: Outcome) -> None:
    try:
        if outcome == "done":
            lo.path.unlink(missing_ok=True)
        elif outcome == "quarantine":
            dest = quarantine(lo.path)
            log.error("journal segment %s has unreadable lines; quarantined to %s",
                      lo.path.name, dest)
    finally:
        os.close(lo.fd)


def _fields(line: bytes) -> tuple[str, ...] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("journal") != 1:
        return None
    fields = obj.get("fields")
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        return None
    return tuple(fields)


def _parse(data: bytes) -> tuple[tuple[str, ...], list[bytes], bool]:
    lines, torn = split_lines(data)
    fields = _fields(lines[0]) if lines else None
    if fields is None:  # no (readable) header: its line counts as a bad record line
        return FIELDS, lines, torn
    return fields, lines[1:], torn


def read(path: Path) -> Contents:
    """The records of one segment; lines that are not records are counted, not raised."""
    fields, body, torn = _parse(path.read_bytes())
    records, bad = [], int(torn)
    for line in body:
        try:
            records.append(decode(line, fields))
        except ValueError:
            bad += 1
    return Contents(records, bad)


def strip_subject(rec: InferenceRecord) -> None:
    """Derive what the log keeps (features, hashes) and drop the raw prompt and subject."""
    if rec.prompt is not None:
        feats = compute_features(rec.prompt, rec.output or "", prompt_tokens=rec.prompt_tokens)
        rec.input_features = {**feats, **(rec.input_features or {})}
        if rec.input_hash is None:
            rec.input_hash = hash_input(rec.prompt)
    if rec.route_key is not None and rec.route_key_hash is None:
        rec.route_key_hash = hash_route_key(rec.route_key)
    rec.prompt = rec.route_key = rec.subject = None


def _scrub(path: Path, subject: str) -> int:
    data = path.read_bytes()
    fields, body, torn = _parse(data)
    out, changed = [header()], 0
    for line in body:
        try:
            rec = decode(line, fields)
        except ValueError:
            out.append(line + b"\n")  # kept as it is: replay quarantines it
            continue
        if rec.subject == subject:
            strip_subject(rec)
            changed += 1
        out.append(encode(rec))
    if torn:
        out.append(data.rsplit(b"\n", 1)[-1])
    if changed:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.scrub")
        write_private(tmp, b"".join(out))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    return changed


def scrub_subject(directory: Path, subject: str) -> int:
    """Rewrite the leftovers in ``directory`` without ``subject``'s raw prompts (live
    processes delete their own segments once written); returns how many records."""
    total = 0
    for lo in claim(directory):
        try:
            total += _scrub(lo.path, subject)
        finally:
            release(lo, "keep")
    for tmp in directory.glob(f".{PREFIX}*.scrub"):  # a scrub that died before its rename
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
    return total
