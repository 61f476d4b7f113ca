"""What a route change records after it was answered: the ``on_commit`` hook, off the path.

The on-call's change is answered as soon as every replica applied it. What the registry
records about it (model-card status and history, :mod:`router.flags.route_status`) is written
afterwards, by one background task that calls the hook in a worker thread, never on the
event loop. Changes queued while a call runs are coalesced per route: the hook gets the
first queued change's ``before`` and the last one's ``after``; the card rule depends on the
routes in force, so the cards end the same as with one call per change (their history
names the last change). :meth:`Bookkeeper.settle` waits until everything queued was
written: the CLI before it exits, the gateway before it stops, tests before they look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lora_router.router.flags.state import RouteState

log = logging.getLogger(__name__)

Hook = Callable[[RouteState | None, RouteState], None]
Change = tuple[RouteState | None, RouteState]


def coalesce(changes: list[Change]) -> list[Change]:
    """One ``(before, after)`` per route, first ``before`` and last ``after``, in the order
    routes first appear."""
    merged: dict[str, Change] = {}
    for before, after in changes:
        first = merged.get(after.route)
        merged[after.route] = (first[0] if first is not None else before, after)
    return list(merged.values())


class Bookkeeper:
    """Runs ``hook(before, after)`` after changes, in the background (module docstring).

    The hook's exceptions are logged, never raised: the change is committed already.
    """

    def __init__(self, hook: Hook) -> None:
        self._hook = hook
        self._pending: list[Change] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0  # hook calls made (coalesced changes count once)

    def submit(self, before: RouteState | None, after: RouteState) -> None:
        """Queue a committed change (event-loop thread); returns at once."""
        self._pending.append((before, after))
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="route-bookkeeping")

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def settle(self) -> None:
        """Wait until every queued change has been handed to the hook and it returned."""
        while (task := self._task) is not None and not task.done():
            if task.get_loop() is not asyncio.get_running_loop():
                return  # queued in a loop that is gone: nothing here can run it
            await asyncio.shield(task)

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = coalesce(self._pending), []
            for before, after in batch:
                await asyncio.to_thread(self._call, before, after)

    def _call(self, before: RouteState | None, after: RouteState) -> None:
        self.calls += 1
        try:
            self._hook(before, after)
        except Exception:  # bookkeeping after the fact never fails the change
            log.exception("on_commit hook failed for %s v%s", after.route, after.version)
