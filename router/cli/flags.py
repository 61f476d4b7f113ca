"""CLI commands for route flags: list, show, rollback, canary, shadow, promote, set-live, audit.

The change commands are built from the route actions' table (:mod:`router.flags.actions`):
one command per action, named like it, taking its parameters, with its help.

Each talks to a running gateway with ``--url``, or, with ``REDIS_URL`` set and no
``--url``, to Redis directly (a change creates its route from the home's routes.yaml if
Redis lacks it; the read-only commands never write).
"""

from __future__ import annotations

import asyncio
import getpass
import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from lora_router.router.cli.common import (
    HomeOpt,
    ReasonOpt,
    UrlOpt,
    console,
    err_console,
    friendly_errors,
    load_settings,
)
from lora_router.router.cli.output import Col, Listing, echo_json, print_listing
from lora_router.router.flags.actions import ACTIONS, ActionSpec, Param
from lora_router.router.flags.client import (
    FlagsClient,
    not_served_message,
    nothing_serves,
    open_client,
)
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import AuditOut, ChangeOut, RoutesOut

T = TypeVar("T")
KEYWORD = inspect.Parameter.KEYWORD_ONLY
EXIT_NOT_SERVED = 3  # a change stored directly in Redis that no gateway replica serves yet

ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who is making the change (default: your login).")
]
PercentOpt = Annotated[
    float, typer.Option("--percent", min=0, max=100, help="Share of traffic, 0 to 100.")
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many changes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AllowNoReplicasOpt = Annotated[bool, typer.Option(
    "--allow-no-replicas",
    help=f"Directly on Redis (no --url) with no gateway replica registered, the change is "
    f"stored but nothing serves it yet: the command says so and exits {EXIT_NOT_SERVED}; with "
    "this flag it exits 0.")]

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
    if s.policy_version:
        parts.append(f"policy={s.policy_version}")
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
        "policy": s.policy_version or "-",
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
        "policy": s.policy_version or "-",
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
    if out.prepare_ms >= 0.01 and (a is None or a.replicas):  # else nothing loaded them
        where = "the gateway" if a is None else "every replica"
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


def run_change(
    home: Any, url: str | None, actor: str | None, route: str, action: str, *,
    allow_no_replicas: bool = False, show: Callable[[ChangeOut], None] = _print_change,
    **fields: Any,
) -> None:
    """Make the change and ``show`` it. Made directly on a Redis where no gateway replica is
    registered, the change is stored but nothing serves it: said on stderr, and the command
    exits :data:`EXIT_NOT_SERVED` unless ``allow_no_replicas``."""
    out = _run(home, url, actor, lambda c: c.change(route, action, **fields))
    show(out)
    check_served(out, allow_no_replicas)


def check_served(out: ChangeOut, allow_no_replicas: bool) -> None:
    """After a change is shown: one made directly on a Redis where no gateway replica is
    registered is stored but served by nothing, said on stderr, and the command exits
    :data:`EXIT_NOT_SERVED` unless ``allow_no_replicas``."""
    if not nothing_serves(out):
        return
    message = not_served_message(out)
    if allow_no_replicas:
        err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False,
                          soft_wrap=True)
        return
    err_console.print(f"[red]error:[/red] {message} (pass --allow-no-replicas to accept "
                      "that)", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_NOT_SERVED)


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
def audit_cmd(route: str, home: HomeOpt = None, url: UrlOpt = None, limit: LimitOpt = 50,
              as_json: JsonOpt = False) -> None:
    """The last changes of ROUTE (oldest first): version, when, who, why, what changed."""
    out = _run(home, url, None, lambda c: c.audit(route, limit))
    if as_json:
        echo_json(out)
    else:
        print_listing(_audit_listing(out))


def _cli_param(p: Param) -> inspect.Parameter:
    """``p`` as typer reads it: a positional argument, or a required option."""
    if p.option is None:
        info: Any = typer.Argument(help=p.help, show_default=False)
    else:
        info = typer.Option(p.option, help=p.help, min=p.ge, max=p.le)
    return inspect.Parameter(p.name, KEYWORD, annotation=Annotated[p.type, info])


_COMMON = [  # after the action's own parameters, as every change command always had them
    inspect.Parameter("reason", KEYWORD, annotation=ReasonOpt),
    inspect.Parameter("home", KEYWORD, annotation=HomeOpt, default=None),
    inspect.Parameter("url", KEYWORD, annotation=UrlOpt, default=None),
    inspect.Parameter("actor", KEYWORD, annotation=ActorOpt, default=None),
    inspect.Parameter("allow_no_replicas", KEYWORD, annotation=AllowNoReplicasOpt,
                      default=False),
]


def change_command(spec: ActionSpec) -> Callable[..., None]:
    """The command running ``spec`` on ROUTE: its parameters from the action's table entry
    (:mod:`router.flags.actions`), then ``--reason``, ``--home``, ``--url``, ``--actor``,
    ``--allow-no-replicas``."""

    def command(route: str, reason: str, home: Any = None, url: str | None = None,
                actor: str | None = None, allow_no_replicas: bool = False,
                **params: Any) -> None:
        run_change(home, url, actor, route, spec.name, reason=reason,
                   allow_no_replicas=allow_no_replicas, **params)

    command.__name__ = f"{spec.method}_cmd"
    command.__doc__ = spec.help
    route = inspect.Parameter("route", KEYWORD, annotation=str)
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [route, *(_cli_param(p) for p in spec.params), *_COMMON]
    )
    return friendly_errors(command)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("routes")(routes_cmd)
    app.add_typer(route_app, name="route")
    for spec in ACTIONS.values():
        if spec.cli:
            app.command(spec.name)(change_command(spec))
    app.command("audit")(audit_cmd)
