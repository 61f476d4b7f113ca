"""The route actions, defined once.

Each :class:`ActionSpec` names an action (its audit verb, the ``RouteService`` method and,
unless ``path`` says otherwise, the admin API's ``POST /admin/routes/{route}/<name>``), the
parameters it takes (type, bounds, help), its one-line help (the CLI's and the API's), the
CLI command that runs it, and how it turns the route's current state into the new one.
:class:`~router.flags.route_service.RouteService` applies them, :mod:`router.api.admin` builds an
endpoint and a body model per action, and :mod:`router.cli.flags` builds a command per
action that has a generated CLI (the guard's and the policy's are written by hand, in
:mod:`router.cli.guard` and :mod:`router.cli.policy`, over the same names).

Every action also takes ``reason`` and ``actor`` (who and why, in the audit) and an optional
``expected_version`` (a compare-and-set on the version the caller read).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from lora_router.ground.errors import InvalidRequest, RouteChangeRefused
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.policy_text import new_policy, policy_label
from lora_router.router.flags.state import RouteState, Split


class Context(Protocol):
    """What building a change may ask of the service."""

    max_policy_chars: int

    def card_rollback(self, adapter_id: str) -> str | None:
        """The rollback target the adapter's model card names (known, not itself), or None."""


Changes = dict[str, Any]
Build = Callable[..., Changes]  # build(ctx, current, **params) -> the fields that change


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an action: a service keyword, an API body field, a CLI argument
    (``option`` None) or option."""

    name: str
    type: Any  # the Python/pydantic type
    help: str
    option: str | None = None  # the CLI flag, e.g. "--percent"; None: a positional argument
    ge: float | None = None
    le: float | None = None


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str  # audit verb; RouteService method (``-`` -> ``_``); API path and CLI name
    help: str  # one line: the CLI command's help, the API operation's summary
    build: Build
    params: tuple[Param, ...] = ()
    body: str = "ChangeIn"  # the API body model's name (same params: same model)
    path: str | None = None  # the API path segment when it is not ``name``
    cli: bool = True  # False: its CLI command is written by hand elsewhere
    checked: bool = True  # False: never refused over an unknown or retired adapter

    @property
    def method(self) -> str:
        return self.name.replace("-", "_")

    @property
    def api_path(self) -> str:
        return self.path or self.name

    def check_params(self, given: Mapping[str, Any]) -> None:
        """``InvalidRequest`` unless ``given`` names exactly this action's parameters."""
        names = {p.name for p in self.params}
        if unknown := sorted(set(given) - names):
            raise InvalidRequest(f"{self.name} takes no {', '.join(unknown)}", param=unknown[0])
        if missing := sorted(names - set(given)):
            raise InvalidRequest(f"{self.name} needs {', '.join(missing)}", param=missing[0])


# -- how each action changes a route ------------------------------------------------------
def _rollback(ctx: Context, cur: RouteState) -> Changes:
    """Abort a canary/shadow if one is set (live stays); else live := rollback target
    (the route's, else the live adapter's model card default)."""
    if cur.canary is not None or cur.shadow is not None:
        return {"canary": None, "shadow": None}
    target = cur.rollback_target or ctx.card_rollback(cur.live)
    if target is None:
        raise RouteChangeRefused(
            f"route {cur.route!r} has no canary, no shadow and no rollback target",
            route=cur.route,
        )
    return {"live": target, "rollback_target": None}


def _canary(ctx: Context, cur: RouteState, *, adapter: str, percent: float) -> Changes:
    refuse_if(adapter == cur.live, f"{adapter} is already live on {cur.route}")
    return {"canary": _split(adapter, percent)}


def _shadow(ctx: Context, cur: RouteState, *, adapter: str, percent: float) -> Changes:
    refuse_if(adapter == cur.live, f"{adapter} is already live on {cur.route}")
    return {"shadow": _split(adapter, percent)}


def _promote(ctx: Context, cur: RouteState) -> Changes:
    if cur.canary is None:
        raise RouteChangeRefused(f"route {cur.route!r} has no canary to promote", route=cur.route)
    return make_live(cur, cur.canary.adapter)


