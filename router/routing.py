"""Choosing the arm that serves a request: live, or canary by sticky hashing.

The bucket of a key is a pure function of (route, key), so the same key lands on the same
arm on every replica and after restarts, and raising the canary percent only moves keys
from live to canary (a key is in the canary iff its bucket < percent).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from router.flags.state import Arm, RouteState

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
    return Decision(state.route, arm, adapter, state.version, shadow)  # type: ignore[arg-type]
