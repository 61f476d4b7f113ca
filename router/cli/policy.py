"""CLI commands for a route's policy text: ``policy set``, ``policy show``, ``policy clear``.

The policy text (:mod:`router.flags.policy_text`) is the system prompt of every request the
route serves, kept in the route's state: a change is a route action like a rollback
(``set-policy`` / ``clear-policy`` in :mod:`router.flags.actions`), versioned, audited and
applied by every replica, made through a running gateway with ``--url``
(``POST /admin/routes/{route}/set-policy``, oncall role) or, with ``REDIS_URL`` set and no
``--url``, in the route store directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

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
    run_change,
)
from lora_router.router.cli.output import Col, Listing, echo_json, print_listing
from lora_router.router.flags.actions import CLEAR_POLICY, SET_POLICY
from lora_router.router.flags.state import RouteState
from lora_router.router.flags.views import ChangeOut

policy_app = typer.Typer(
    help="A route's policy text: the system prompt of every request it serves.",
    no_args_is_help=True,
)

FileOpt = Annotated[Path, typer.Option(
    "--file", show_default=False, metavar="FILE",
    help="The policy text: a UTF-8 file, used as it is (- reads standard input).")]
ExpectedOpt = Annotated[int | None, typer.Option(
    "--expected-version", min=1, show_default=False,
    help="Refuse unless the route is at this version (route show prints it).")]


def read_text(path: Path) -> str:
    """The file's text, exactly (no newline translation); ``CliError`` when unreadable."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise CliError(f"--file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"--file {path}: not UTF-8 text") from None


def policy_json(state: RouteState) -> dict[str, Any]:
    """``policy show --json``: the policy in force (null: none) and the route's version."""
    policy = state.policy
    return {
        "route": state.route, "route_version": state.version,
        "policy_version": state.policy_version,
        "policy": None if policy is None else policy.model_dump(mode="json"),
        "last_policy_version": state.last_policy_version,
    }


def _show_listing(state: RouteState) -> Listing:
    policy = state.policy
    rows = {"policy": state.policy_version or "none (requests are served as sent)"}
    if policy is not None:
        rows.update({"sha256": policy.sha256, "characters": f"{len(policy.text):,}"})
    rows["route version"] = (f"{state.version} ({state.updated_at:%Y-%m-%d %H:%M:%S} UTC by "
                             f"{state.updated_by})")
    return Listing([Col("field"), Col("value", wrap=True)], [[k, v] for k, v in rows.items()],
                   title=f"policy of {state.route}")


def _print_policy_change(out: ChangeOut, as_json: bool) -> None:
    if as_json:
        echo_json(out)
        return
    _print_change(out)
    policy = out.state.policy
    if policy is None:
        console.print("policy: none (requests are served as sent)", highlight=False)
    else:
        console.print(f"policy: {out.state.policy_version} sha256 {policy.sha256} "
                      f"({len(policy.text):,} characters)", highlight=False, soft_wrap=True)


@policy_app.command("set", help=SET_POLICY.help)
@friendly_errors
def set_cmd(
    route: str, file: FileOpt, reason: ReasonOpt, expected: ExpectedOpt = None,
    home: HomeOpt = None, url: UrlOpt = None, actor: ActorOpt = None, as_json: JsonOpt = False,
    allow_no_replicas: AllowNoReplicasOpt = False,
) -> None:
    run_change(home, url, actor, route, SET_POLICY.name, text=read_text(file), reason=reason,
               expected_version=expected, allow_no_replicas=allow_no_replicas,
               show=lambda out: _print_policy_change(out, as_json))


@policy_app.command("clear", help=CLEAR_POLICY.help)
@friendly_errors
def clear_cmd(
    route: str, reason: ReasonOpt, expected: ExpectedOpt = None, home: HomeOpt = None,
    url: UrlOpt = None, actor: ActorOpt = None, as_json: JsonOpt = False,
    allow_no_replicas: AllowNoReplicasOpt = False,
) -> None:
    run_change(home, url, actor, route, CLEAR_POLICY.name, reason=reason,
               expected_version=expected, allow_no_replicas=allow_no_replicas,
               show=lambda out: _print_policy_change(out, as_json))


@policy_app.command("show")
@friendly_errors
def show_cmd(route: str, home: HomeOpt = None, url: UrlOpt = None,
             as_json: JsonOpt = False) -> None:
    """Show ROUTE's policy text, its version and sha256."""
    state = _run(home, url, None, lambda c: c.show(route))
    if as_json:
        echo_json(policy_json(state))
        return
    print_listing(_show_listing(state))
    if state.policy is not None:
        typer.echo()
        typer.echo(state.policy.text)  # as it is: no markup, no wrapping


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(policy_app, name="policy")
