"""CLI commands for route flags: list, show, rollback, canary, shadow, promote, set-live, audit.

Each talks to a running gateway with ``--url``, or, with ``REDIS_URL`` set and no
``--url``, to Redis directly (a change creates its route from the home's routes.yaml if
Redis lacks it; the read-only commands never write).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from router.cli.common import HomeOpt, ReasonOpt, UrlOpt, console, friendly_errors, load_settings
from router.cli.output import Col, Listing, echo_json, print_listing
from router.flags.client import FlagsClient, open_client
from router.flags.state import RouteState
from router.flags.views import AuditOut, ChangeOut, RoutesOut

T = TypeVar("T")

ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who is making the change (default: your login).")
]
PercentOpt = Annotated[
    float, typer.Option("--percent", min=0, max=100, help="Share of traffic, 0 to 100.")
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many changes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

route_app = typer.Typer(help="Inspect one route.", no_args_is_help=True)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _run(
    home: Any, url: str | None, actor: str | None, fn: Callable[[FlagsClient], Awaitable[T]]
) -> T:
    settings = load_settings(home)

    async def main() -> T:
        async with open_client(settings, url, _actor(actor)) as client:
            return await fn(client)

    return asyncio.run(main())


def _summary(s: RouteState, sep: str = "  ") -> str:
    parts = [f"live={s.live}"]
    if s.canary:
        parts.append(f"canary={s.canary.adapter} {s.canary.percent:g}%")
    if s.shadow:
        parts.append(f"shadow={s.shadow.adapter} {s.shadow.percent:g}%")
    parts.append(f"rollback={s.rollback_target or '-'}")
    return sep.join(parts)


def _routes_listing(out: RoutesOut) -> Listing:
    cols = [Col("route"), Col("version"), Col("live"), Col("canary"), Col("shadow"),
            Col("rollback target"), Col("updated", wrap=True)]
    rows = [
        [
            s.route,
            str(s.version),
            s.live,
            f"{s.canary.adapter} {s.canary.percent:g}%" if s.canary else "-",
            f"{s.shadow.adapter} {s.shadow.percent:g}%" if s.shadow else "-",
            s.rollback_target or "-",
            f"{s.updated_at:%Y-%m-%d %H:%M:%S} by {s.updated_by}: {s.reason}",
        ]
        for s in out.routes
    ]
    st = out.store
    age = f", snapshot age {st.age_s:.1f}s" if st.age_s is not None else ""
    caption = f"store: {st.backend} ({'connected' if st.connected else 'DISCONNECTED'}{age})"
    return Listing(cols, rows, title="routes", caption=caption)


def _show_listing(s: RouteState) -> Listing:
    rows = {
        "version": str(s.version),
        "live": s.live,
        "canary": f"{s.canary.adapter} ({s.canary.percent:g}%)" if s.canary else "-",
        "shadow": f"{s.shadow.adapter} ({s.shadow.percent:g}%)" if s.shadow else "-",
        "rollback target": s.rollback_target or "-",
        "task": s.task.type + (f" ({', '.join(s.task.labels)})" if s.task.labels else ""),
        "updated": f"{s.updated_at.isoformat()} by {s.updated_by}",
        "reason": s.reason,
    }
    return Listing([Col("field"), Col("value", wrap=True)], [[k, v] for k, v in rows.items()],
                   title=f"route {s.route}")


def _arms(s: RouteState) -> dict[str, str]:
    return {
        "live": s.live,
        "canary": f"{s.canary.adapter} {s.canary.percent:g}%" if s.canary else "-",
        "shadow": f"{s.shadow.adapter} {s.shadow.percent:g}%" if s.shadow else "-",
        "rollback": s.rollback_target or "-",
    }


def _change_lines(before: RouteState | None, after: RouteState) -> str:
    """What a change did, one ``field old -> new`` per line (the route as created, for
    the first entry): a narrow column wraps between words, never inside an id."""
    new = _arms(after)
    if before is None:
        return "\n".join(f"{k} {v}" for k, v in new.items() if v != "-")
    old = _arms(before)
    lines = [f"{k} {old[k]} -> {new[k]}" for k in new if old[k] != new[k]]
    return "\n".join(lines) or "-"


def _audit_listing(out: AuditOut) -> Listing:
    cols = [Col("version"), Col("at (UTC)"), Col("by", wrap=True), Col("action"),
            Col("reason", wrap=True), Col("change", wrap=True)]
    rows = [
        [str(e.version), f"{e.at:%Y-%m-%d %H:%M:%S}", e.by, e.action, e.reason,
         _change_lines(e.before, e.after)]
        for e in out.entries
    ]
    return Listing(cols, rows, title=f"audit of {out.route}")


def _print_change(out: ChangeOut) -> None:
    s = out.state
    console.print(f"[bold]{out.action}[/bold] {s.route}: version {s.version}  {_summary(s)}")
    a = out.applied
    timing = f"committed in {out.commit_ms:.2f} ms"
    if out.prepare_ms >= 0.01:
        where = "every replica" if a is not None and a.replicas else "the gateway"
        timing = f"{where} loaded the new adapters in {out.prepare_ms:.1f} ms; " + timing
    console.print(timing)
    if a is None:  # the in-process store: the gateway that took the change is the only one
        console.print("applied by the gateway at once (in-process route store)")
        return
    if not (a.replicas or a.dropped):
        console.print("no gateway replicas registered: nothing to wait for")
        return
    n = len(a.replicas)
    if a.elapsed_ms is not None and n:
        who = f"all {n} replicas" if n > 1 else f"the only live replica ({a.replicas[0]})"
        console.print(f"applied by {who} {a.elapsed_ms:.2f} ms after commit")
    elif a.elapsed_ms is not None:
        console.print("no live replica left to apply it")
    else:
        console.print(
            f"[yellow]applied by {n - len(a.pending)}/{n} replicas; "
            f"not yet by: {', '.join(a.pending)}[/yellow]"
        )
    for replica in a.dropped:
        console.print(f"[yellow]{replica} stopped heartbeating (dropped)[/yellow]")


def _change(home: Any, url: str | None, actor: str | None, route: str, action: str,
            **fields: Any) -> None:
    out = _run(home, url, actor, lambda c: c.change(route, action, **fields))
    _print_change(out)


@friendly_errors
def routes_cmd(home: HomeOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List every route with its live, canary, shadow and rollback target."""
    out = _run(home, url, None, lambda c: c.routes())
    if as_json:
        echo_json(out)
    else:
        print_listing(_routes_listing(out))


