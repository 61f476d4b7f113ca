"""``lora-router demo run``: the demo scenario end to end, as a user runs it.

A real gateway in the process, over real HTTP, on a copy of the demo home (embedded route
store, SQLite log), v2 as a 20 % canary with the guard protecting ``language=es``; held-out
tickets replayed through the openai client with their ground truth posted as feedback. The
guard must drop v2's canary (within the run's bound of requests), never touch v1, open an
incident, and the runbook (``incident assess``, ``incident report``) must name the Spanish
slice as the failing cluster. The demo home itself is left exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from lora_router.ground.home import Home
from lora_router.router.cli.main import app
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.sqlite_store import SqliteDriftStore
from lora_router.router.flags.sqlite_store import SqliteRouteStore
from lora_router.router.flags.store import AuditEntry

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
BOUND = 1500  # requests: with today's v2 (~0.02 on Spanish) ~250 are needed, with a
# v2 at 0.55-0.75 on Spanish ~400-700
ENV = {"REDIS_URL": "", "DATABASE_URL": "", "COLUMNS": "200", "LORA_ROUTER_ADMIN_TOKEN": "",
       "LORA_ROUTER_API_KEY": ""}


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env=ENV)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def recorded(home: Path) -> tuple[list[AuditEntry], list[Incident], list[Alert]]:
    async def read() -> tuple[list[AuditEntry], list[Incident], list[Alert]]:
        routes = SqliteRouteStore(home / "flags" / "routes.db")
        store = SqliteDriftStore(home / "log" / "inference.db")
        await routes.start()
        await store.open()
        try:
            incidents = await store.incidents()
            alerts = [a for inc in incidents for i in inc.alert_ids
                      if (a := await store.alert(i)) is not None]
            return await routes.audit(ROUTE, 1000), incidents, alerts
        finally:
            await store.close()
            await routes.close()

    return asyncio.run(read())


def test_the_guard_drops_v2s_canary_and_the_runbook_names_the_spanish_slice(
        copy_home: Home, tmp_path: Path) -> None:
    before = snapshot(copy_home.root)
    run = tmp_path / "run"
    out = invoke("demo", "run", "--home", str(copy_home.root), "--out", str(run),
                 "--seed", "7", "--requests", str(BOUND)).stdout
    assert snapshot(copy_home.root) == before  # the user's home is untouched
    home = run / "home"

    seen = re.search(r"canary dropped: seen after (\d+) requests", out)
    assert seen is not None and int(seen.group(1)) <= BOUND, out
    assert "after the drop: 20 more requests, all answered by support-triage@v1" in out

    audit, incidents, alerts = recorded(home)
    assert all(e.after.live == V1 for e in audit)  # v1 stayed live throughout
    [guard] = [e for e in audit if e.by == "guard"]  # one guard action: on v2's canary
    assert guard.before is not None and guard.before.canary is not None
    assert guard.before.canary.adapter == V2 and guard.after.canary is None
    assert guard.before.live == guard.after.live == V1
    assert audit[-1] == guard  # nothing after it
    [incident] = incidents
    assert (incident.model_id, incident.arm, incident.status) == (V2, "canary", "contained")
    assert alerts and all(a.model_id == V2 and a.arm == "canary" for a in alerts)

    report = Path(out.strip().splitlines()[-1])
    assert report == home / "incidents" / str(incident.id) / "report.md" and report.is_file()
    assert "language=es" in report.read_text()

    assessed = json.loads(invoke("incident", "assess", V2, "--home", str(home),
                                 "--json").stdout)
    assert assessed["failing"]["key"] == "language=es", assessed["failing_line"]
    assert assessed["failing"]["dimension"] == "slice"
    assert assessed["comparison"] == V1
    files = json.loads(invoke("incident", "report", str(incident.id), "--home", str(home),
                              "--json").stdout)
    assert files["failing_line"].startswith("failing cluster: language=es (slice)")

    exported = _flywheel(home)  # the gateway's flywheel hook ran after the guard acted
    assert exported and all(r["model_id"] == V2 for r in exported)
    assert all(r["failure_cluster"] for r in exported)


def _flywheel(home: Path) -> list[dict[str, Any]]:
    files = list((home / "flywheel").glob("*/failures.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]
