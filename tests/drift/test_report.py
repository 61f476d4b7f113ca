"""``incident report`` and ``drift report``: markdown timelines and PNG charts over a real log
(SQLite and PostgreSQL) with an incident raised by the real monitor and guard."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lora_router.ground.home import Home
from lora_router.registry.store import RegistryStore
from lora_router.router.drift.queries import DriftRecordNotFound, LogEntry, entries
from lora_router.router.drift.report import drift_report, incident_report
from lora_router.router.drift.runbook import Lineage
from lora_router.router.drift.signals import ALL, compute_signals
from lora_router.router.flags.memory import MemoryRouteStore
from tests.drift import incident_data as data
from tests.drift.conftest import FrozenClock, LogDb

CHARTS = ("accuracy.png", "output_drift.png", "input_drift.png")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(data.now_s())


@dataclass
class World:
    db: LogDb
    routes: MemoryRouteStore
    home: Home
    scenario: data.Scenario


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock,
                copy_home: Home) -> AsyncIterator[World]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    routes = MemoryRouteStore()
    await routes.start()
    async with data.open_db(tmp_path / "log", clock, url) as db:
        scenario = await data.build(db.writer, db.store, routes, copy_home)
        yield World(db, routes, copy_home, scenario)
    await routes.close()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; fails if the file is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def assert_chart(path: Path) -> None:
    assert path.is_file(), path
    width, height = png_size(path)
    assert width >= 600 and height >= 200
    assert path.stat().st_size > 15_000  # lines, bands and labels, not an empty canvas


async def test_incident_report_writes_the_timeline_and_charts(world: World,
                                                              tmp_path: Path) -> None:
    incident = world.scenario.incident
    assert incident is not None
    out = tmp_path / "report"
    files = await incident_report(world.db.store, world.home, incident.id, routes=world.routes,
                                  out=out)
    assert files.markdown == out / "report.md" and files.dir == out
    assert [p.name for p in files.charts] == [*CHARTS, "assess.png"]
    for chart in files.charts:
        assert_chart(chart)
    text = files.markdown.read_text()
    assert text.startswith(f"# Incident {incident.id}: {data.ROUTE} · {data.V2} (canary)")
    for section in ("## Timeline", "## 1. Detect", "## 2. Contain", "## 3. Assess", "## Charts"):
        assert section in text
    timeline = text.split("## Timeline", 1)[1].split("## 1. Detect", 1)[0]
    steps = [line.split("|")[2].strip() for line in timeline.splitlines()
             if line.startswith("| 20")]
    assert steps[0] == "DETECT" and "CONTAIN" in steps and steps[-1] == "ASSESS"
    for alert_id in incident.alert_ids:
        assert f"#{alert_id}" in text
    assert "slice_quality language=es" in text  # the alert, with its evidence
    assert "clear_canary" in text and "| guard | rollback |" in text  # action + route audit
    assert "**failing cluster: language=es" in text and "es_misrouted" in text
    for chart in files.charts:
        assert f"]({chart.name})" in text
    assert files.failing_line is not None and "language=es" in files.failing_line

    # without --out: under the home; without a route store: said in the report, not failed
    files = await incident_report(world.db.store, world.home, incident.id, routes=None)
    assert files.dir == world.home.root / "incidents" / str(incident.id)
    assert "no route store to read" in files.markdown.read_text()
    with pytest.raises(DriftRecordNotFound, match="no incident 9999"):
        await incident_report(world.db.store, world.home, 9999, routes=world.routes)


async def test_drift_report_and_its_signals_for_a_route(world: World,
                                                            tmp_path: Path) -> None:
    now = world.db.clock()
    files = await drift_report(world.db.store, world.home, data.ROUTE,
                               since=now - timedelta(hours=24), until=now, routes=world.routes,
                               out=tmp_path / "drift")
    assert [p.name for p in files.charts] == list(CHARTS)
    for chart in files.charts:
        assert_chart(chart)
    text = files.markdown.read_text()
    assert text.startswith(f"# Drift report: route {data.ROUTE}")
    assert f"`{data.V2}` vs `{data.V1}`: failing cluster: language=es" in text
    assert "language=es" in text and "slice_quality" in text
    with pytest.raises(DriftRecordNotFound, match="no inference-log rows on route 'other'"):
        await drift_report(world.db.store, world.home, "other", since=now - timedelta(hours=1),
                           until=now, routes=None)

    # the signals behind the charts: v2 drops on Spanish only
    since = now - timedelta(hours=3)
    rows = await entries(world.db.store, route=data.ROUTE, since=since, until=now)
    lineage = Lineage.of_home(world.home)
    sig = compute_signals(rows, since=since, until=now, slice_features=["language"],
                          baselines=lineage.baselines, gate_model=data.V1)
    assert sig.models == [data.V1, data.V2]
    assert sig.slices == [ALL, "language=en", "language=es"]
    assert sig.buckets.count <= 24 and sig.buckets.width == timedelta(minutes=10)

    def pooled(model: str, s: str) -> float:
        acc = sig.pooled(model, s).accuracy
        assert acc is not None
        return acc

    assert pooled(data.V2, "language=es") < 0.75 < pooled(data.V1, "language=es")
    assert abs(pooled(data.V2, "language=en") - pooled(data.V1, "language=en")) < 0.05
    es = [s for s in world.scenario.of(data.V2, "es") if s.correct is not None]
    assert sig.pooled(data.V2, "language=es").n == len(es)
    v1_card = RegistryStore(world.home).get_model_card(data.V1)
    assert sig.bars["language=es"] == pytest.approx(v1_card.eval["slice_es"])  # its card's eval
    assert set(sig.input_drift) >= {("language (PSI)", data.V1), ("chars (KS D)", data.V2)}


def test_a_drift_point_needs_enough_rows_reaching_back_a_few_buckets() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def row(i: int, minute: int) -> LogEntry:
        return LogEntry(f"r{i}", "m@v1", "r", "live", "h",
                        {"language": "en", "predicted_label": "billing", "chars": 40}, " billing",
                        start + timedelta(minutes=minute, seconds=i % 50), True, None, "ok")

    # 25 rows a minute in minutes 0-5, none in minute 6, 25 again in minute 7
    rows = [row(i, m) for m in (0, 1, 2, 3, 4, 5, 7) for i in range(m * 25, m * 25 + 25)]
    sig = compute_signals(rows, since=start, until=start + timedelta(minutes=8),
                          slice_features=["language"], baselines=lambda _: None, target=8)
    assert sig.buckets.width == timedelta(minutes=1) and sig.buckets.count == 8
    psi = sig.output_psi[("m@v1", ALL)]
    # MIN_ROWS (30) rows are reached from the second bucket on (reaching back one); an
    # empty bucket is a gap; the last one reaches back over the empty one to minute 5
    assert [p is not None for p in psi] == [False, True, True, True, True, True, False, True]
    assert sig.accuracy[("m@v1", ALL)][6].n == 0
