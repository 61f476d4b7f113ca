"""One contract for every log sink: SQLite (embedded) and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from tests.log.conftest import T0, make_record, make_row


async def test_migrations_are_recorded_and_reapplying_them_is_a_no_op(sink: LogSink) -> None:
    assert await sink.applied_migrations() == [1, 2, 3, 4]
    await sink.write([make_row(request_id="before")])
    await sink.close()
    await sink.open()  # re-applies nothing, keeps rows
    assert await sink.applied_migrations() == [1, 2, 3, 4]
    assert await sink.get("before") is not None


async def test_a_row_round_trips_with_the_seed_columns(sink: LogSink) -> None:
    rec = make_record("r1", confidence=0.75, flag_version=3, latency_ms=12.5,
                      prompt_tokens=9, completion_tokens=2, base_model_id="tiny@1")
    row, _ = RowBuilder().build(rec)
    assert await sink.write([row]) == 1
    got = await sink.get("r1")
    assert got is not None
    assert got["model_id"] == "support@v1" and got["output"] == "shipping"
    assert got["input_hash"] == rec.input_hash
    assert got["served_at"] == rec.served_at and got["served_at"].tzinfo is not None
    assert got["confidence"] == 0.75 and got["flag_version"] == 3
    assert got["was_correct"] is None and got["failure_cluster"] is None
    assert got["status"] == "ok" and got["arm"] == "live"
    assert got["input_features"]["entities"]["order_id"] == 1
    assert got["input_features"]["entities"]["email"] == 1
    assert rec.prompt is not None and rec.prompt not in str(got)  # the raw prompt is not kept
    assert await sink.get("nope") is None


async def test_writing_the_same_batch_twice_keeps_one_row_each(sink: LogSink) -> None:
    rows = [make_row() for _ in range(50)]
    assert await sink.write(rows) == 50
    assert await sink.write(rows) == 0
    assert await sink.write([*rows[:10], make_row(request_id="new")]) == 1
    assert len(await sink.tail(1000)) == 51


async def test_feedback_updates_the_outcome_idempotently(sink: LogSink) -> None:
    await sink.write([make_row(request_id="f1")])
    assert await sink.set_feedback("f1", False, "wrong-label") is True
    assert await sink.set_feedback("f1", False, "wrong-label") is True
    got = await sink.get("f1")
    assert got is not None and got["was_correct"] is False
    assert got["failure_cluster"] == "wrong-label"
    assert await sink.set_feedback("f1", True, None) is True
    got = await sink.get("f1")
    assert got is not None and got["was_correct"] is True and got["failure_cluster"] is None
    assert await sink.set_feedback("unknown", True, None) is False
    # a replayed insert of a row that already has feedback keeps the feedback
    await sink.write([make_row(request_id="f1")])
    got = await sink.get("f1")
    assert got is not None and got["was_correct"] is True


async def test_stats_per_model_and_arm(sink: LogSink) -> None:
    rows = [
        make_row(model_id="support@v1", arm="live", latency_ms=float(i), prompt_tokens=10,
                 completion_tokens=2, at=T0 + timedelta(seconds=i))
        for i in range(1, 101)
    ]
    rows += [
        make_row(model_id="support@v2", arm="canary", latency_ms=5.0, at=T0,
                 status="error" if i == 0 else "ok")
        for i in range(4)
    ]
    rows.append(make_row(model_id="other@v1", route="other", at=T0))
    rows.append(make_row(model_id="support@v1", at=T0 - timedelta(hours=2)))  # outside window
    await sink.write(rows)
    for i, r in enumerate(rows[:10]):
        await sink.set_feedback(r["request_id"], i < 7, None)

    stats = {(s.model_id, s.arm): s for s in await sink.stats(T0 - timedelta(minutes=1), "support")}
    assert set(stats) == {("support@v1", "live"), ("support@v2", "canary")}
    live = stats[("support@v1", "live")]
    assert live.count == 100 and live.errors == 0
    assert live.latency_p50_ms is not None and abs(live.latency_p50_ms - 50.5) < 1e-6
    assert live.latency_p99_ms is not None and abs(live.latency_p99_ms - 99.01) < 1e-6
    assert live.prompt_tokens == 1000 and live.completion_tokens == 200
    assert live.labelled == 10 and live.correct == 7 and live.accuracy == 0.7
    canary = stats[("support@v2", "canary")]
    assert canary.count == 4 and canary.errors == 1 and canary.accuracy is None
    every_route = await sink.stats(T0 - timedelta(minutes=1))
    assert sum(s.count for s in every_route) == 105


async def test_tail_is_newest_first_and_filters_by_route(sink: LogSink) -> None:
    await sink.write([make_row(request_id=f"t{i}", at=T0 + timedelta(seconds=i),
                               route="a" if i % 2 else "b") for i in range(10)])
    assert [r["request_id"] for r in await sink.tail(3)] == ["t9", "t8", "t7"]
    assert [r["request_id"] for r in await sink.tail(2, route="b")] == ["t8", "t6"]


async def test_export_pages_through_rows_oldest_first(sink: LogSink) -> None:
    await sink.write([
        make_row(request_id=f"e{i:03d}", model_id="m@v1" if i % 3 else "m@v2",
                 at=T0 + timedelta(seconds=i // 2))  # equal timestamps across page borders
        for i in range(25)
    ])
    got = [r async for chunk in sink.export(T0, "m@v1", chunk=4) for r in chunk]
    want = sorted(f"e{i:03d}" for i in range(25) if i % 3)
    assert [r["request_id"] for r in got] == want
    later = [r async for chunk in sink.export(T0 + timedelta(seconds=10), chunk=7) for r in chunk]
    assert [r["request_id"] for r in later] == [f"e{i:03d}" for i in range(20, 25)]


async def test_input_store_rows_are_deleted_by_subject_and_by_age(sink: LogSink) -> None:
    builder = RowBuilder(input_store=True, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    old = [builder.build(make_record(f"old{i}", subject="ana")) for i in range(2)]
    new_builder = RowBuilder(input_store=True)
    new = [new_builder.build(make_record(f"new{i}", subject=s)) for i, s in
           enumerate(["ana", "bo", "bo"])]
    pairs = old + new
    await sink.write([r for r, _ in pairs], [i for _, i in pairs if i is not None])
    assert len(await sink.inputs()) == 5
    assert (await sink.inputs("bo"))[0]["prompt"].startswith("Where is my order")
    assert await sink.purge_inputs(before=datetime(2026, 6, 1, tzinfo=UTC)) == 2
    assert await sink.purge_inputs(subject="ana") == 1
    assert [r["request_id"] for r in await sink.inputs()] == ["new1", "new2"]
    assert len(await sink.tail(10)) == 5  # inference_log rows are untouched
