"""The thread that keeps a process's route snapshot in step with Redis.

It owns its own (synchronous) connections so that a busy event loop cannot delay a flip:
it subscribes to the changes channel *first*, then reads every route (so no change can
fall between the two), applies each published state as it arrives, and re-reads all
routes every ``resync_s`` so a missed message heals. When Redis goes away the snapshot
stays as it was (fail-static); the thread reconnects with bounded, jittered backoff and
resyncs. After a resync it writes back any route Redis lost or holds at a lower version
(``RESTORE``: Redis here keeps nothing on disk). With a ``replica_id`` it records, for
each route, the version it applied (``applied_key``) and announces it on the applied
channel, which is how a writer learns that every replica has a change.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import redis
from pydantic import ValidationError

from router.flags import keys, metrics, scripts
from router.flags.snapshot import Snapshot
from router.flags.state import RouteState

log = logging.getLogger(__name__)

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_POLL_S = 0.1  # how often the thread checks for stop / resync while idle
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


class FlagListener(threading.Thread):
    """Applies Redis route changes to ``snapshot``; see the module docstring."""

    def __init__(
        self,
        url: str,
        snapshot: Snapshot,
        *,
        resync_s: float,
        timeout_s: float,
        replica_id: str | None = None,
    ) -> None:
        super().__init__(name="lora-router-flags", daemon=True)
        self._url = url
        self._snapshot = snapshot
        self._resync_s = resync_s
        self._timeout_s = timeout_s
        self._replica_id = replica_id
        self._stop_event = threading.Event()
        self._reported: dict[str, int] = {}
        self.synced = threading.Event()  # set after the first successful resync
        self.connected = False
        self.last_sync_at: datetime | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        backoff = _BACKOFF_MIN_S
        first = True
        while not self._stop_event.is_set():
            client = redis.Redis.from_url(
                self._url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
            )
            try:
                self._serve(client)
            except NETWORK_ERRORS as exc:
                if self.connected or first:
                    log.warning("route flags: lost Redis (%s); serving the last-known state", exc)
                self._set_connected(False)
            finally:
                client.close()
            first = False
            if self._stop_event.wait(backoff * random.uniform(0.5, 1.0)):
                break
            metrics.FLAGS_RECONNECTS.inc()
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
        self._set_connected(False)

    def _serve(self, client: redis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(keys.CHANGES_CHANNEL)
            self._resync(client)
            next_resync = time.monotonic() + self._resync_s
            while not self._stop_event.is_set():
                wait = max(0.0, min(_POLL_S, next_resync - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
                if message is not None and message["type"] == "message":
                    self._on_message(message["data"])
                    self._report(client)
                if time.monotonic() >= next_resync:
                    self._resync(client)
                    next_resync = time.monotonic() + self._resync_s
        finally:
            pubsub.close()

    def _on_message(self, data: bytes) -> None:
        try:
            state = RouteState.model_validate_json(data)
        except ValidationError:
            log.exception("route flags: ignoring an invalid state message")
            return
        if self._snapshot.apply(state):
            metrics.FLAGS_APPLIED.labels("message").inc()

    def _resync(self, client: redis.Redis) -> None:
        stored: dict[str, int] = {}
        for field, raw in client.hgetall(keys.ROUTES).items():
            try:
                state = RouteState.model_validate_json(raw)
            except ValidationError:
                log.error("route flags: invalid state for %r in Redis; ignored", field)
                continue
            stored[state.route] = state.version
            if self._snapshot.apply(state):
                metrics.FLAGS_APPLIED.labels("resync").inc()
        self._restore(client, stored)
        self._report(client)
        self.last_sync_at = datetime.now(UTC)
        metrics.FLAGS_LAST_SYNC.set(self.last_sync_at.timestamp())
        self._set_connected(True)
        self.synced.set()

    def _restore(self, client: redis.Redis, stored: dict[str, int]) -> None:
        for route, state in self._snapshot.all().items():
            if stored.get(route, 0) < state.version:
                log.warning(
                    "route flags: Redis holds %s at v%s, we hold v%s; restoring ours",
                    route, stored.get(route, 0), state.version,
                )
                client.eval(
                    scripts.RESTORE, 3, *scripts.script_keys(route),
                    *scripts.script_args(state, "restore"),
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
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.applied_key(self._replica_id), mapping=cast("dict[Any, Any]", fresh))
        for route, version in fresh.items():
            msg = {"replica": self._replica_id, "route": route, "version": version, "at": at}
            pipe.publish(keys.APPLIED_CHANNEL, json.dumps(msg))
        pipe.execute()
        self._reported.update(fresh)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        metrics.FLAGS_CONNECTED.set(1 if value else 0)