def _set_live(ctx: Context, cur: RouteState, *, adapter: str) -> Changes:
    refuse_if(adapter == cur.live, f"{adapter} is already live on {cur.route}")
    return make_live(cur, adapter)


def _set_guard(ctx: Context, cur: RouteState, *, guard: GuardPolicy | None) -> Changes:
    return {"guard": guard}


def _set_policy(ctx: Context, cur: RouteState, *, text: str) -> Changes:
    if cur.policy is not None and cur.policy.text == text:
        label = policy_label(cur.route, cur.policy.version)
        raise RouteChangeRefused(f"this text is already in force as {label}", route=cur.route)
    version = cur.last_policy_version + 1
    return {"policy": new_policy(text, version, ctx.max_policy_chars),
            "last_policy_version": version}


def _clear_policy(ctx: Context, cur: RouteState) -> Changes:
    refuse_if(cur.policy is None, f"route {cur.route!r} has no policy text to clear")
    return {"policy": None}


def make_live(cur: RouteState, adapter: str) -> Changes:
    """``adapter`` live, the old live the rollback target, splits naming ``adapter`` gone."""
    changes: Changes = {"live": adapter, "rollback_target": cur.live}
    if cur.canary is not None and cur.canary.adapter == adapter:
        changes["canary"] = None
    if cur.shadow is not None and cur.shadow.adapter == adapter:
        changes["shadow"] = None
    return changes


def _split(adapter: str, percent: float) -> Split:
    try:
        return Split(adapter=adapter, percent=percent)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid split: {first_error(exc)}") from exc


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"


def refuse_if(condition: bool, message: str) -> None:
    if condition:
        raise RouteChangeRefused(message)


# -- the table ------------------------------------------------------------------------------
ADAPTER = Param("adapter", str, "The adapter id (name@version).")
PERCENT = Param("percent", float, "Share of traffic, 0 to 100.", option="--percent", ge=0, le=100)

ROLLBACK = ActionSpec(
    "rollback", "Back to known-good: clear a canary/shadow, else live := rollback target.",
    _rollback, checked=False,  # it only reuses what the route holds: it must always work
)
CANARY = ActionSpec(
    "canary", "Send PERCENT % of keys (sticky) to ADAPTER.", _canary, (ADAPTER, PERCENT),
    body="SplitIn",
)
SHADOW = ActionSpec(
    "shadow", "Copy PERCENT % of requests to ADAPTER in the background (never returned).",
    _shadow, (ADAPTER, PERCENT), body="SplitIn",
)
PROMOTE = ActionSpec(
    "promote", "Make the canary live; the old live becomes the rollback target.", _promote,
)
SET_LIVE = ActionSpec(
    "set-live", "Make ADAPTER live for all traffic; the old live becomes the rollback target.",
    _set_live, (ADAPTER,), body="AdapterIn",
)
SET_GUARD = ActionSpec(
    "set-guard", "Set the route's drift guard policy (null removes it: alerts only).",
    _set_guard,
    (Param("guard", GuardPolicy | None,
           "The route's whole drift guard policy (it replaces the one in force); null "
           "removes it (alerts only, never an automatic change)."),),
    body="GuardIn", path="guard", cli=False,  # router.cli.guard: merges options into it
)
SET_POLICY = ActionSpec(
    "set-policy", "Set ROUTE's policy text: the system prompt of every request it serves.",
    _set_policy,
    (Param("text", str, "The policy text (its next version; sha256 of its UTF-8 bytes)."),),
    body="PolicyIn", cli=False, checked=False,  # router.cli.policy: reads a file
)
CLEAR_POLICY = ActionSpec(
    "clear-policy", "Remove ROUTE's policy text: requests are served as sent.",
    _clear_policy, cli=False, checked=False,
)

ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (ROLLBACK, CANARY, SHADOW, PROMOTE, SET_LIVE, SET_GUARD, SET_POLICY,
                 CLEAR_POLICY)
}


def action(name: str) -> ActionSpec:
    """The spec named ``name``; ``InvalidRequest`` for no such action."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise InvalidRequest(
            f"no route action {name!r}; actions: {', '.join(ACTIONS)}", param="action"
        ) from None
