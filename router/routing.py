"""Choosing the arm that serves a request: live, or canary by sticky hashing.

The bucket of a key is a pure function of (route, key), so the same key lands on the same
arm on every replica and after restarts, and raising the canary percent only moves keys
from live to canary (a key is in the canary iff its bucket < percent).

Which state a request is routed by is :class:`ServingRoutes`'s choice: the newest this
replica applied, unless that one names an adapter it has not loaded yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lora_router.router.flags import metrics
from lora_router.router.flags.policy_text import PolicyText, policy_label
from lora_router.router.flags.state import Arm, RouteState
from lora_router.router.flags.store import RouteStore

Missing = Callable[[Iterable[str]], set[str]]
_HISTORY = 8  # earlier versions kept per route to fall back on while loading

_BUCKETS = 10_000


def bucket(route: str, key: str) -> int:
    """Stable bucket in [0, 10000) for (route, key)."""
    digest = hashlib.blake2b(f"{route}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


def shadow_bucket(route: str, key: str) -> int:
    digest = hashlib.blake2b(f"shadow\0{route}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


@dataclass(frozen=True, slots=True)
class Decision:
    route: str | None  # None when the request pinned an adapter id or the base
    arm: Arm
    adapter_id: str | None  # None = plain base
    flag_version: int | None
    shadow_adapter: str | None = None  # also send a background copy here
    policy: PolicyText | None = None  # the route's policy text, applied to the prompt

    @property
    def policy_version(self) -> str | None:
        """``support-triage/policy@3``: the log's ``policy_version``, ``x-policy-version``."""
        if self.policy is None or self.route is None:
            return None
        return policy_label(self.route, self.policy.version)


def choose(state: RouteState, key: str) -> Decision:
    """Pick live or canary for ``key``; add the shadow adapter when the key is sampled."""
    b = bucket(state.route, key)
    adapter, arm = state.live, "live"
    if state.canary is not None and b < state.canary.percent * (_BUCKETS / 100):
        adapter, arm = state.canary.adapter, "canary"
    shadow = None
    if state.shadow is not None and shadow_bucket(state.route, key) < state.shadow.percent * (
        _BUCKETS / 100
    ):
        shadow = state.shadow.adapter if state.shadow.adapter != adapter else None
    return Decision(  # every arm, the shadow copy too, is served under the route's policy
        state.route, arm, adapter, state.version, shadow, state.policy  # type: ignore[arg-type]
    )


class ServingRoutes:
    """The route state each request is served from: the newest state this replica applied,
    or, while that one names an adapter (live, canary or shadow) that is not resident here
    (it is loading: a change that reached the replica before its load, e.g. right after
    Redis lost its data, or one written without the two-phase gate), the newest earlier
    version whose adapters all are. So a replica never answers ``adapter_not_resident``
    for a route it could serve as it was; ``x-flag-version`` names the version that served.

    ``missing(ids)``: the ids not resident now (``Residency.missing``). Reads take no lock:
    the history per route is replaced, never mutated, by the store's listener (which runs
    serialised, under the snapshot's lock).
    """

    def __init__(self, store: RouteStore, missing: Missing) -> None:
        self._store = store
        self._missing = missing
        self._history: dict[str, tuple[RouteState, ...]] = {}  # route -> newest first
        for state in store.all().values():
            self._history[state.route] = (state,)
        store.subscribe(self._on_change)

    def _on_change(self, state: RouteState) -> None:
        kept = self._history.get(state.route, ())
        self._history[state.route] = (state, *kept)[:_HISTORY]

    def get(self, route: str) -> RouteState | None:
        """The state to serve ``route`` by (None: no such route)."""
        state = self._store.get(route)
        if state is None or not self._missing(state.serving_adapters()):
            return state
        for earlier in self._history.get(route, ()):
            if earlier.version < state.version and not self._missing(earlier.serving_adapters()):
                metrics.ROUTE_FALLBACKS.labels(route).inc()
                return earlier
        return state  # nothing servable: the engine answers adapter_not_resident
