"""CLI commands: the incident runbook (``incident list|show|assess|report|export``) and
``drift report ROUTE``.

They read the inference-log database the settings select (``DATABASE_URL``, else the
home's SQLite log) through the drift store, the registry of the home (comparison adapters,
baselines, gate bars) and, when it can be read, the route store (``REDIS_URL``, else the
embedded route store's file; never created here) for the route's state and audit trail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from lora_router.ground.errors import LoraRouterError
from lora_router.ground.home import Home
from lora_router.ground.ids import check_name
from lora_router.router.cli.common import (
    CliError,
    HomeOpt,
    console,
    err_console,
    friendly_errors,
    load_settings,
)
from lora_router.router.drift.assess import Assessment, Group
from lora_router.router.drift.flywheel import export_incident
from lora_router.router.drift.queries import incident_alerts, require_incident
from lora_router.router.drift.report import drift_report, incident_report
from lora_router.router.drift.runbook import Lineage, assess_model, main_route, route_view
from lora_router.router.drift.runtime import build_drift_store
from lora_router.router.drift.store import DriftStore
from lora_router.router.drift.triggers import migrate_triggers, triggers
from lora_router.router.flags.factory import build_route_store
from lora_router.router.flags.store import RouteStore
from lora_router.router.log.sink import parse_since
from lora_router.router.settings import Settings

T = TypeVar("T")

incident_app = typer.Typer(
    help="The incident runbook: list, show, assess, report, export.", no_args_is_help=True)
drift_app = typer.Typer(help="Drift over time for a route.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON instead of tables.")]
SinceOpt = Annotated[str, typer.Option("--since", help="30m, 24h, 7d or an ISO time.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End of the window (default now).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Folder for the report and charts.")]
IdArg = Annotated[str, typer.Argument(help="The incident's id (see `incident list`).")]


@dataclass(frozen=True)
class _Ctx:
    settings: Settings
    home: Home
    store: DriftStore
    routes: RouteStore | None


@asynccontextmanager
async def _route_store(settings: Settings) -> AsyncIterator[RouteStore | None]:
    """The route store to read, or None (no Redis and no embedded file, or unreachable)."""
    if not settings.redis_url and not settings.flags_db_path.is_file():
        yield None
        return
    store = build_route_store(settings)
    try:
        await store.start()
    except LoraRouterError as exc:
        err_console.print(f"[yellow]warning:[/yellow] route state and audit left out: {exc}",
                          highlight=False, soft_wrap=True)
        yield None
        return
    try:
        yield store
    finally:
        await store.close()


def _run(home: Path | None, fn: Callable[[_Ctx], Awaitable[T]], *, routes: bool = False) -> T:
    settings = load_settings(home)
    h = Home.at(settings.home)

    async def main() -> T:
        store = build_drift_store(settings, h)
        await store.open()
        try:
            if not routes:
                return await fn(_Ctx(settings, h, store, None))
            async with _route_store(settings) as found:
                return await fn(_Ctx(settings, h, store, found))
        finally:
            await store.close()

    return asyncio.run(main())


def _incident_id(text: str) -> int:
    if not text.isdigit():
        raise CliError(f"invalid incident id {text!r}: a number, as `incident list` shows")
    return int(text)


def _window(since: str, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start, end = parse_since(since, now), parse_since(until, now) if until else now
    if start >= end:
        raise CliError(f"empty window: --since {since} is not before --until {until or 'now'}")
    return start, end


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str))


# --- incident list / show ----------------------------------------------------------------------

@incident_app.command("list")
@friendly_errors
def list_cmd(
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="open, contained or resolved.")
                      ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Incidents, newest first."""
    found = _run(home, lambda c: c.store.incidents(route=route, status=status, limit=limit))
    if as_json:
        for inc in found:
            _echo_json(inc.model_dump(mode="json"))
        return
    table = Table("id", "opened (UTC)", "route", "adapter (arm)", "status", "alerts",
                  "last action", "summary", title="incidents")
    for inc in found:
        last = inc.actions[-1] if inc.actions else {}
        table.add_row(str(inc.id), f"{inc.opened_at:%Y-%m-%d %H:%M:%S}", inc.route,
                      f"{inc.model_id} ({inc.arm or '-'})", inc.status,
                      ", ".join(f"#{i}" for i in inc.alert_ids),
                      f"{last.get('actor', '-')} {last.get('kind', '')}", inc.summary)
    console.print(table)


