"""The monitor over a real log (SQLite and PostgreSQL) written by the real log writer."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import psycopg
import pytest

from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.monitor import DriftMonitor
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.drift.store import CheckpointConflict
from lora_router.router.flags.memory import MemoryRouteStore
from lora_router.router.flags.state import RouteState
from tests.drift.conftest import ROUTE, V1, LogDb, baseline, record, serve_and_label

ES = GuardPolicy(auto_rollback=True, protect=("language=es",))


@pytest.fixture
async def routes() -> AsyncIterator[MemoryRouteStore]:
    store = MemoryRouteStore()
    await store.start()
    await store.seed({ROUTE: RouteState(route=ROUTE, live=V1, guard=ES)})
    yield store
    await store.close()


def monitor(db: LogDb, routes: MemoryRouteStore, baselines: dict[str, Baseline],
            holder: str = "m1") -> DriftMonitor:
    return DriftMonitor(db.store, routes, baselines.get, holder=holder, clock=db.clock)


async def test_rows_and_late_labels_are_read_once_each(logdb: LogDb,
                                                       routes: MemoryRouteStore) -> None:
    mon = monitor(logdb, routes, {V1: baseline(V1)})
    ids = [record(logdb.writer) for _ in range(30)]
    await logdb.writer.flush()
    report = await mon.tick()
    assert (report.rows, report.labels) == (30, 0)
    for rid in ids[:10]:  # labels arrive late, for some requests only
        await logdb.writer.feedback(rid, True)
    assert (await mon.tick()).labels == 10
    for rid in ids[:10]:  # a correction is not a second outcome for the test
        await logdb.writer.feedback(rid, False, "wrong_category")
    await logdb.writer.feedback(ids[10], False)
    report = await mon.tick()
    assert (report.rows, report.labels) == (0, 1)
    assert mon.streams[f"{ROUTE}|{V1}|live"].quality.tests["overall"].cusum.n == 11


async def test_a_slice_regression_raises_an_alert_with_its_evidence(
        logdb: LogDb, routes: MemoryRouteStore) -> None:
    mon = monitor(logdb, routes, {V1: baseline(V1)})
    rng = random.Random(4)
    await serve_and_label(logdb.writer, 600, acc=lambda lang: 0.87, rng=rng)
    stable = await mon.tick()
    assert stable.alerts == []
    changed = await serve_and_label(logdb.writer, 600, rng=rng,
                                    acc=lambda lang: 0.45 if lang == "es" else 0.87)
    report = await mon.tick()
    slice_alerts = [a for a in report.alerts if a.signal == "slice_quality"]
    assert slice_alerts, [a.summary() for a in report.alerts]
    alert = slice_alerts[0]
    assert alert.detector == "language=es" and alert.model_id == V1 and alert.arm == "live"
    assert alert.n >= ES.min_labels or alert.evidence["n_total"] >= ES.min_labels
    assert alert.estimate is not None and alert.estimate < 0.87
    assert alert.bound is not None and alert.bound < 0.87
    assert alert.statistic >= alert.threshold and alert.baseline == 0.87
    assert alert.evidence["window"]["from_request"] in changed
    assert alert.evidence["design"]["arl0_labels"] > 100
    assert alert.route_version == 1 and alert.guard_status == "pending"
    stored = await logdb.store.alerts(route=ROUTE)
    assert alert.id in {a.id for a in stored}
    assert (await logdb.store.alert(alert.id)) == alert


async def test_no_quality_alert_without_a_gate_bar(logdb: LogDb,
                                                   routes: MemoryRouteStore) -> None:
    mon = monitor(logdb, routes, {})  # no card eval, no baseline: nothing to test against
    await serve_and_label(logdb.writer, 200, acc=lambda lang: 0.1, rng=random.Random(1))
    report = await mon.tick()
    assert report.labels == 200 and report.alerts == []


async def test_a_new_monitor_resumes_from_the_checkpoint(logdb: LogDb,
                                                         routes: MemoryRouteStore) -> None:
    bl = {V1: baseline(V1)}
    first = monitor(logdb, routes, bl)
    await serve_and_label(logdb.writer, 300, acc=lambda lang: 0.8, rng=random.Random(2))
    await first.tick()
    saved = first.streams[f"{ROUTE}|{V1}|live"].quality.to_json()
    second = monitor(logdb, routes, bl, holder="m2")
    assert (await second.tick()).rows == 0  # nothing new: nothing re-read
    await serve_and_label(logdb.writer, 1, acc=lambda lang: 1.0, rng=random.Random(3))
    report = await second.tick()
    assert (report.rows, report.labels) == (1, 1)
    resumed = second.streams[f"{ROUTE}|{V1}|live"].quality.tests["overall"].cusum
    assert resumed.n == saved["overall"]["n"] + 1


async def test_two_monitors_cannot_both_commit_a_tick(logdb: LogDb,
                                                      routes: MemoryRouteStore) -> None:
    bl = {V1: baseline(V1)}
    other = logdb.new_store()
    await other.open()
    try:
        m1, m2 = monitor(logdb, routes, bl), DriftMonitor(other, routes, bl.get, holder="m2")
        await m1.tick()
        await m2.tick()  # both hold checkpoint version 0
        await serve_and_label(logdb.writer, 20, acc=lambda lang: 1.0, rng=random.Random(5))
        assert (await m1.tick()).labels == 20
        with pytest.raises(CheckpointConflict):
            await m2.tick()
        assert m2.streams == {}  # it dropped what it had applied in memory
        assert (await m2.tick()).labels == 0  # and continues from m1's checkpoint
        cp = await logdb.store.load_checkpoint()
        assert cp.version == 1
    finally:
        await other.close()


async def test_input_and_output_drift_alert_once_per_crossing(
        logdb: LogDb, routes: MemoryRouteStore) -> None:
    bl = {V1: baseline(V1, features={"language": {"en": 0.8, "es": 0.2}},
                       labels={"billing": 0.5, "shipping": 0.5})}
    mon = monitor(logdb, routes, bl)
    for _ in range(400):  # all Spanish, all answered "returns"
        record(logdb.writer, lang="es", output="returns")
    await logdb.writer.flush()
    report = await mon.tick()
    found = {(a.signal, a.detector): a for a in report.alerts}
    assert set(found) == {("input", "language"), ("output", "predicted_label")}
    lang = found[("input", "language")]
    assert lang.method == "psi" and lang.statistic >= 0.25 and lang.guard_status == "none"
    assert lang.evidence["observed"] == {"es": 1.0}
    assert 0 < lang.evidence["js_bits"] <= 1
    for _ in range(200):
        record(logdb.writer, lang="es", output="returns")
    await logdb.writer.flush()
    assert (await mon.tick()).alerts == []  # still drifted: not raised again


async def test_postgres_cursor_never_passes_a_transaction_still_open(
        pg_logdb: LogDb, routes: MemoryRouteStore) -> None:
    """(SQLite has one writer at a time: its rowid order is commit order.)"""
    logdb = pg_logdb
    assert logdb.url is not None
    mon = monitor(logdb, routes, {V1: baseline(V1)})
    await mon.tick()
    slow = await psycopg.AsyncConnection.connect(logdb.url)
    try:  # an older transaction writes a row and has not committed yet
        await slow.execute(
            "INSERT INTO inference_log (request_id, model_id, input_hash, output, served_at,"
            " route, arm, status) VALUES ('slow-1', %s, 'h', 'billing', now(), %s, 'live',"
            " 'ok')", (V1, ROUTE))
        record(logdb.writer, request_id="fast-1")  # a younger one commits first
        await logdb.writer.flush()
        assert (await mon.tick()).rows == 0  # the horizon holds the cursor back
        await slow.commit()
        assert (await mon.tick()).rows == 2  # neither was skipped
    finally:
        await slow.close()
