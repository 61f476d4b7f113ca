"""The guard: acts on quality alerts through the route service, as the on-call would.

For each group of pending alerts on one (route, adapter, arm), with the route's policy
(``RouteState.guard``):

- no policy, or ``auto_rollback`` off: nothing is changed (``off``);
- the adapter no longer serves that arm (someone already acted, or the route moved on):
  nothing to do (``stale``);
- else :meth:`RouteService.contain` as actor ``guard``, the alerts as the reason, with a
  compare-and-set on the route version the monitor observed when it raised them: a live
  adapter is rolled back to the rollback target; a canary or shadow split is cleared and
  live is left alone. If the route's version moved since, the change is refused
  (``conflict``) and nothing happens: acting twice on one alert, or two monitors both
  acting on the same breach, cannot change the route twice.

Every action opens an incident (or extends the one open for that adapter), with the
alerts, the action, the versions before and after, and how long the replicas took to apply
it; an action the route service refuses (no rollback target) opens one too, to be handled
by hand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lora_router.ground.errors import FlagStoreUnavailable, RouteChangeRefused, VersionConflict
from lora_router.router.drift import alerts as metrics
from lora_router.router.drift.events import Alert, GuardStatus, IncidentStatus
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.route_service import ChangeResult, RouteService
from lora_router.router.flags.state import RouteState

log = logging.getLogger(__name__)

ACTOR = "guard"
_MAX_REASON = 480


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    route: str
    model_id: str
    arm: str | None
    alert_ids: list[int]
    status: GuardStatus
    detail: str
    incident_id: int | None = None


def serving_arm(state: RouteState, adapter: str, arm: str | None) -> bool:
    """Does ``adapter`` still serve ``arm`` of the route?"""
    if arm == "live":
        return state.live == adapter
    split = state.canary if arm == "canary" else state.shadow if arm == "shadow" else None
    return split is not None and split.adapter == adapter


def decide(state: RouteState | None, alerts: list[Alert]) -> tuple[GuardStatus, str]:
    """What to do with a group of alerts on one (route, adapter, arm): ``pending`` means
    act; anything else is the final status, with why."""
    first = alerts[0]
    if state is None:
        return "stale", f"route {first.route!r} no longer exists"
    if state.guard is None or not state.guard.auto_rollback:
        return "off", "auto-rollback is off for this route"
    if not serving_arm(state, first.model_id, first.arm):
        return "stale", f"{first.model_id} no longer serves the {first.arm} arm"
    return "pending", "act"


def reason_for(alerts: list[Alert]) -> str:
    ids = ", ".join(f"#{a.id}" for a in alerts)
    text = f"drift guard, alert {ids}: {alerts[0].summary()}"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class Guard:
    """Handles the store's pending alerts (see the module docstring). ``outbox``: queue
    each incident for the webhook."""

    def __init__(self, service: RouteService, store: DriftStore, *, outbox: bool = False,
                 actor: str = ACTOR) -> None:
        self.service = service
        self.store = store
        self.outbox = outbox
        self.actor = actor

    async def run(self) -> list[GuardOutcome]:
        """Handle every pending alert, grouped by (route, adapter, arm)."""
        groups: dict[tuple[str, str, str | None], list[Alert]] = defaultdict(list)
        for alert in await self.store.pending_alerts():
            groups[(alert.route, alert.model_id, alert.arm)].append(alert)
        return [await self.handle(group) for group in groups.values()]

    async def handle(self, alerts: list[Alert]) -> GuardOutcome:
        """Decide and act on alerts of one (route, adapter, arm)."""
        first = alerts[0]
        ids = [a.id for a in alerts]
        status, detail = decide(self.service.store.get(first.route), alerts)
        if status != "pending":
            return await self._settle(alerts, status, detail)
        observed = max((a.route_version for a in alerts if a.route_version is not None),
                       default=None)
        if observed is None:
            return await self._settle(alerts, "stale", "the alert recorded no route version")
        try:
            result = await self.service.contain(
                first.route, first.model_id, actor=self.actor, reason=reason_for(alerts),
                expected_version=observed,
            )
        except VersionConflict as exc:
            return await self._settle(alerts, "conflict", exc.message)
        except FlagStoreUnavailable as exc:  # left pending: the next round retries
            log.warning("drift guard cannot reach the route store: %s", exc.message)
            return GuardOutcome(first.route, first.model_id, first.arm, ids, "pending",
                                exc.message)
        except RouteChangeRefused as exc:
            return await self._incident(alerts, _action(first, observed, None, exc.message),
                                        "open", "failed")
        return await self._incident(alerts, _action(first, observed, result, "done"),
                                    "contained", "acted")

    async def _settle(self, alerts: list[Alert], status: GuardStatus,
                      detail: str) -> GuardOutcome:
        first = alerts[0]
        ids = [a.id for a in alerts]
        await self.store.set_guard_status(ids, status, detail)
        metrics.GUARD_ACTIONS.labels(first.route, status).inc()
        log.info("drift guard: alerts %s on %s %s: %s (%s)", ids, first.route, first.model_id,
                 status, detail)
        return GuardOutcome(first.route, first.model_id, first.arm, ids, status, detail)

    async def _incident(self, alerts: list[Alert], action: dict[str, Any],
                        status: IncidentStatus, guard_status: GuardStatus) -> GuardOutcome:
        first = alerts[0]
        ids = [a.id for a in alerts]
        incident = await self.store.record_incident(
            route=first.route, model_id=first.model_id, arm=first.arm, alert_ids=ids,
            action=action, status=status,
            guard_status=guard_status, summary=first.summary(), outbox=self.outbox,
        )
        metrics.GUARD_ACTIONS.labels(first.route, guard_status).inc()
        log.warning("drift guard: incident %s on %s: %s %s (%s)", incident.id, first.route,
                    action["kind"], first.model_id, action["detail"])
        return GuardOutcome(first.route, first.model_id, first.arm, ids, guard_status,
                            str(action["detail"]), incident.id)


def _action(alert: Alert, observed: int, result: ChangeResult | None,
            detail: str) -> dict[str, Any]:
    kind = "rollback" if alert.arm == "live" else f"clear_{alert.arm}"
    action: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(), "actor": ACTOR, "kind": kind,
        "adapter": alert.model_id, "arm": alert.arm, "route_version_before": observed,
        "ok": result is not None, "detail": detail,
    }
    if result is not None:
        action["route_version_after"] = result.state.version
        action["live_after"] = result.state.live
        action["commit_ms"] = round(result.commit_ms, 3)
        applied = result.applied
        action["applied_ms"] = None if applied is None else applied.elapsed_ms
        action["replicas_pending"] = [] if applied is None else list(applied.pending)
    return action
