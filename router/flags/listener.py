"""The thread that keeps a process's route snapshot in step with Redis.

It runs on a synchronous client of its own
(:func:`router.flags.redis_client.listener_client`), so that a busy event loop cannot delay
a flip: it subscribes to the changes channel *first*, then reads every route (so no change
can fall between the two), applies each published state as it arrives, and re-reads all
routes every ``resync_s`` so a missed message heals. When Redis goes away the snapshot
stays as it was (fail-static); the thread reconnects with bounded, jittered backoff and
resyncs. After a resync it writes back any route Redis lost or holds at a lower version
(``RESTORE``: Redis here keeps nothing on disk). With a ``replica_id`` it records, for
each route, the version it applied (``applied_key``) and announces it on the applied
channel, which is how a writer learns that every replica has a change.

The thread survives every error (:mod:`router.flags.loops`): a network error or an
unexpected answer while syncing reconnects after a jittered backoff; a malformed message
is skipped; a write that fails (``READONLY`` during a failover, for the restore or the
applied report) is counted and retried at the next message or resync, while the snapshot
keeps applying changes. :meth:`status` tells ``/readyz``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import redis
from pydantic import ValidationError

from lora_router.router.flags import keys, metrics, scripts
from lora_router.router.flags.loops import NETWORK_ERRORS, REDIS_ERRORS, LoopHealth, LoopStatus
from lora_router.router.flags.snapshot import Snapshot
from lora_router.router.flags.state import RouteState

__all__ = ["NETWORK_ERRORS", "REDIS_ERRORS", "FlagListener"]

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often the thread checks for stop / resync while idle


class FlagListener(threading.Thread):
    """Applies Redis route changes to ``snapshot``; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        snapshot: Snapshot,
        *,
        resync_s: float,
        replica_id: str | None = None,
    ) -> None:
        super().__init__(name="lora-router-flags", daemon=True)
        self._client = client  # used by this thread only; its owner closes it after join()
        self._snapshot = snapshot
        self._resync_s = resync_s
        self._replica_id = replica_id
        self._stop_event = threading.Event()
        self._reported: dict[str, int] = {}
        self.health = LoopHealth("flags_listener")
        self.synced = threading.Event()  # set after the first successful resync
        self.connected = False
        self.last_sync_at: datetime | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def status(self) -> LoopStatus:
        return self.health.status(self.is_alive())

    def run(self) -> None:
        with self.health.running():
            self._run()
        self._set_connected(False)

    def _run(self) -> None:
        while not self._stop_event.is_set():
            try:
                try:
                    self._serve(self._client)
                finally:  # the next round starts on fresh connections
                    self._client.connection_pool.disconnect()
            except Exception as exc:  # every error class: back off, reconnect, resync
                self._set_connected(False)
                backoff = self.health.failed(
                    exc, "out of sync with Redis; serving the last-known state"
                )
            else:
                backoff = 0.0
            if self._stop_event.wait(backoff):
                break
            metrics.FLAGS_RECONNECTS.inc()

    def _serve(self, client: redis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(keys.channel(keys.CHANGES_CHANNEL, client))
            self._resync(client)
            next_resync = time.monotonic() + self._resync_s
            while not self._stop_event.is_set():
                wait = max(0.0, min(_POLL_S, next_resync - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
                if message is not None and message["type"] == "message":
                    self._on_message(message["data"])
                    self._best_effort(self._report, client, "reporting applied versions")
                if time.monotonic() >= next_resync:
                    self._resync(client)
                    next_resync = time.monotonic() + self._resync_s
        finally:
            pubsub.close()

    def _on_message(self, data: bytes) -> None:
        try:
            state = RouteState.model_validate_json(data)
        except (ValidationError, ValueError, TypeError) as exc:
            self.health.noted(exc, f"ignoring an invalid state message {data[:200]!r}")
            return
        if self._snapshot.apply(state):
            metrics.FLAGS_APPLIED.labels("message").inc()

    def _resync(self, client: redis.Redis) -> None:
        stored: dict[str, int] = {}
        for field, raw in client.hgetall(keys.ROUTES).items():
            try:
                state = RouteState.model_validate_json(raw)
            except ValidationError as exc:
                self.health.noted(exc, f"invalid state for {field!r} in Redis; ignored")
                continue
            stored[state.route] = state.version
            if self._snapshot.apply(state):
                metrics.FLAGS_APPLIED.labels("resync").inc()
        self._best_effort(lambda c: self._restore(c, stored), client, "restoring routes")
        self._best_effort(self._report, client, "reporting applied versions")
        self.health.succeeded()
        self.last_sync_at = datetime.now(UTC)
        metrics.FLAGS_LAST_SYNC.set(self.last_sync_at.timestamp())
        self._set_connected(True)
        self.synced.set()

    def _best_effort(
        self, fn: Callable[[redis.Redis], None], client: redis.Redis, what: str
    ) -> None:
        """Run a write the snapshot does not depend on; a network error still ends the
        connection (reconnect and resync), any other error is counted and the write is
        retried at the next message or resync."""
        try:
            fn(client)
        except NETWORK_ERRORS:
            raise
        except Exception as exc:  # e.g. READONLY while Redis fails over
            self.health.noted(exc, what)

    def _restore(self, client: redis.Redis, stored: dict[str, int]) -> None:
        for route, state in self._snapshot.all().items():
            if stored.get(route, 0) < state.version:
                log.warning(
                    "route flags: Redis holds %s at v%s, we hold v%s; restoring ours",
                    route, stored.get(route, 0), state.version,
                )
                client.eval(
                    scripts.RESTORE, 3, *scripts.script_keys(route),
                    *scripts.script_args(
                        state, "restore", keys.channel(keys.CHANGES_CHANNEL, client)),
                )

    def _report(self, client: redis.Redis) -> None:
        """Record and announce the versions this replica applied since the last report."""
        if self._replica_id is None:
            return
        fresh = {
            r: v for r, v in self._snapshot.versions().items() if v > self._reported.get(r, 0)
        }
        if not fresh:
            return
        at = time.time()
        applied = keys.channel(keys.APPLIED_CHANNEL, client)
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.applied_key(self._replica_id), mapping=cast("dict[Any, Any]", fresh))
        for route, version in fresh.items():
            msg = {"replica": self._replica_id, "route": route, "version": version, "at": at}
            pipe.publish(applied, json.dumps(msg))
        pipe.execute()
        self._reported.update(fresh)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        metrics.FLAGS_CONNECTED.set(1 if value else 0)