@incident_app.command("show")
@friendly_errors
def show_cmd(incident_id: IdArg, as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """One incident: its alerts with their evidence, actions and retraining triggers."""
    wanted = _incident_id(incident_id)

    async def gather(c: _Ctx) -> dict[str, Any]:
        inc = await require_incident(c.store, wanted)
        alerts = await incident_alerts(c.store, inc)
        await migrate_triggers(c.store)
        return {"incident": inc.model_dump(mode="json"),
                "alerts": [a.model_dump(mode="json") for a in alerts],
                "triggers": [t.model_dump(mode="json") for t in await triggers(
                    c.store, route=inc.route, model_id=inc.model_id)],
                "summaries": {a.id: a.summary() + (" (repeat)" if a.evidence.get("repeat")
                                                   else "") for a in alerts}}

    data = _run(home, gather)
    if as_json:
        data.pop("summaries")
        _echo_json(data)
        return
    inc = data["incident"]
    console.print(f"[bold]incident {inc['id']}[/bold] {inc['route']} {inc['model_id']}"
                  f" ({inc['arm'] or '-'}): {inc['status']}, opened {inc['opened_at']}",
                  highlight=False)
    console.print(inc["summary"], highlight=False)
    for alert_id, line in data["summaries"].items():
        console.print(f"  alert #{alert_id}: {line}", highlight=False)
    for act in inc["actions"]:
        console.print(f"  action {act.get('at')}: {act.get('actor')} {act.get('kind')}"
                      f" {act.get('adapter')} v{act.get('route_version_before')} ->"
                      f" v{act.get('route_version_after', '-')} ({act.get('detail')})",
                      highlight=False)
    for t in data["triggers"]:
        console.print(f"  retraining trigger {t['id']} ({t['status']}): {t['export_dir']}",
                      highlight=False)


# --- incident assess ---------------------------------------------------------------------------

def _groups_table(title: str, groups: list[Group], comparison: str | None) -> Table:
    table = Table("group", "n", "accuracy", "95% CI", f"{comparison or 'ref'} n", "ref acc",
                  "gate bar", "Δ", "sig", "failures", "top failure_cluster", title=title)
    for g in groups:
        ref = g.reference
        table.add_row(g.key + (" *" if g.protected else ""), str(g.model.n),
                      _f(g.model.accuracy), f"{_f(g.model.ci95[0])}-{_f(g.model.ci95[1])}",
                      "-" if ref is None else str(ref.n), _f(None if ref is None
                                                           else ref.accuracy),
                      _f(g.bar), _f(g.delta), "yes" if g.significant else "",
                      str(g.failures), g.top_cluster or "-")
    return table


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print_assessment(a: Assessment) -> None:
    console.print(f"[bold]{a.failing_line()}[/bold]", highlight=False)
    console.print(f"{a.model_id} on route {a.route or '-'}, {a.since:%Y-%m-%d %H:%M:%S} ->"
                  f" {a.until:%Y-%m-%d %H:%M:%S} UTC: {a.requests} requests; compared with"
                  f" {a.comparison or 'the gate bars'} ({a.comparison_why})", highlight=False)
    console.print(_groups_table("overall and by slice (* protected)", [a.overall, *a.slices],
                                a.comparison))
    clusters = Table("failure_cluster", "failures", "share",
                     f"failures of {a.comparison or '-'}", "top slice", title="failures")
    for c in a.clusters:
        clusters.add_row(c.cluster, str(c.failures), f"{c.share:.0%}", str(c.reference_failures),
                         f"{c.top_slice or '-'} ({c.top_slice_share:.0%})")
    console.print(clusters)
    console.print(_groups_table("by input feature and output (most excess failures first)",
                                a.features[:12], a.comparison))


@incident_app.command("assess")
@friendly_errors
def assess_cmd(
    model_id: Annotated[str, typer.Argument(help="The adapter version, e.g. support-triage@v2.")],
    since: SinceOpt = "24h", until: UntilOpt = None,
    route: Annotated[str | None, typer.Option("--route", help="Only on this route (default:"
                                                              " the one it served most).")] = None,
    against: Annotated[str | None, typer.Option("--against", help="Compare with this adapter"
                                                                  " (default: rollback target).")
                       ] = None,
    as_json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Where MODEL_ID fails: by failure_cluster, slice and input, against its comparison."""
    start, end = _window(since, until)
    if route is not None:
        check_name(route, "route")

    async def go(c: _Ctx) -> Assessment:
        name = route or await main_route(c.store, model_id, since=start, until=end)
        view = await route_view(c.routes, name)
        return await assess_model(c.store, model_id, since=start, until=end, view=view,
                                  lineage=Lineage.of_home(c.home), against=against)

    result = _run(home, go, routes=True)
    if as_json:
        _echo_json(result.to_json())
        return
    _print_assessment(result)


# --- reports and export ------------------------------------------------------------------------

@incident_app.command("report")
@friendly_errors
def report_cmd(
    incident_id: IdArg, out: OutOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="Start of the window (default:"
                                                              " before the first alert).")] = None,
    as_json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Write the incident's markdown timeline and PNG charts; prints the report's path."""
    wanted = _incident_id(incident_id)
    start = parse_since(since) if since else None
    files = _run(home, lambda c: incident_report(
        c.store, c.home, wanted, routes=c.routes, out=out, since=start), routes=True)
    if as_json:
        _echo_json(files.to_json())
        return
    if files.failing_line:
        console.print(files.failing_line, highlight=False, soft_wrap=True)
    typer.echo(str(files.markdown))


@incident_app.command("export")
@friendly_errors
def export_cmd(incident_id: IdArg, as_json: JsonOpt = False, home: HomeOpt = None) -> None:
    """Export the incident's labelled failures and a draft dataset card (flywheel).

    Records the retraining trigger of the incident's adapter and writes
    <home>/flywheel/<trigger id>/: failures.jsonl, dataset-card.yaml, trigger.json;
    prints the folder.
    """
    wanted = _incident_id(incident_id)
    done = _run(home, lambda c: export_incident(c.store, c.home, wanted))
    if as_json:
        _echo_json(done.to_json())
        return
    t = done.trigger
    console.print(f"retraining trigger {t.id} ({'new' if done.created else 'existing'};"
                  f" alerts {', '.join(f'#{i}' for i in t.alert_ids)}): {done.rows} labelled"
                  f" failures of {t.model_id}, {done.prompts} with their prompt",
                  highlight=False, soft_wrap=True)
    typer.echo(str(done.dir))


@drift_app.command("report")
@friendly_errors
def drift_report_cmd(
    route: Annotated[str, typer.Argument(help="The route.")],
    since: SinceOpt = "24h", until: UntilOpt = None, out: OutOpt = None,
    as_json: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Write a route's drift charts and summary (per adapter and slice); prints the path."""
    check_name(route, "route")
    start, end = _window(since, until)
    files = _run(home, lambda c: drift_report(c.store, c.home, route, since=start, until=end,
                                              routes=c.routes, out=out), routes=True)
    if as_json:
        _echo_json(files.to_json())
        return
    typer.echo(str(files.markdown))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(incident_app, name="incident")
    app.add_typer(drift_app, name="drift")
