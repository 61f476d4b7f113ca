"""A corrupt spool or journal segment is quarantined and counted; it never blocks the others."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import REGISTRY

from lora_router.router.log.journal import encode, header
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from tests.log.conftest import make_record, make_writer

GARBAGE = b'{"r": {"request_id": "half\xff\xfe\x00 not json\n\x80\x81\x82 more garbage\n'


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _segment(spool_dir: Path, name: str, ids: list[str], garbage: bytes = b"") -> None:
    builder = RowBuilder()
    lines = [
        json.dumps({"r": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                          for k, v in builder.build(make_record(rid))[0].items()},
                    "i": None}).encode() + b"\n"
        for rid in ids
    ]
    half = len(lines) // 2
    (spool_dir / name).write_bytes(b"".join(lines[:half]) + garbage + b"".join(lines[half:]))


async def test_a_corrupt_spool_segment_is_quarantined_and_later_segments_are_replayed(
    sink: LogSink, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "log" / "spool"
    Spool(spool_dir)  # the folder, as a writer makes it
    _segment(spool_dir, "seg-1-1.jsonl", ["a0", "a1"])
    _segment(spool_dir, "seg-2-1.jsonl", ["b0", "b1", "b2", "b3"], garbage=GARBAGE)
    _segment(spool_dir, "seg-3-1.jsonl", ["c0", "c1"])
    corrupt_before = _metric("lora_router_log_corrupt_lines_total")
    writer = make_writer(sink, tmp_path)
    await writer.start()
    try:
        await writer.flush()
        status = writer.status()
    finally:
        await writer.close()
    await sink.open()
    got = {r["request_id"] for r in await sink.tail(100)}
    assert got == {"a0", "a1", "b0", "b1", "b2", "b3", "c0", "c1"}
    assert writer.spool.sealed() == []
    [aside] = list((spool_dir / "quarantine").iterdir())
    assert aside.name == "seg-2-1.jsonl" and GARBAGE in aside.read_bytes()  # bytes untouched
    assert _metric("lora_router_log_corrupt_lines_total") - corrupt_before == 2
    assert status["quarantined"] == 1 and status["degraded"] is True
    assert any("quarantine" in p for p in status["problems"]), status["problems"]
    assert _metric("lora_router_log_quarantined_segments") == 1


def _leftover(journal_dir: Path, name: str, ids: list[str], garbage: bytes = b"") -> None:
    """A journal segment as a process killed mid-way leaves it (nobody holds its lock)."""
    journal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = b"".join(encode(make_record(rid)) for rid in ids)
    (journal_dir / name).write_bytes(header() + garbage + body + b'["torn line')


async def test_dead_processes_journal_segments_are_replayed_and_a_corrupt_one_quarantined(
    sink: LogSink, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "log" / "journal"
    _leftover(journal_dir, "j-1-999999.jsonl", ["j0", "j1", "j2"], garbage=GARBAGE)
    _leftover(journal_dir, "j-2-999999.jsonl", ["k0", "k1"])
    recovered_before = _metric("lora_router_log_journal_recovered_total")
    writer = make_writer(sink, tmp_path)
    await writer.start()
    try:
        await writer.flush()
        status = writer.status()
    finally:
        await writer.close()
    await sink.open()
    assert {r["request_id"] for r in await sink.tail(100)} == {"j0", "j1", "j2", "k0", "k1"}
    row = await sink.get("j0")
    assert row is not None and row["input_features"]["entities"]["order_id"] == 1
    assert _metric("lora_router_log_journal_recovered_total") - recovered_before == 5
    assert sorted(p.name for p in (journal_dir / "quarantine").iterdir()) == [
        "j-1-999999.jsonl", "j-2-999999.jsonl"]  # both had a torn last line
    assert not list(journal_dir.glob("j-*.jsonl"))
    assert status["quarantined"] == 2


async def test_a_live_processes_journal_segment_is_never_taken_over(
    sink: LogSink, tmp_path: Path
) -> None:
    live = make_writer(sink, tmp_path, batch_size=10**6, flush_ms=60_000)
    live.record(make_record("mine"))  # journaled, queued, not written (never started)
    [segment] = list((tmp_path / "log" / "journal").glob("j-*.jsonl"))
    other = make_writer(sink, tmp_path)  # another process on the same home would be alike
    await other.start()
    await other.flush()
    await other.close()
    await sink.open()
    assert await sink.get("mine") is None and segment.exists()
    await live.start()
    await live.close()
    await sink.open()
    assert await sink.get("mine") is not None and not segment.exists()
    assert os.listdir(tmp_path / "log" / "journal") == []
