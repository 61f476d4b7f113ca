"""The writer: enqueue only on the request path, batches, drain, queue-full spill, feedback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from lora_router.ground.errors import RequestNotFound
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from tests.log.conftest import make_record, make_writer


def _spooled(reason: str) -> float:
    return REGISTRY.get_sample_value("lora_router_log_spooled_total", {"reason": reason}) or 0.0


async def test_close_drains_every_queued_record(sink: LogSink, tmp_path: Path) -> None:
    writer = make_writer(sink, tmp_path, batch_size=64, flush_ms=10_000)
    await writer.start()
    recs = [make_record() for _ in range(500)]
    for rec in recs:
        writer.record(rec)
    await writer.close()
    await sink.open()
    assert len(await sink.tail(10_000)) == 500
    assert not writer.spool.has_work()


async def test_a_lone_record_is_written_within_the_flush_interval(
    sink: LogSink, tmp_path: Path
) -> None:
    writer = make_writer(sink, tmp_path, batch_size=1000, flush_ms=30)
    await writer.start()
    try:
        writer.record(make_record("lone"))
        deadline = time.monotonic() + 5
        while await sink.get("lone") is None:
            assert time.monotonic() < deadline, "record not written within the flush bound"
            await asyncio.sleep(0.02)
    finally:
        await writer.close()


async def test_full_queue_spills_to_the_spool_and_loses_nothing(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "log" / "inference.db")
    writer = make_writer(sink, tmp_path, queue_max=10)
    before = _spooled("queue_full")
    for i in range(25):  # not started yet: nothing drains the queue
        writer.record(make_record(f"q{i}"))
    assert _spooled("queue_full") - before == 15
    assert writer.status()["queued"] == 10 and writer.spool.pending == 15
    spooled_text = "".join(p.read_text() for p in (tmp_path / "log" / "spool").iterdir())
    assert "ORD-12345" not in spooled_text  # features only, never the raw prompt
    await writer.start()
    await writer.close()
    await sink.open()
    rows = await sink.tail(100)
    assert sorted(r["request_id"] for r in rows) == sorted(f"q{i}" for i in range(25))
    assert all(r["input_features"]["entities"]["order_id"] == 1 for r in rows)
    await sink.close()


async def test_records_after_close_go_to_the_spool_and_the_next_writer_replays_them(
    tmp_path: Path,
) -> None:
    sink = SqliteSink(tmp_path / "log" / "inference.db")
    writer = make_writer(sink, tmp_path)
    await writer.start()
    await writer.close()
    writer.record(make_record("late"))
    writer.spool.close()
    second = make_writer(SqliteSink(tmp_path / "log" / "inference.db"), tmp_path)
    await second.start()
    await second.flush()
    assert await second.sink.get("late") is not None
    await second.close()


async def test_replaying_a_spool_twice_leaves_the_same_rows(sink: LogSink, tmp_path: Path) -> None:
    builder = RowBuilder()
    pairs = [builder.build(make_record(f"s{i}")) for i in range(40)]
    spool = Spool(tmp_path / "log" / "spool")
    spool.append(pairs)
    spool.seal()
    copy = tmp_path / "copy.jsonl"
    copy.write_text(spool.sealed()[0].read_text())
    for _ in range(2):
        writer = make_writer(sink, tmp_path)
        await writer.start()
        await writer.flush()
        await writer.close()
        await sink.open()
        (tmp_path / "log" / "spool" / "seg-again.jsonl").write_text(copy.read_text())
    assert len(await sink.tail(1000)) == 40


async def test_feedback_finds_a_record_still_in_the_queue(sink: LogSink, tmp_path: Path) -> None:
    writer = make_writer(sink, tmp_path, batch_size=1000, flush_ms=60_000)
    await writer.start()
    try:
        writer.record(make_record("fresh"))
        await writer.feedback("fresh", False, "refund-policy")
        await writer.feedback("fresh", False, "refund-policy")
        row = await sink.get("fresh")
        assert row is not None and row["was_correct"] is False
        assert row["failure_cluster"] == "refund-policy"
        with pytest.raises(RequestNotFound):
            await writer.feedback("never-served", True)
    finally:
        await writer.close()


async def test_features_and_predicted_label_are_computed_off_the_request_path(
    sink: LogSink, tmp_path: Path
) -> None:
    labels = {"support": ("billing", "shipping", "returns")}
    writer = make_writer(sink, tmp_path, labels_for=lambda r: labels.get(r, ()))
    rec = make_record("es1", prompt="Hola, ¿dónde está mi pedido? Llamé al +34 600 123 456",
                      output="  Shipping\n")
    writer.record(rec)
    assert rec.input_features is None  # nothing computed on the request path
    other = make_record("gen1", route="chat", output="shipping soon")
    writer.record(other)
    await writer.start()
    await writer.close()
    await sink.open()
    row = await sink.get("es1")
    assert row is not None
    feats = row["input_features"]
    assert feats["language"] == "es" and feats["entities"]["phone"] == 1
    assert feats["predicted_label"] == "shipping"
    assert feats["chars"] == len(rec.prompt or "") and feats["words"] == 11
    gen = await sink.get("gen1")
    assert gen is not None and "predicted_label" not in gen["input_features"]


async def test_input_store_is_off_by_default_and_deletes_by_subject(
    sink: LogSink, tmp_path: Path
) -> None:
    off = make_writer(sink, tmp_path)
    await off.start()
    off.record(make_record("a1", subject="ana"))
    await off.close()
    await sink.open()
    assert await sink.inputs() == []
    on = make_writer(sink, tmp_path, input_store=True)
    await on.start()
    on.record(make_record("a2", subject="ana"))
    on.record(make_record("b1", subject="bo"))
    assert await on.delete_subject("ana") == 1
    assert [r["request_id"] for r in await sink.inputs()] == ["b1"]
    await on.close()


async def test_a_row_the_database_refuses_is_dead_lettered_not_blocking(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "log" / "inference.db")
    writer = make_writer(sink, tmp_path)
    await writer.start()
    writer.record(make_record("good1"))
    writer.record(make_record("bad", model_id=None))  # type: ignore[arg-type]
    writer.record(make_record("malformed", at="yesterday"))  # type: ignore[arg-type]
    writer.record(make_record("good2"))
    await writer.close()
    await sink.open()
    assert {r["request_id"] for r in await sink.tail(10)} == {"good1", "good2"}
    rejected = (tmp_path / "log" / "rejected.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["request_id"] for line in rejected) == ["bad", "malformed"]
    assert "ORD-12345" not in "".join(rejected)  # the raw prompt is not dead-lettered either
    await sink.close()


def test_record_is_one_write_of_a_line_no_fsync_no_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_writer(SqliteSink(tmp_path / "x.db"), tmp_path, queue_max=200_000,
                         batch_size=10**6)
    writer.record(make_record())  # the segment (and its header line) exists from here on
    recs = [make_record() for _ in range(1000)]
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    def forbidden(*_: object) -> None:
        raise AssertionError("fsync or hashing on the request path")

    monkeypatch.setattr(os, "write", counting_write)
    for name in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(hashlib, "sha256", forbidden)
    for rec in recs:
        writer.record(rec)
    monkeypatch.undo()
    assert len(writes) == len(recs)  # one write(2) per record, nothing else
    journal = b"".join(p.read_bytes() for p in (tmp_path / "log" / "journal").iterdir())
    assert all(rec.request_id.encode() in journal for rec in recs)  # in the page cache
