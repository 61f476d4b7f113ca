"""Webhook delivery from the outbox, against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lora_router.router.drift.alerts import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    OutboxDelivery,
    WebhookSender,
    verify,
)
from lora_router.router.drift.events import AlertIn
from lora_router.router.drift.store import DriftStore
from tests.conftest import free_port
from tests.drift.conftest import ROUTE, V2, FrozenClock, LogDb

SECRET = b"s3cret"


@dataclass
class Receiver:
    """A webhook endpoint that refuses its first ``fail_first`` calls with a 500."""

    port: int
    fail_first: int = 0
    calls: list[tuple[str, bytes, bool]] = field(default_factory=list)  # event, body, sig ok
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                ok = verify(SECRET, body, self.headers.get(SIGNATURE_HEADER, ""))
                receiver.calls.append((self.headers.get(EVENT_HEADER, ""), body, ok))
                failing = len(receiver.calls) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port(), fail_first=1)
    r.start()
    yield r
    r.stop()


async def queue_alerts(store: DriftStore, n: int) -> list[int]:
    cp = await store.load_checkpoint()
    alerts = [AlertIn(
        created_at=datetime(2026, 11, 1, tzinfo=UTC), route=ROUTE, model_id=V2, arm="canary",
        signal="slice_quality", detector="language=es", method="bernoulli-cusum",
        severity="critical", window_start=None, window_end=None, n=20 + i, estimate=0.6,
        bound=0.75, statistic=6.0, threshold=5.9, baseline=0.87, evidence={"i": i},
        route_version=1, guard_status="pending") for i in range(n)]
    stored = await store.commit_tick(cp, cp.version, alerts, holder="t", outbox=True)
    return [a.id for a in stored]


async def test_a_failing_webhook_gets_every_event_once_it_answers(
        logdb: LogDb, receiver: Receiver, clock: FrozenClock) -> None:
    ids = await queue_alerts(logdb.store, 3)
    sender = WebhookSender(receiver.url, SECRET, timeout_s=5)
    delivery = OutboxDelivery(logdb.store, sender, initial_s=1.0, clock=clock)
    try:
        assert await delivery.run() == 0  # the first call fails: it waits 1 s, the round ends
        assert await delivery.run() == 2  # the others were due, and the webhook is back
        assert [i.ref_id for i in await logdb.store.outbox("pending")] == [ids[0]]
        clock.advance(1.0)
        assert await delivery.run() == 1
    finally:
        await sender.close()
    assert await logdb.store.outbox("pending") == []
    items = await logdb.store.outbox("delivered")
    assert sorted(i.ref_id for i in items) == ids
    assert {i.ref_id: i.attempts for i in items} == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    assert all(ok for _, _, ok in receiver.calls)  # every call was signed
    received = {event for event, _, _ in receiver.calls[1:]}
    assert received == {f"alert-{i}" for i in ids}
    body = json.loads(receiver.calls[-1][1])
    assert body["kind"] == "alert" and body["data"]["route"] == ROUTE
    assert body["data"]["evidence"] == {"i": 0} and body["data"]["baseline"] == 0.87


async def test_a_dead_webhook_keeps_its_events_and_backs_off(
        sqlite_logdb: LogDb, clock: FrozenClock) -> None:
    store = sqlite_logdb.store
    [alert_id] = await queue_alerts(store, 1)
    dead = Receiver(free_port())  # nothing listens there yet
    sender = WebhookSender(dead.url, SECRET, timeout_s=2)
    delivery = OutboxDelivery(store, sender, initial_s=1.0, max_s=4.0, clock=clock)
    try:
        waits = []
        for _ in range(4):
            assert await delivery.run() == 0
            [item] = await store.outbox("pending")
            waits.append((item.next_attempt_at - clock()).total_seconds())
            clock.advance(waits[-1])
        assert waits == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
        assert item.attempts == 4 and item.last_error
        dead.start()  # the webhook comes back: the event was never dropped
        try:
            assert await delivery.run() == 1
        finally:
            dead.stop()
    finally:
        await sender.close()
    assert [(e, ok) for e, _, ok in dead.calls] == [(f"alert-{alert_id}", True)]


def test_a_signature_is_refused_when_tampered_or_old() -> None:
    from lora_router.router.drift.alerts import sign

    header = sign(SECRET, b"{}", 1_000_000)
    assert verify(SECRET, b"{}", header, now=1_000_010)
    assert not verify(SECRET, b"{ }", header, now=1_000_010)
    assert not verify(b"other", b"{}", header, now=1_000_010)
    assert not verify(SECRET, b"{}", header, now=1_000_000 + 3600)
