"""CLI commands for a route's drift guard policy: ``guard set``, ``guard show``, ``guard clear``.

The policy (:mod:`router.drift.policy`) lives in the route's state, so a change is a route
change like a rollback: versioned, audited (action ``set-guard``), made through a running
gateway with ``--url`` (``POST /admin/routes/{route}/guard``, oncall role) or, with
``REDIS_URL`` set and no ``--url``, in Redis directly.

``guard set`` changes only what its options name and keeps the rest of the policy in force
(a route without one starts from the defaults: auto-rollback off); it reads the route and
writes with a compare-and-set on the version it read, so a change made in between is never
overwritten (409, try again).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError

from lora_router.ground.errors import RouteNotFound
from lora_router.router.cli.common import (
    CliError,
    HomeOpt,
    ReasonOpt,
    UrlOpt,
    console,
    friendly_errors,
)
from lora_router.router.cli.flags import (
    ActorOpt,
    AllowNoReplicasOpt,
    JsonOpt,
    _print_change,
    _run,
    check_served,
)
from lora_router.router.cli.output import Col, Listing, echo_json, print_listing
from lora_router.router.drift.policy import DEFAULT_POLICY, GuardPolicy, SliceSpec
from lora_router.router.flags.client import FlagsClient
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import ChangeOut

guard_app = typer.Typer(
    help="A route's drift guard: auto-rollback, protected slices, minimum evidence.",
    no_args_is_help=True,
)

AutoOpt = Annotated[bool | None, typer.Option(
    "--auto-rollback/--no-auto-rollback", show_default=False,
    help="Contain on its own when a quality alert fires (live: roll back; canary or shadow: "
    "clear the split). Default: unchanged (off on a route without a policy).")]
ProtectOpt = Annotated[list[str] | None, typer.Option(
    "--protect", show_default=False, metavar="FEATURE=VALUE",
    help="A slice to watch with its own test, feature=value (e.g. language=es); repeat for "
    "several. Replaces the protected slices. Default: unchanged.")]
ClearProtectOpt = Annotated[bool, typer.Option(
    "--clear-protect", help="Protect no slice (only the overall quality test).")]
MinLabelsOpt = Annotated[int | None, typer.Option(
    "--min-labels", min=1, max=100_000, show_default=False,
    help="No quality alert on fewer labelled requests than this in its window.")]
MinDropOpt = Annotated[float | None, typer.Option(
    "--min-drop", min=0, max=1, show_default=False,
    help="The accuracy drop below the gate bar the tests detect fastest (0-1).")]
FalseAlarmOpt = Annotated[float | None, typer.Option(
    "--false-alarms-per-10k", show_default=False,
    help="False-alarm budget per 10,000 labelled requests of one adapter and arm.")]


def merged_policy(current: GuardPolicy | None, updates: dict[str, Any]) -> GuardPolicy:
    """``current`` (or the defaults) with ``updates`` applied; ``CliError`` on a bad value."""
    base = (current or DEFAULT_POLICY).model_dump()
    try:
        return GuardPolicy.model_validate({**base, **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "guard"
        raise CliError(f"invalid guard policy: {where}: {err['msg']}") from None


def _updates(auto: bool | None, protect: list[str] | None, clear_protect: bool,
             min_labels: int | None, min_drop: float | None,
             false_alarms: float | None) -> dict[str, Any]:
    if protect and clear_protect:
        raise CliError("--protect and --clear-protect exclude each other")
    specs: tuple[str, ...] | None = () if clear_protect else None
    if protect:
        try:
            specs = tuple(SliceSpec.parse(p).key for p in protect)
        except ValueError as exc:
            raise CliError(f"--protect: {exc}") from None
    given = {"auto_rollback": auto, "protect": specs, "min_labels": min_labels,
             "min_drop": min_drop, "false_alarms_per_10k": false_alarms}
    return {k: v for k, v in given.items() if v is not None}


async def _current(client: FlagsClient, route: str) -> RouteState | None:
    """The route as it is now; None when only the routes file has it (direct mode: the
    change creates it from the file)."""
    try:
        return await client.show(route)
    except RouteNotFound:
        return None


def _policy_rows(policy: GuardPolicy) -> dict[str, str]:
    return {
        "auto-rollback": "on" if policy.auto_rollback else "off (alerts only)",
        "protected slices": ", ".join(policy.protect) or "-",
        "min labels": str(policy.min_labels),
        "min drop": f"{policy.min_drop:g}",
        "false alarms per 10k": f"{policy.false_alarms_per_10k:g}",
    }


def show_json(state: RouteState) -> dict[str, Any]:
    """``guard show --json``: the policy in force (null: none) and what the monitor uses."""
    return {
        "route": state.route, "version": state.version,
        "guard": None if state.guard is None else state.guard.model_dump(mode="json"),
        "effective": (state.guard or DEFAULT_POLICY).model_dump(mode="json"),
        "updated_at": state.updated_at.isoformat(), "updated_by": state.updated_by,
        "reason": state.reason,
    }


def _show_listing(state: RouteState) -> Listing:
    policy = state.guard or DEFAULT_POLICY
    rows = {"policy": "set" if state.guard is not None else "none (the defaults below)",
            **_policy_rows(policy),
            "route version": f"{state.version} ({state.updated_at:%Y-%m-%d %H:%M:%S} UTC by"
                             f" {state.updated_by})"}
    return Listing([Col("field"), Col("value", wrap=True)], [[k, v] for k, v in rows.items()],
                   title=f"guard of {state.route}")


def _print_policy_change(out: ChangeOut, as_json: bool) -> None:
    if as_json:
        echo_json(out)
        return
    _print_change(out)
    guard = out.state.guard
    if guard is None:
        console.print("guard: none (alerts only)", highlight=False)
        return
    console.print("guard: " + "; ".join(f"{k} {v}" for k, v in _policy_rows(guard).items()),
                  highlight=False, soft_wrap=True)


@guard_app.command("set")
@friendly_errors
def set_cmd(
    route: str, reason: ReasonOpt, auto: AutoOpt = None, protect: ProtectOpt = None,
    clear_protect: ClearProtectOpt = False, min_labels: MinLabelsOpt = None,
    min_drop: MinDropOpt = None, false_alarms: FalseAlarmOpt = None,
    home: HomeOpt = None, url: UrlOpt = None, actor: ActorOpt = None, as_json: JsonOpt = False,
    allow_no_replicas: AllowNoReplicasOpt = False,
) -> None:
    """Set ROUTE's guard policy: only what the options name changes."""
    updates = _updates(auto, protect, clear_protect, min_labels, min_drop, false_alarms)

    async def go(client: FlagsClient) -> ChangeOut:
        current = await _current(client, route)
        policy = merged_policy(current.guard if current is not None else None, updates)
        return await client.set_guard(route, policy, reason=reason,
                                      expected_version=current.version if current else None)

    out = _run(home, url, actor, go)
    _print_policy_change(out, as_json)
    check_served(out, allow_no_replicas)


@guard_app.command("clear")
@friendly_errors
def clear_cmd(
    route: str, reason: ReasonOpt, home: HomeOpt = None, url: UrlOpt = None,
    actor: ActorOpt = None, as_json: JsonOpt = False, allow_no_replicas: AllowNoReplicasOpt = False,
) -> None:
    """Remove ROUTE's guard policy: alerts only, never an automatic change."""

    async def go(client: FlagsClient) -> ChangeOut:
        current = await _current(client, route)
        return await client.set_guard(route, None, reason=reason,
                                      expected_version=current.version if current else None)

    out = _run(home, url, actor, go)
    _print_policy_change(out, as_json)
    check_served(out, allow_no_replicas)


@guard_app.command("show")
@friendly_errors
def show_cmd(route: str, home: HomeOpt = None, url: UrlOpt = None,
             as_json: JsonOpt = False) -> None:
    """Show ROUTE's guard policy (or the defaults the monitor uses without one)."""
    state = _run(home, url, None, lambda c: c.show(route))
    if as_json:
        echo_json(show_json(state))
    else:
        print_listing(_show_listing(state))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(guard_app, name="guard")
