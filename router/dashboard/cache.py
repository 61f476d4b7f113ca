"""A small time-to-live cache with one computation in flight per key.

However many dashboards poll, each part of the state is computed at most once per
``ttl_s`` per key: callers arriving while it is being computed wait for that result
instead of starting their own query. A value computed under another ``stamp`` (e.g. a
route's version) is stale at once. A failed computation is not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class TtlCache(Generic[T]):
    def __init__(
        self, ttl_s: float, *, max_keys: int = 16, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._values: dict[Hashable, tuple[float, Hashable, T]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def get(
        self, key: Hashable, compute: Callable[[], Awaitable[T]], stamp: Hashable = None
    ) -> T:
        """The value for ``key``: cached if fresh, else computed (once, for every waiter)."""
        hit = self._fresh(key, stamp)
        if hit is not None:
            return hit[2]
        if len(self._locks) >= self._max_keys and key not in self._locks:
            self._values.clear()  # a handful of keys in practice: bounded all the same
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._fresh(key, stamp)  # computed while this caller waited
            if hit is not None:
                return hit[2]
            value = await compute()
            self._values[key] = (self._clock(), stamp, value)
            return value

    def _fresh(self, key: Hashable, stamp: Hashable) -> tuple[float, Hashable, T] | None:
        hit = self._values.get(key)
        if hit is not None and hit[1] == stamp and self._clock() - hit[0] < self.ttl_s:
            return hit
        return None
