"""The dashboard's read-only queries, on the SQLite log and on the PostgreSQL log: rows
written by the real log writer, alerts and incidents written by the real drift store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from lora_router.ground.errors import LogStoreUnavailable
from lora_router.router.dashboard.histogram import bin_of
from lora_router.router.dashboard.queries import open_alerts, open_incidents, traffic_counts
from lora_router.router.dashboard.reader import LogReader, PostgresReader, SqliteReader
from lora_router.router.drift.events import AlertIn
from tests.drift.conftest import T0, FrozenClock, LogDb, open_logdb, record

V1, V2 = "support@v1", "support@v2"


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogDb]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    async with open_logdb(request.param, tmp_path, FrozenClock(), url) as logdb:
        yield logdb


@pytest.fixture
async def reader(db: LogDb) -> AsyncIterator[LogReader]:
    r: LogReader = PostgresReader(db.url) if db.url is not None else SqliteReader(db.path)
    yield r
    await r.close()


def quality_alert(model_id: str, detector: str) -> AlertIn:
    return AlertIn(
        created_at=T0, route="support", model_id=model_id, arm="canary",
        signal="slice_quality", detector=detector, method="bernoulli-cusum",
        severity="critical", window_start=T0 - timedelta(minutes=5), window_end=T0, n=40,
        estimate=0.1, bound=0.2, statistic=6.0, threshold=4.0, baseline=0.9,
        evidence={"labels": 40}, route_version=2, guard_status="off",
    )


async def test_counts_per_adapter_slice_bucket_and_latency_bin(
        db: LogDb, reader: LogReader) -> None:
    ids = [record(db.writer, lang="es" if i % 2 else "en", model_id=V2 if i == 5 else V1,
                  served_at=T0 + timedelta(seconds=i), latency_ms=10.0 + 7 * i)
           for i in range(6)]
    record(db.writer, served_at=T0 - timedelta(hours=2))  # before the window
    await db.writer.flush()
    await db.writer.feedback(ids[0], True)
    await db.writer.feedback(ids[1], False)
    got = await traffic_counts(reader, since=T0 - timedelta(seconds=60), bucket_s=30,
                               features=["language", "entities.order_id"])
    assert sum(c.requests for c in got) == 6
    assert {c.bucket for c in got} == {2}  # 60 to 65 s after the window's start
    assert (sum(c.labelled for c in got), sum(c.correct for c in got)) == (2, 1)
    by_group: dict[tuple[str, tuple[str, ...]], int] = {}
    for c in got:
        by_group[(c.model_id, c.slices)] = by_group.get((c.model_id, c.slices), 0) + c.requests
    assert by_group == {
        (V1, ("language=en", "entities.order_id=0")): 3,
        (V1, ("language=es", "entities.order_id=0")): 2,
        (V2, ("language=es", "entities.order_id=0")): 1,
    }
    # the database bins latencies exactly as the histogram module says
    assert sorted(c.latency_bin for c in got if c.model_id == V1) == sorted(
        bin_of(10.0 + 7 * i) for i in range(5))
    assert {c.arm for c in got} == {"live"} and {c.route for c in got} == {"support"}


async def test_open_alerts_and_incidents(db: LogDb, reader: LogReader) -> None:
    assert await open_alerts(reader, since=T0 - timedelta(days=1), limit=10) == []
    cp = await db.store.load_checkpoint()
    a1, a2 = await db.store.commit_tick(
        cp, cp.version, [quality_alert(V2, "language=es"), quality_alert(V1, "overall")],
        holder="test", outbox=False,
    )
    await db.store.record_incident(
        route="support", model_id=V2, arm="canary", alert_ids=[a1.id],
        action={"action": "rollback", "detail": "canary cleared"}, status="contained",
        guard_status="acted", summary="v2 fails on Spanish", outbox=False,
    )
    await db.store.record_incident(
        route="support", model_id=V1, arm="live", alert_ids=[a2.id], action={"detail": "ok"},
        status="resolved", guard_status="acted", summary="false alarm", outbox=False,
    )
    alerts = await open_alerts(reader, since=T0 - timedelta(days=1), limit=10)
    assert [(a.model_id, a.detector, a.incident_id is not None) for a in alerts] == [
        (V2, "language=es", True)]  # the alert of the resolved incident is not open
    assert alerts[0].evidence == {"labels": 40} and alerts[0].window_end == T0
    incidents = await open_incidents(reader, limit=10)
    assert [(i.model_id, i.status, i.alert_ids) for i in incidents] == [
        (V2, "contained", [a1.id])]
    assert await open_alerts(reader, since=T0 + timedelta(seconds=1), limit=10) == []


async def test_the_reader_never_writes(db: LogDb, reader: LogReader) -> None:
    record(db.writer, served_at=T0)
    await db.writer.flush()
    with pytest.raises(LogStoreUnavailable):
        await reader.fetch("DELETE FROM inference_log")
    got = await traffic_counts(reader, since=T0 - timedelta(minutes=1), bucket_s=30,
                               features=[])
    assert [c.requests for c in got] == [1]  # still there; and the reader goes on after it


async def test_no_log_yet_reads_as_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log" / "inference.db"
    reader = SqliteReader(path)
    try:
        got = await traffic_counts(reader, since=T0, bucket_s=30, features=["language"])
        assert got == [] and await open_incidents(reader, limit=5) == []
        assert not path.exists()
        with pytest.raises(LogStoreUnavailable):
            await reader.fetch("SELECT 1")
        assert not path.exists()
    finally:
        await reader.close()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "inference.db"
    path.write_bytes(b"not a database" * 100)
    reader = SqliteReader(path)
    try:
        with pytest.raises(LogStoreUnavailable):
            await traffic_counts(reader, since=T0, bucket_s=30, features=[])
    finally:
        await reader.close()
