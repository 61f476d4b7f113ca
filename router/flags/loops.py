"""Liveness of a replica's long-lived loops: flag listener, heartbeat, load responder,
reconciler.

Each loop survives every error class and every malformed message: it logs, counts the
error here (:meth:`LoopHealth.failed`), backs off and goes on. What can still stop one is a
shutdown, or a bug that escapes that net; ``/readyz`` then reports it (not ready while a
loop is dead) and so do the metrics ``lora_router_loop_alive{loop}`` and
``lora_router_loop_errors_total{loop,kind}``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from lora_router.router.flags import metrics

log = logging.getLogger(__name__)

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
# what a Redis call can raise: the network, and answers such as READONLY during a failover
REDIS_ERRORS = (redis.RedisError, OSError)

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of an error: network | redis | malformed | other."""
    if isinstance(exc, NETWORK_ERRORS):
        return "network"
    if isinstance(exc, redis.RedisError):
        return "redis"
    if isinstance(exc, ValidationError | ValueError):
        return "malformed"
    return "other"


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """One loop's liveness and error history (the ``loops`` part of ``/readyz``)."""

    name: str
    alive: bool
    errors: int
    last_error: str | None
    last_error_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


class LoopHealth:
    """Error bookkeeping and backoff for one loop (thread-safe enough: one writer)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._consecutive = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Wrap the loop's body: the alive gauge is 1 inside, 0 once it ends, however."""
        metrics.LOOP_ALIVE.labels(self.name).set(1)
        try:
            yield
        except Exception:  # escaped the loop's own handling: a bug; /readyz says so
            log.exception("loop %s stopped by an error", self.name)
            raise
        finally:
            metrics.LOOP_ALIVE.labels(self.name).set(0)

    def failed(self, exc: BaseException, what: str) -> float:
        """Record an error and log it (the first of a streak as a warning, with its
        traceback unless it is a network error; the rest at debug level, so an outage does
        not flood the log); return how long to back off (jittered, growing per streak)."""
        kind = error_kind(exc)
        self.errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"[:500]
        self.last_error_at = datetime.now(UTC)
        metrics.LOOP_ERRORS.labels(self.name, kind).inc()
        if self._consecutive > 0:
            log.debug("%s: %s", self.name, self.last_error)
        elif kind in ("network", "malformed"):
            log.warning("%s: %s", self.name, self.last_error)
        else:
            log.warning("%s: %s", self.name, self.last_error, exc_info=exc)
        self._consecutive += 1
        delay: float = min(_BACKOFF_MIN_S * 2.0 ** (self._consecutive - 1), _BACKOFF_MAX_S)
        return delay * random.uniform(0.5, 1.0)

    def noted(self, exc: BaseException, what: str) -> None:
        """Record an error that needs no backoff (one bad message, one failed side write):
        counted, and logged as a warning unless it repeats the last one."""
        kind = error_kind(exc)
        text = f"{what}: {type(exc).__name__}: {exc}"[:500]
        repeat = text == self.last_error
        self.errors += 1
        self.last_error, self.last_error_at = text, datetime.now(UTC)
        metrics.LOOP_ERRORS.labels(self.name, kind).inc()
        if repeat:
            log.debug("%s: %s", self.name, text)
        else:
            log.warning("%s: %s", self.name, text, exc_info=kind in ("redis", "other"))

    def succeeded(self) -> None:
        self._consecutive = 0

    def status(self, alive: bool) -> LoopStatus:
        return LoopStatus(self.name, alive, self.errors, self.last_error, self.last_error_at)
