"""``lora-router incident ...`` and ``drift report``: the runbook from the command line, on
the SQLite log with the embedded route store and on PostgreSQL with Redis; errors are one
line, exit 2, no traceback."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard
from lora_router.router.cli.main import app
from lora_router.router.drift.events import Incident
from lora_router.router.flags.redis_store import RedisRouteStore
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.flags.store import RouteStore
from lora_router.router.settings import Settings
from tests.drift import incident_data as data
from tests.drift.conftest import FrozenClock
from tests.drift.test_report import assert_chart


@dataclass
class Cli:
    home: Path
    env: dict[str, str]
    scenario: data.Scenario

    @property
    def incident(self) -> Incident:
        assert self.scenario.incident is not None
        return self.scenario.incident

    def run(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(app, [*args, "--home", str(self.home)], env=self.env)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result


def fresh_route_store(home: Home) -> SqliteRouteStore:
    """The home's embedded route store, empty (the copied demo home may hold one)."""
    path = Settings(home=home.root).flags_db_path
    shutil.rmtree(path.parent, ignore_errors=True)
    return SqliteRouteStore(path)


def build(home: Home, url: str | None, routes: RouteStore, n: int = 1500,
          contain: bool = True) -> data.Scenario:
    """The scenario into the home's log (SQLite) or PostgreSQL, through a route store the
    CLI can read afterwards."""
    clock = FrozenClock(data.now_s())

    async def go() -> data.Scenario:
        await routes.start()
        try:
            async with data.open_db(home.log_dir, clock, url) as db:
                if contain:
                    return await data.build(db.writer, db.store, routes, home, n=n)
                await routes.seed({data.ROUTE: data.route_state()})
                served = data.plan(3, n, clock())
                await data.write(db.writer, served)
                return data.Scenario(served)
        finally:
            await routes.close()

    return asyncio.run(go())


@pytest.fixture(params=["sqlite", "postgres"])
def cli(request: pytest.FixtureRequest, copy_home: Home) -> Iterator[Cli]:
    if request.param == "postgres":
        url, redis = request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")
        routes: RouteStore = RedisRouteStore(redis, resync_s=0.5)
    else:
        url, redis = None, None
        routes = fresh_route_store(copy_home)
    scenario = build(copy_home, url, routes)
    yield Cli(copy_home.root, {"DATABASE_URL": url or "", "REDIS_URL": redis or "",
                               "COLUMNS": "250"}, scenario)


def test_the_runbook_from_the_command_line(cli: Cli, tmp_path: Path) -> None:
    inc = cli.incident
    [listed] = [json.loads(line) for line in cli.run("incident", "list", "--json")
                .output.splitlines()]
    assert (listed["id"], listed["model_id"], listed["status"]) == (inc.id, data.V2,
                                                                    "contained")
    assert f"{data.V2} (canary)" in cli.run("incident", "list").output
    shown = json.loads(cli.run("incident", "show", str(inc.id), "--json").output)
    assert shown["incident"]["id"] == inc.id and len(shown["alerts"]) == len(inc.alert_ids)
    assert "clear_canary" in cli.run("incident", "show", str(inc.id)).output

    # ASSESS: the Spanish slice, its failure cluster, against the rollback target
    text = cli.run("incident", "assess", data.V2).output
    assert "failing cluster: language=es (slice)" in text and "es_misrouted" in text
    assessed = json.loads(cli.run("incident", "assess", data.V2, "--since", "24h",
                                  "--route", data.ROUTE, "--json").output)
    assert assessed["failing"]["key"] == "language=es" and assessed["comparison"] == data.V1
    assert assessed["clusters"][0]["cluster"] == "es_misrouted"

    # REPORT: markdown timeline with the route's audit (read from the route store) + charts
    out = tmp_path / "inc"
    result = cli.run("incident", "report", str(inc.id), "--out", str(out))
    assert result.output.strip().splitlines()[-1] == str(out / "report.md")
    report = (out / "report.md").read_text()
    assert "| guard | rollback |" in report and "**failing cluster: language=es" in report
    for name in ("accuracy.png", "output_drift.png", "input_drift.png", "assess.png"):
        assert_chart(out / name)

    # RECOVER: the flywheel export
    exported = json.loads(cli.run("incident", "export", str(inc.id), "--json").output)
    rows = (Path(exported["failures"])).read_text().splitlines()
    assert {json.loads(r)["request_id"] for r in rows} == cli.scenario.failures(data.V2)
    card = DatasetCard.model_validate(yaml.safe_load(Path(exported["card"]).read_text()))
    assert card.measured["status"] == "draft" and card.measured["incident"] == inc.id
    assert Path(exported["dir"]).parent == cli.home / "flywheel"

    # drift report for the route, with no incident needed
    files = json.loads(cli.run("drift", "report", data.ROUTE, "--out", str(tmp_path / "d"),
                               "--json").output)
    assert Path(files["report"]).is_file() and len(files["charts"]) == 3
    assert "failing cluster: language=es" in Path(files["report"]).read_text()


@pytest.fixture
def small(copy_home: Home) -> Cli:
    """A home with a small SQLite log and no incident."""
    scenario = build(copy_home, None, fresh_route_store(copy_home), n=40, contain=False)
    return Cli(copy_home.root, {"DATABASE_URL": "", "REDIS_URL": "", "COLUMNS": "250"},
               scenario)


@pytest.mark.parametrize(("args", "message"), [
    (["incident", "show", "999"], "error: no incident 999"),
    (["incident", "show", "abc"], "error: invalid incident id 'abc'"),
    (["incident", "report", "999"], "error: no incident 999"),
    (["incident", "export", "999"], "error: no incident 999"),
    (["incident", "assess", "nosuch@v9"], "error: no inference-log rows of 'nosuch@v9'"),
    (["incident", "assess", data.V1, "--since", "soon"], "error: --since 'soon'"),
    (["incident", "assess", data.V1, "--route", "Bad/Route"], "error: invalid route name"),
    (["drift", "report", "other-route"], "error: no route 'other-route'"),
    (["drift", "report", data.ROUTE, "--since", "2020-01-01T00:00", "--until", "2020-01-02"],
     f"error: no inference-log rows on route '{data.ROUTE}'"),
    (["drift", "report", data.ROUTE, "--since", "1h", "--until", "2h"], "error: empty window"),
])
def test_errors_are_one_line(small: Cli, args: list[str], message: str) -> None:
    result = small.run(*args, code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_a_home_without_a_log_is_one_line(copy_home: Home) -> None:
    result = CliRunner().invoke(app, ["incident", "list", "--home", str(copy_home.root)],
                                env={"DATABASE_URL": "", "REDIS_URL": ""})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: no inference log at {copy_home.log_dir / 'inference.db'} yet"]
