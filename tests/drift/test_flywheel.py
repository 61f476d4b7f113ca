"""The flywheel: a slice alert becomes a retraining trigger, the labelled failures as JSONL
(raw prompts only where the input store holds them) and a draft dataset card; over a real
log (SQLite and PostgreSQL) with the incident raised by the real monitor and guard."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lora_router.ground.hashing import sha256_file, tree_hash
from lora_router.ground.home import Home
from lora_router.registry.cards import DatasetCard
from lora_router.router.drift.events import Alert, Incident
from lora_router.router.drift.flywheel import export_incident, on_alert
from lora_router.router.drift.queries import DriftRecordNotFound, incident_alerts
from lora_router.router.drift.triggers import triggers
from lora_router.router.flags.memory import MemoryRouteStore
from tests.drift import incident_data as data
from tests.drift.conftest import FrozenClock, LogDb

DELETED = "CUST-3"
KEYS = {"request_id", "served_at", "route", "model_id", "arm", "input_hash", "features",
        "output", "predicted_label", "failure_cluster"}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(data.now_s())


@dataclass
class World:
    db: LogDb
    home: Home
    scenario: data.Scenario
    incident: Incident
    alerts: list[Alert]


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock,
                copy_home: Home) -> AsyncIterator[World]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    routes = MemoryRouteStore()
    await routes.start()
    async with data.open_db(tmp_path / "log", clock, url, input_store=True) as db:
        scenario = await data.build(db.writer, db.store, routes, copy_home)
        assert scenario.incident is not None
        await db.writer.delete_subject(DELETED)  # their raw prompts are gone
        alerts = await incident_alerts(db.store, scenario.incident)
        yield World(db, copy_home, scenario, scenario.incident, alerts)
    await routes.close()


def first_slice_alert(world: World) -> Alert:
    return next(a for a in world.alerts if a.signal == "slice_quality"
                and not a.evidence.get("repeat"))


async def test_a_slice_alert_exports_exactly_the_labelled_failures(world: World) -> None:
    alert = first_slice_alert(world)
    assert alert.detector == "language=es" and alert.model_id == data.V2
    done = await on_alert(world.db.store, world.home, alert)
    assert done is not None and done.created
    assert done.dir == world.home.root / "flywheel" / str(done.trigger.id)
    records = [json.loads(line) for line in done.failures.read_text().splitlines()]
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert set(ids) == world.scenario.failures(data.V2)  # exactly: no v1 rows, no successes
    served = {s.request_id: s for s in world.scenario.served}
    for r in records:
        s = served[r["request_id"]]
        assert KEYS <= set(r) <= KEYS | {"prompt"}
        assert r["input_hash"] == hashlib.sha256(s.prompt.encode()).hexdigest()
        assert r["features"]["language"] == s.lang and r["output"] == s.output
        assert r["failure_cluster"] == s.cluster and r["model_id"] == data.V2
        assert r["arm"] == "canary" and r["route"] == data.ROUTE
        if s.subject == DELETED:
            assert "prompt" not in r  # deleted by subject: never exported
        else:
            assert r["prompt"] == s.prompt  # held by the input store
    assert done.rows == len(records)
    assert done.prompts == sum(1 for r in records if "prompt" in r) > 0
    assert any(served[i].subject == DELETED for i in ids)

    card = DatasetCard.model_validate(yaml.safe_load(done.card.read_text()))
    assert card.id == f"{data.ROUTE}-flywheel-{done.trigger.id}"
    assert card.files == {"failures.jsonl": sha256_file(done.failures)}
    assert card.hash == tree_hash(card.files)
    m = card.measured
    assert (m["status"], m["alert"], m["model_id"], m["trigger"]) == (
        "draft", alert.id, data.V2, done.trigger.id)
    assert m["incident"] == world.incident.id
    assert m["rows"] == len(records) and m["rows_with_prompt"] == done.prompts
    assert m["parent_dataset"] == "support-tickets-v2"  # v2's training set, from lineage
    assert max(m["failure_clusters"], key=m["failure_clusters"].get) == "es_misrouted"
    assert m["slices"]["language=es"] == sum(1 for i in ids if served[i].lang == "es")
    assert card.sources[0].pii == "present"  # prompts with order ids went out
    for path in (done.failures, done.card, done.dir / "trigger.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # may hold raw prompts


async def test_one_trigger_per_adapter_and_only_for_quality_alerts(world: World) -> None:
    store = world.db.store
    alert = first_slice_alert(world)
    first = await on_alert(store, world.home, alert)
    again = await on_alert(store, world.home, alert)  # another monitor, or a retry
    assert first is not None and again is not None
    assert again.trigger.id == first.trigger.id and not again.created
    exported = await export_incident(store, world.home, world.incident.id)
    assert exported.trigger.id == first.trigger.id and not exported.created
    quality = {a.id for a in world.alerts if a.signal in ("quality", "slice_quality")}
    assert set(exported.trigger.alert_ids) == quality  # every alert attached, once
    [stored] = await triggers(store)
    assert stored.status == "exported" and stored.failures == first.rows
    assert stored.export_dir == f"flywheel/{first.trigger.id}"

    # input drift and repeats of an alarm are not triggers; an unknown incident fails
    drift = alert.model_copy(update={"signal": "input", "detector": "chars"})
    repeat = alert.model_copy(update={"evidence": {**alert.evidence, "repeat": True}})
    assert await on_alert(world.db.store, world.home, drift) is None
    assert await on_alert(world.db.store, world.home, repeat) is None
    with pytest.raises(DriftRecordNotFound, match="no incident 4242"):
        await export_incident(world.db.store, world.home, 4242)
