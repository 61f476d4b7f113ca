"""Delete-by-subject covers inputs not yet written (queued or spooled); private file modes."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from lora_router.router.cli.main import app
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.rows import Row, RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from tests.log.conftest import PgCluster, make_record, make_writer

SECRET = "my card 4111 is blocked, I am CUST-777"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _spool_text(home: Path) -> str:
    return "".join(p.read_text() for p in sorted((home / "log" / "spool").iterdir()))


async def test_a_deleted_subjects_older_inputs_are_never_written_newer_ones_are(
    sink: LogSink,
) -> None:
    def built(
        rid: str, subject: str | None, at: datetime, built_at: datetime | None = None
    ) -> tuple[Row, Row | None]:
        return RowBuilder(input_store=True, now=lambda: built_at or at).build(
            make_record(rid, subject=subject, at=at))

    before = datetime.now(UTC) - timedelta(seconds=5)
    pairs = [built("k1", "CUST-777", before), built("k2", "CUST-888", before),
             built("k3", None, before)]
    assert await sink.purge_inputs(subject="CUST-777") == 0  # nothing written yet
    after = datetime.now(UTC) + timedelta(seconds=5)
    pairs.append(built("k4", "CUST-777", after))
    # served before the deletion, still queued then: built (and stored) after it, dropped
    pairs.append(built("k5", "CUST-777", before, built_at=after))
    # a replay of what was spooled before the deletion, and a request made after it
    written = await sink.write([r for r, _ in pairs], [i for _, i in pairs if i is not None])
    assert written == 5  # inference_log rows are all kept
    assert [r["request_id"] for r in await sink.inputs()] == ["k2", "k3", "k4"]
    # a second deletion of the same subject moves its tombstone forward
    assert await sink.purge_inputs(subject="CUST-777") == 1
    assert [r["request_id"] for r in await sink.inputs()] == ["k2", "k3"]


def test_spool_segments_are_private_and_scrubbed_of_a_subjects_inputs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "log" / "spool")
    builder = RowBuilder(input_store=True)
    spool.append([builder.build(make_record(f"p{i}", subject="CUST-777", prompt=SECRET))
                  for i in range(3)])
    spool.append([builder.build(make_record("q1", subject="CUST-888"))])
    [open_seg] = list(spool.dir.iterdir())
    assert _mode(open_seg) == 0o600 and _mode(spool.dir) == 0o700
    spool.seal()
    assert spool.scrub_subject("CUST-777") == 3
    [seg] = spool.sealed()
    assert _mode(seg) == 0o600
    assert "CUST-777" not in seg.read_text() and "4111" not in seg.read_text()
    pairs = list(Spool.read(seg))
    assert [r["request_id"] for r, _ in pairs] == ["p0", "p1", "p2", "q1"]  # rows are kept
    assert [i["subject"] for _, i in pairs if i is not None] == ["CUST-888"]
    assert spool.scrub_subject("CUST-777") == 0


async def test_the_sqlite_file_and_the_dead_letter_file_are_private(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "log" / "inference.db")
    writer = make_writer(sink, tmp_path, input_store=True)
    await writer.start()
    writer.record(make_record("bad", model_id=None, subject="CUST-777"))  # type: ignore[arg-type]
    await writer.close()
    assert _mode(sink.path) == 0o600
    assert _mode(tmp_path / "log" / "rejected.jsonl") == 0o600


def _cli(home: Path, env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--home", str(home)], env=env)
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_subject_deleted_while_its_inputs_are_spooled_never_comes_back(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {"DATABASE_URL": pg_cluster.url, "LORA_ROUTER_INPUT_STORE_ENABLED": "1",
           "COLUMNS": "200"}
    stopped = make_writer(PostgresSink(pg_cluster.url, timeout_s=2), home, input_store=True)
    await stopped.start()
    await asyncio.to_thread(pg_cluster.stop)
    # a gateway that served 5 + 1 requests during the outage, then stopped (sealed segment)
    for i in range(5):
        stopped.record(make_record(f"s{i}", subject="CUST-777", prompt=SECRET))
    stopped.record(make_record("s5", subject="CUST-888"))
    await stopped.close()
    # a gateway still running whose queue overflowed into its open segment
    running = make_writer(PostgresSink(pg_cluster.url, timeout_s=2), home, input_store=True,
                          queue_max=0)
    for i in range(3):
        running.record(make_record(f"o{i}", subject="CUST-777", prompt=SECRET))
    assert _spool_text(home).count("4111") == 8
    await asyncio.to_thread(pg_cluster.start)

    out = await asyncio.to_thread(_cli, home, env, "log", "delete-subject", "CUST-777")
    assert "deleted 0 stored inputs" in out and "and 5 not yet written" in out
    assert _spool_text(home).count("4111") == 3  # only the live writer's open segment
    await asyncio.to_thread(_cli, home, env, "log", "replay")
    await running.start()
    await running.flush()  # replays the open segment: the tombstone drops its inputs
    await running.close()
    later = make_writer(PostgresSink(pg_cluster.url), home, input_store=True)
    await later.start()
    # served after the deletion: kept
    later.record(make_record("n1", subject="CUST-777", at=datetime.now(UTC)))
    await later.close()

    sink = PostgresSink(pg_cluster.url)
    try:
        assert {r["request_id"] for r in await sink.tail(100)} == {
            *(f"s{i}" for i in range(6)), "o0", "o1", "o2", "n1"}
        assert [r["request_id"] for r in await sink.inputs("CUST-777")] == ["n1"]
        assert [r["request_id"] for r in await sink.inputs("CUST-888")] == ["s5"]
    finally:
        await sink.close()
    assert not list((home / "log" / "spool").glob("*.jsonl*"))
    assert not list((home / "log" / "journal").iterdir())  # raw prompts: none left on disk