@route_app.command("show")
@friendly_errors
def show_cmd(route: str, home: HomeOpt = None, url: UrlOpt = None,
             as_json: JsonOpt = False) -> None:
    """Show one route's state."""
    state = _run(home, url, None, lambda c: c.show(route))
    if as_json:
        echo_json(state)
    else:
        print_listing(_show_listing(state))


@friendly_errors
def rollback_cmd(
    route: str, reason: ReasonOpt, home: HomeOpt = None, url: UrlOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Back to known-good: clear a canary/shadow, else live := rollback target."""
    _change(home, url, actor, route, "rollback", reason=reason)


@friendly_errors
def canary_cmd(
    route: str, adapter: str, percent: PercentOpt, reason: ReasonOpt, home: HomeOpt = None,
    url: UrlOpt = None, actor: ActorOpt = None,
) -> None:
    """Send PERCENT % of keys (sticky) to ADAPTER."""
    _change(home, url, actor, route, "canary", adapter=adapter, percent=percent, reason=reason)


@friendly_errors
def shadow_cmd(
    route: str, adapter: str, percent: PercentOpt, reason: ReasonOpt, home: HomeOpt = None,
    url: UrlOpt = None, actor: ActorOpt = None,
) -> None:
    """Copy PERCENT % of requests to ADAPTER in the background (never returned)."""
    _change(home, url, actor, route, "shadow", adapter=adapter, percent=percent, reason=reason)


@friendly_errors
def promote_cmd(
    route: str, reason: ReasonOpt, home: HomeOpt = None, url: UrlOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Make the canary live; the old live becomes the rollback target."""
    _change(home, url, actor, route, "promote", reason=reason)


@friendly_errors
def set_live_cmd(
    route: str, adapter: str, reason: ReasonOpt, home: HomeOpt = None, url: UrlOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Make ADAPTER live for all traffic; the old live becomes the rollback target."""
    _change(home, url, actor, route, "set-live", adapter=adapter, reason=reason)


@friendly_errors
def audit_cmd(route: str, home: HomeOpt = None, url: UrlOpt = None, limit: LimitOpt = 50,
              as_json: JsonOpt = False) -> None:
    """The last changes of ROUTE (oldest first): version, when, who, why, what changed."""
    out = _run(home, url, None, lambda c: c.audit(route, limit))
    if as_json:
        echo_json(out)
    else:
        print_listing(_audit_listing(out))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("routes")(routes_cmd)
    app.add_typer(route_app, name="route")
    app.command("rollback")(rollback_cmd)
    app.command("canary")(canary_cmd)
    app.command("shadow")(shadow_cmd)
    app.command("promote")(promote_cmd)
    app.command("set-live")(set_live_cmd)
    app.command("audit")(audit_cmd)
