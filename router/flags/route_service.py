"""Route changes: the operations the CLI and the admin API share.

What each action takes and how it changes a route is its entry in
:mod:`router.flags.actions` (the one table the admin API and the CLI are built from too);
:meth:`RouteService.apply` runs any of them, the named methods are typed shortcuts.

Each operation takes who (``actor``) and why (``reason``), reads the route's current state,
builds the new one, validates it, gets every replica ready for it (``prepare``: the
two-phase residency step), commits it with a compare-and-set on the version it read, and
returns the committed state with how long the write took and, when replicas report, how
long until every replica applied it.

Nothing on the way blocks the event loop, and nothing on it grows with the number of
earlier changes: building and checking the new state (which reads model cards, through a
cache) runs in a worker thread, and the registry's record of the change (``on_commit``)
is written after the answer (:mod:`router.flags.bookkeeping`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lora_router.ground.errors import (
    AdapterNotFound,
    InvalidRequest,
    RouteChangeRefused,
    RouteNotFound,
    VersionConflict,
)
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.actions import action as action_spec
from lora_router.router.flags.actions import first_error, refuse_if
from lora_router.router.flags.bookkeeping import Bookkeeper
from lora_router.router.flags.policy_text import DEFAULT_MAX_POLICY_CHARS
from lora_router.router.flags.replicas import AppliedWatch, ApplyReport, ReplicaRegistry
from lora_router.router.flags.state import RouteState, check_route_adapters
from lora_router.router.flags.store import AuditEntry, RouteStore

log = logging.getLogger(__name__)

PrepareFn = Callable[[set[str]], Awaitable[None]]
KnownAdapters = Callable[[], set[str]]
Build = Callable[[RouteState], dict[str, Any]]
OnCommit = Callable[[RouteState | None, RouteState], None]
DefaultRollback = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """A committed change: the new state and its timings (ms)."""

    state: RouteState
    action: str
    prepare_ms: float  # asking replicas to load new adapters (0 when none were new)
    commit_ms: float  # the compare-and-set write, to its acknowledgement
    applied: ApplyReport | None  # None when no replica registry is attached
    committed_at: datetime | None = None  # wall clock when the write was acknowledged


class RouteService:
    """The route operations over a :class:`RouteStore`.

    ``known_adapters`` lists the adapters a route may name (registered, not retired). Every
    change except a rollback or a policy change (``ActionSpec.checked``) is checked: each
    adapter it adds, and each adapter that serves traffic in the new state (live, canary,
    shadow), must be known, so a ``promote`` of a canary whose adapter was retired meanwhile
    is refused. A rollback is never checked: it only reuses adapters the route already
    holds, and it must always work; a policy change names no adapter. :meth:`seed`
    checks every adapter of the routes it would create, before writing any.
    ``prepare(adapter_ids)`` is awaited before a change that adds adapters is committed
    and raises ``RouteChangeRefused`` to stop it. With a ``replicas`` registry, each change waits up
    to ``apply_timeout_s`` for every live replica to report the new version.

    Hooks: ``on_commit(before, after)`` is called (in a worker thread) after changes
    committed through this service, after the change was answered: queued, run by one
    background task, coalesced per route when changes queue up
    (:class:`~router.flags.bookkeeping.Bookkeeper`); :meth:`settle` waits for it. Its
    exceptions are logged, never fail the change. :meth:`seed` does not call it: seeding
    is the config at start, run by every replica, not a change someone made.
    ``default_rollback(adapter_id)`` names the rollback target the registry's model card
    records for an adapter (or None): :meth:`rollback` uses it when the route has no
    rollback target, and :meth:`seed` fills in routes that name none.
    ``max_policy_chars`` bounds a route's policy text (``LimitExceeded``, 413).
    """

    def __init__(
        self,
        store: RouteStore,
        *,
        known_adapters: KnownAdapters | None = None,
        prepare: PrepareFn | None = None,
        replicas: ReplicaRegistry | None = None,
        apply_timeout_s: float = 5.0,
        on_commit: OnCommit | None = None,
        default_rollback: DefaultRollback | None = None,
        max_policy_chars: int = DEFAULT_MAX_POLICY_CHARS,
    ) -> None:
        self.store = store
        self.max_policy_chars = max_policy_chars
        self._known = known_adapters
        self._prepare = prepare
        self._replicas = replicas
        self._apply_timeout_s = apply_timeout_s
        self._bookkeeper = Bookkeeper(on_commit) if on_commit is not None else None
        self._default_rollback = default_rollback

    async def settle(self) -> None:
        """Wait until the ``on_commit`` record of every change made so far is written."""
        if self._bookkeeper is not None:
            await self._bookkeeper.settle()

    async def seed(self, states: dict[str, RouteState]) -> None:
        """Create the routes of ``states`` that do not exist yet (the routes file at start);
        a route naming no rollback target gets its live adapter's card default.

        Every adapter the new routes reference must be known (registered, not retired), else
        ``AdapterNotFound`` names the route and the adapters and nothing is written: a bad
        routes file must not reach the other replicas through the shared store. Routes that
        exist already keep their stored state and are not checked.
        """
        new = {r: s for r, s in states.items() if self.store.get(r) is None}
        await self.store.seed(await asyncio.to_thread(self._checked_seed, new))

    def _checked_seed(self, new: dict[str, RouteState]) -> dict[str, RouteState]:
        if self._known is not None:
            check_route_adapters(new, self._known())
        return {r: self._with_default_rollback(s) for r, s in new.items()}

    def _with_default_rollback(self, state: RouteState) -> RouteState:
        if state.rollback_target is not None:
            return state
        target = self.card_rollback(state.live)
        if target is None:
            return state
        return state.model_copy(update={"rollback_target": target})

    def card_rollback(self, adapter_id: str) -> str | None:
        if self._default_rollback is None:
            return None
        try:
            target = self._default_rollback(adapter_id)
        except Exception:  # the registry is advice here; a broken card must not block
            log.exception("default rollback target of %s unavailable", adapter_id)
            return None
        if target is None or target == adapter_id:
            return None
        if self._known is not None and target not in self._known():
            log.warning("model card of %s names rollback target %s, which is unknown or "
                        "retired; ignored", adapter_id, target)
            return None
        return target

    # reads
    def routes(self) -> list[RouteState]:
        return [s for _, s in sorted(self.store.all().items())]

    def show(self, route: str) -> RouteState:
        state = self.store.get(route)
        if state is None:
            raise RouteNotFound(f"no route {route!r}", route=route)
        return state

    async def audit(self, route: str, limit: int = 1000) -> list[AuditEntry]:
        self.show(route)
        return await self.store.audit(route, limit)

    # changes: one per action of router.flags.actions
    async def apply(
        self, action: str, route: str, *, actor: str, reason: str,
        expected_version: int | None = None, **params: Any,
    ) -> ChangeResult:
        """Run the action named ``action`` (:data:`~router.flags.actions.ACTIONS`) on
        ``route`` with its ``params``; the named methods below are typed shortcuts."""
        spec = action_spec(action)
        spec.check_params(params)

        def build(cur: RouteState) -> dict[str, Any]:
            return spec.build(self, cur, **params)

        return await self._change(route, spec.name, build, actor, reason, expected_version,
                                  checked=spec.checked)

    async def rollback(self, route: str, *, actor: str, reason: str, **kw: Any) -> ChangeResult:
        """Abort a canary/shadow if one is set (live stays); else live := rollback target
        (the route's, else the live adapter's model card default)."""
        return await self.apply("rollback", route, actor=actor, reason=reason, **kw)

    async def canary(
        self, route: str, adapter: str, percent: float, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """Send ``percent`` % of keys (sticky) to ``adapter``."""
        return await self.apply("canary", route, actor=actor, reason=reason, adapter=adapter,
                                percent=percent, **kw)

    async def shadow(
        self, route: str, adapter: str, percent: float, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """Copy ``percent`` % of requests to ``adapter`` in the background (never returned)."""
        return await self.apply("shadow", route, actor=actor, reason=reason, adapter=adapter,
                                percent=percent, **kw)

    async def promote(self, route: str, *, actor: str, reason: str, **kw: Any) -> ChangeResult:
        """The canary becomes live; the old live becomes the rollback target."""
        return await self.apply("promote", route, actor=actor, reason=reason, **kw)

    async def set_live(
        self, route: str, adapter: str, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """``adapter`` serves all traffic; the old live becomes the rollback target."""
        return await self.apply("set-live", route, actor=actor, reason=reason, adapter=adapter,
                                **kw)

    async def set_policy(
        self, route: str, text: str, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """``text`` becomes the route's policy, as its next policy version
        (:mod:`router.flags.policy_text`); ``LimitExceeded`` over ``max_policy_chars``."""
        return await self.apply("set-policy", route, actor=actor, reason=reason, text=text,
                                **kw)

    async def clear_policy(
        self, route: str, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """Remove the route's policy text (its version number is not reused)."""
        return await self.apply("clear-policy", route, actor=actor, reason=reason, **kw)

    async def _change(
        self,
        route: str,
        action: str,
        build: Build,
        actor: str,
        reason: str,
        expected_version: int | None = None,
        *,
        checked: bool = True,
    ) -> ChangeResult:
        if not reason.strip():
            raise InvalidRequest("a reason is required for every route change")
        if not actor.strip():
            raise InvalidRequest("an actor is required for every route change")
        current = self.show(route)
        if expected_version is not None and expected_version != current.version:
            raise VersionConflict(
                f"route {route!r} is at version {current.version}, not {expected_version}",
                route=route, expected=expected_version, found=current.version,
            )
        changes = {"updated_by": actor, "reason": reason}
        new = await asyncio.to_thread(self._plan, current, build, changes, checked)
        added = new.referenced_adapters() - current.referenced_adapters()
        t0 = time.perf_counter()
        if added and self._prepare is not None:
            await self._prepare(added)
        t1 = time.perf_counter()
        async with self._watch(route) as watch:
            committed = await self.store.put(new, current.version, action)
            t2, committed_at = time.perf_counter(), datetime.now(UTC)
            applied = None
            if watch is not None:
                applied = await watch.wait(
                    committed.version, since=t2, timeout_s=self._apply_timeout_s
                )
        if self._bookkeeper is not None:  # after the answer: it must not delay the flip
            self._bookkeeper.submit(current, committed)
        return ChangeResult(committed, action, (t1 - t0) * 1e3, (t2 - t1) * 1e3, applied,
                            committed_at)

    def _plan(
        self, current: RouteState, build: Build, changes: dict[str, Any], checked: bool
    ) -> RouteState:
        """The new state, checked (worker thread: ``build`` and the check read cards)."""
        new = _evolve(current, {**build(current), **changes})
        if checked:  # not a rollback (it must always work) nor a policy change
            added = new.referenced_adapters() - current.referenced_adapters()
            self._check_known(added | new.serving_adapters())
        return new

    def _check_known(self, adapters: set[str]) -> None:
        if not adapters or self._known is None:
            return
        unknown = sorted(adapters - self._known())
        if unknown:
            raise AdapterNotFound(
                f"unknown or retired adapter(s): {', '.join(unknown)}", adapters=unknown
            )

    @asynccontextmanager
    async def _watch(self, route: str) -> AsyncIterator[AppliedWatch | None]:
        if self._replicas is None:
            yield None
            return
        async with self._replicas.watch_applied(route) as watch:
            yield watch

    # --- the drift guard (router.drift): its policy, and its containment action ---------

    async def set_guard(
        self, route: str, guard: GuardPolicy | None, *, actor: str, reason: str, **kw: Any
    ) -> ChangeResult:
        """Set the route's drift guard policy (None removes it), versioned and audited."""
        return await self.apply("set-guard", route, actor=actor, reason=reason, guard=guard,
                                **kw)

    async def contain(
        self, route: str, adapter: str, *, actor: str, reason: str, expected_version: int
    ) -> ChangeResult:
        """Take ``adapter`` out of the route's traffic with a compare-and-set on
        ``expected_version`` (``VersionConflict`` when the route moved on): a canary or
        shadow naming it is cleared and live stays; if it is live, live becomes the rollback
        target (the route's, else its model card's) and splits naming that target are
        dropped. Recorded as a ``rollback``. ``RouteChangeRefused`` when ``adapter`` serves
        no traffic on the route, or is live with no rollback target."""

        def build(cur: RouteState) -> dict[str, Any]:
            changes: dict[str, Any] = {
                arm: None for arm in ("canary", "shadow")
                if (split := getattr(cur, arm)) is not None and split.adapter == adapter
            }
            if cur.live == adapter:
                target = cur.rollback_target or self.card_rollback(cur.live)
                if target is None:
                    raise RouteChangeRefused(
                        f"route {cur.route!r}: no rollback target for {adapter}", route=route
                    )
                changes.update(live=target, rollback_target=None)
                for arm in ("canary", "shadow"):
                    split = getattr(cur, arm)
                    if split is not None and split.adapter == target:
                        changes[arm] = None
            refuse_if(not changes, f"{adapter} serves no traffic on route {cur.route!r}")
            return changes

        return await self._change(
            route, "rollback", build, actor, reason, expected_version, checked=False
        )


def _evolve(cur: RouteState, changes: dict[str, Any]) -> RouteState:
    """A validated copy (``model_copy`` would skip the validators)."""
    try:
        return RouteState.model_validate({**cur.model_dump(), **changes})
    except ValidationError as exc:
        raise InvalidRequest(f"invalid route state: {first_error(exc)}") from exc
