"""Nothing recorded is lost: a PostgreSQL outage, a slow database, SIGTERM under load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter
from tests.log.conftest import PgCluster, make_record, make_writer


def _spooled(reason: str) -> float:
    return REGISTRY.get_sample_value("lora_router_log_spooled_total", {"reason": reason}) or 0.0


async def _produce(writer: LogWriter, stop: asyncio.Event, ids: list[str]) -> None:
    while not stop.is_set():
        for _ in range(10):
            rec = make_record()
            ids.append(rec.request_id)
            writer.record(rec)
        await asyncio.sleep(0.005)


async def test_postgres_stopped_under_load_then_started_loses_and_duplicates_nothing(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    writer = make_writer(PostgresSink(pg_cluster.url, timeout_s=2), tmp_path, batch_size=50)
    await writer.start()
    ids: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(_produce(writer, stop, ids))
    spooled_before = _spooled("sink_unavailable")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(pg_cluster.stop)
    during_outage = len(ids)
    await asyncio.sleep(1.0)
    assert len(ids) > during_outage + 100, "the request path must keep going during the outage"
    assert not writer.healthy
    await asyncio.to_thread(pg_cluster.start)
    await asyncio.sleep(1.5)
    stop.set()
    await producer
    await writer.close()

    assert _spooled("sink_unavailable") > spooled_before, "the outage never reached the spool"
    total, distinct = pg_cluster.count()
    assert total == distinct == len(ids) == len(set(ids))
    assert not writer.spool.has_work()


async def test_a_locked_table_times_out_to_the_spool_and_is_replayed(
    pg_url: str, tmp_path: Path
) -> None:
    writer = make_writer(PostgresSink(pg_url, timeout_s=0.5), tmp_path, batch_size=20)
    await writer.start()
    spooled_before = _spooled("sink_unavailable")
    locker = await psycopg.AsyncConnection.connect(pg_url)
    await locker.execute("LOCK TABLE inference_log IN ACCESS EXCLUSIVE MODE")
    recs = [make_record() for _ in range(100)]
    for rec in recs:
        writer.record(rec)
    deadline = time.monotonic() + 10
    while _spooled("sink_unavailable") == spooled_before:
        assert time.monotonic() < deadline, "a blocked write never timed out to the spool"
        await asyncio.sleep(0.05)
    await locker.rollback()  # releases the lock
    await locker.close()
    await writer.close()
    await writer.sink.open()
    assert len(await writer.sink.tail(1000)) == 100
    await writer.sink.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigterm_under_load_drains_every_record(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.log.writer_proc", str(tmp_path), *([url] if url else [])],
        stdout=subprocess.PIPE, env=env,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    produced = int((tmp_path / "produced").read_text())
    assert produced > 500

    async def count() -> int:
        sink = PostgresSink(url) if url else SqliteSink(tmp_path / "log" / "inference.db")
        await sink.open()
        n = len(await sink.tail(10**6))
        await sink.close()
        return n

    assert asyncio.run(count()) == produced
