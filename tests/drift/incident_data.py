"""A synthetic incident for the runbook tests: a canary that fails on Spanish tickets.

Traffic on ``support-triage`` (the demo home's adapters): v1 live, v2 a canary on about 30 %
of the requests; tickets in English and Spanish from a few templates (varied length, some
with order ids). v1 is right 98 % of the time on both languages; v2 as often on English but
60 % on Spanish, its Spanish failures mostly in ``failure_cluster`` ``es_misrouted``. Rows
go through the real log writer, 80 % of them labelled through the writer's feedback path
(what ``POST /v1/feedback`` calls). Then the real monitor and guard run: the guard clears
the canary and opens an incident.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lora_router.ground.home import Home
from lora_router.router.drift.baseline_source import BaselineSource
from lora_router.router.drift.baselines import load_baseline
from lora_router.router.drift.events import Incident
from lora_router.router.drift.guard import Guard
from lora_router.router.drift.monitor import DriftMonitor
from lora_router.router.drift.pg_store import PostgresDriftStore
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.drift.sqlite_store import SqliteDriftStore
from lora_router.router.drift.store import DriftStore
from lora_router.router.flags.route_service import RouteService
from lora_router.router.flags.state import RouteState, Split, TaskSpec
from lora_router.router.flags.store import RouteStore
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter
from tests.drift.conftest import FrozenClock, LogDb

ROUTE = "support-triage"
V1, V2 = "support-triage@v1", "support-triage@v2"
LABELS = ("billing", "shipping", "returns", "account", "technical", "refund", "cancellation",
          "product_question")
GUARD = GuardPolicy(auto_rollback=True, protect=("language=es",))
TEMPLATES = {
    "en": [("I was charged twice for the same invoice {n}, please help", "billing"),
           ("Where is my order ORD-{n}? It has not arrived yet and I need it", "shipping"),
           ("I want to return the shoes I bought, they do not fit", "returns"),
           ("I cannot log in to my account, the password reset does not work", "account")],
    "es": [("Me cobraron dos veces la misma factura {n}, por favor ayuda", "billing"),
           ("¿Dónde está mi pedido ORD-{n}? Todavía no ha llegado y lo necesito", "shipping"),
           ("Quiero devolver los zapatos que compré, no me quedan bien", "returns"),
           ("No puedo entrar en mi cuenta, el cambio de contraseña no funciona", "account")],
}
ACCURACY = {(V1, "en"): 0.98, (V1, "es"): 0.98, (V2, "en"): 0.98, (V2, "es"): 0.60}


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Served:
    request_id: str
    model_id: str
    lang: str
    served_at: datetime
    prompt: str
    output: str
    correct: bool | None  # None: never labelled
    cluster: str | None
    subject: str


@dataclass
class Scenario:
    served: list[Served] = field(default_factory=list)
    incident: Incident | None = None

    def failures(self, model_id: str) -> set[str]:
        return {s.request_id for s in self.served if s.model_id == model_id
                and s.correct is False}

    def of(self, model_id: str, lang: str | None = None) -> list[Served]:
        return [s for s in self.served if s.model_id == model_id
                and (lang is None or s.lang == lang)]


def plan(seed: int, n: int, end: datetime, span: timedelta = timedelta(hours=3),
         prefix: str = "inc") -> list[Served]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        model = V2 if rng.random() < 0.3 else V1
        lang = "es" if rng.random() < 0.3 else "en"
        text, label = rng.choice(TEMPLATES[lang])
        prompt = f"Ticket: {text.format(n=rng.randint(10000, 99999))}\nCategory:"
        correct = rng.random() < ACCURACY[(model, lang)]
        wrong = rng.choice([x for x in LABELS if x != label])
        cluster = None
        if not correct:
            cluster = ("es_misrouted" if model == V2 and lang == "es" and rng.random() < 0.85
                       else "ambiguous_ticket")
        out.append(Served(
            request_id=f"{prefix}-{seed}-{i:05d}", model_id=model, lang=lang,
            served_at=end - span + span * (i / n), prompt=prompt,
            output=f" {label if correct else wrong}",
            correct=correct if rng.random() < 0.8 else None, cluster=cluster,
            subject=f"CUST-{i % 7}",
        ))
    return out


async def write(writer: LogWriter, served: list[Served]) -> None:
    """Serve through the real writer, then label through its feedback path."""
    for s in served:
        writer.record(InferenceRecord(
            request_id=s.request_id, model_id=s.model_id, output=s.output,
            served_at=s.served_at, prompt=s.prompt, route=ROUTE,
            arm="canary" if s.model_id == V2 else "live", flag_version=1,
            subject=s.subject,
        ))
    await writer.flush()
    for s in served:
        if s.correct is not None:
            await writer.feedback(s.request_id, s.correct, s.cluster)


def route_state() -> RouteState:
    return RouteState(route=ROUTE, live=V1, canary=Split(adapter=V2, percent=30), guard=GUARD,
                      task=TaskSpec(type="classification", labels=LABELS))


async def detect_and_contain(store: DriftStore, routes: RouteStore, home: Home) -> Incident:
    """The real monitor reads the log until it is caught up; the real guard acts."""
    monitor = DriftMonitor(store, routes, BaselineSource(home, stored=load_baseline),
                           holder="test", clock=store.clock)
    while True:
        report = await monitor.tick()
        if report.rows == 0 and report.labels == 0:
            break
    outcomes = await Guard(RouteService(routes), store).run()
    acted = [o for o in outcomes if o.status == "acted"]
    assert len(acted) == 1 and acted[0].model_id == V2, outcomes
    assert acted[0].incident_id is not None
    incident = await store.incident(acted[0].incident_id)
    assert incident is not None
    return incident


async def build(writer: LogWriter, store: DriftStore, routes: RouteStore, home: Home, *,
                seed: int = 7, n: int = 1500, end: datetime | None = None) -> Scenario:
    """Seed the route, write the traffic, detect and contain."""
    await routes.seed({ROUTE: route_state()})
    served = plan(seed, n, end or store.clock())
    await write(writer, served)
    scenario = Scenario(served)
    scenario.incident = await detect_and_contain(store, routes, home)
    return scenario


@asynccontextmanager
async def open_db(log_dir: Path, clock: FrozenClock, url: str | None = None, *,
                  input_store: bool = True) -> AsyncIterator[LogDb]:
    """The real log writer (labels of the route's task, optional input store) on SQLite at
    ``log_dir/inference.db`` (``url`` None) or PostgreSQL, and the drift store on it."""
    path = log_dir / "inference.db"
    sink: LogSink = SqliteSink(path) if url is None else PostgresSink(url)
    writer = LogWriter(sink, Spool(log_dir / "spool"),
                       RowBuilder(labels_for=lambda r: LABELS, input_store=input_store),
                       batch_size=256, flush_ms=20)
    await writer.start()
    store: DriftStore = (SqliteDriftStore(path, clock=clock) if url is None
                         else PostgresDriftStore(url, clock=clock))
    await store.open()
    try:
        yield LogDb("sqlite" if url is None else "postgres", writer, store, url, path, clock)
    finally:
        await store.close()
        await writer.close()
