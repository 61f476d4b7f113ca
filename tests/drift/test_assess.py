"""``incident assess``'s analysis over a real log (SQLite and PostgreSQL) written by the real
writer, with an incident raised by the real monitor and guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lora_router.ground.home import Home
from lora_router.router.drift.assess import assess
from lora_router.router.drift.queries import DriftRecordNotFound, LogEntry
from lora_router.router.drift.runbook import Lineage, assess_model, main_route, route_view
from lora_router.router.flags.memory import MemoryRouteStore
from tests.drift import incident_data as data
from tests.drift.conftest import FrozenClock, LogDb


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


async def test_assess_names_the_spanish_slice_of_v2_and_nothing_of_v1(world: World) -> None:
    s, now = world.scenario, world.db.clock()
    view = await route_view(world.routes, data.ROUTE)
    a = await assess_model(world.db.store, data.V2, since=now - timedelta(hours=24), until=now,
                           view=view, lineage=Lineage.of_home(world.home))
    # the canary is gone from the route: compared with the rollback target its card names
    assert (a.comparison, a.comparison_why) == (data.V1, "the rollback target in its model card")
    assert a.requests == len(s.of(data.V2))
    g = a.failing
    assert g is not None and g.key == "language=es" and g.protected and g.significant
    es = [x for x in s.of(data.V2, "es") if x.correct is not None]
    assert (g.model.n, g.model.correct) == (len(es), sum(bool(x.correct) for x in es))
    ref = [x for x in s.of(data.V1, "es") if x.correct is not None]
    assert g.reference is not None and g.reference.n == len(ref)
    assert g.top_cluster == "es_misrouted" and g.top_cluster_share > 0.6
    en = next(x for x in a.slices if x.key == "language=en")
    assert not en.significant
    assert a.clusters[0].cluster == "es_misrouted" and a.clusters[0].top_slice == "language=es"
    assert sum(c.failures for c in a.clusters) == len(s.failures(data.V2))
    line = a.failing_line()
    assert line.startswith("failing cluster: language=es") and "es_misrouted" in line
    assert a.to_json()["failing"]["key"] == "language=es"
    # and the adapter that holds up has none (compared with the route's other adapter)
    good = await assess_model(world.db.store, data.V1, since=now - timedelta(hours=24),
                              until=now, view=view, lineage=Lineage.of_home(world.home))
    assert good.comparison == data.V2 and good.failing is None
    assert good.failing_line().startswith("failing cluster: none found")


async def test_an_adapter_with_no_rows_in_the_window_is_an_error(tmp_path: Path,
                                                                 clock: FrozenClock) -> None:
    async with data.open_db(tmp_path / "log", clock) as db:
        served = data.plan(1, 20, clock())
        await data.write(db.writer, served)
        now = clock()
        with pytest.raises(DriftRecordNotFound, match="no inference-log rows of 'nosuch@v1'"):
            await main_route(db.store, "nosuch@v1", since=now - timedelta(hours=24), until=now)
        with pytest.raises(DriftRecordNotFound):  # rows exist, but not in this window
            await main_route(db.store, data.V1, since=now - timedelta(days=9),
                             until=now - timedelta(days=8))
        assert await main_route(db.store, data.V1, since=now - timedelta(hours=24),
                                until=now) == data.ROUTE


T = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(i: int, lang: str, ok: bool, chars: int) -> LogEntry:
    return LogEntry(f"r{i}", "m@v2", "r", "live", "h", {"language": lang, "chars": chars},
                    "x", T, ok, None if ok else "c", "ok")


def test_without_comparison_traffic_a_slice_is_held_to_its_gate_bar() -> None:
    rows = [_entry(i, "es", i % 2 == 0, 80) for i in range(40)]
    rows += [_entry(100 + i, "en", True, 40) for i in range(40)]
    a = assess(rows, [], model_id="m@v2", route="r", comparison=None, comparison_why="none",
               since=T, until=T, gates={"overall": 0.95, "slice_es": 0.9})
    assert a.failing is not None and a.failing.key == "language=es"
    assert a.failing.bar == 0.9 and a.failing.model.accuracy == 0.5
    assert a.failing.reference is None and a.failing.top_cluster == "c"
    bins = {g.key: g.model.n for g in a.features if g.dimension == "feature"}
    assert bins == {"chars <= 40": 40, "chars > 40": 40}  # bins over two distinct lengths
