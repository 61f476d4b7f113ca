"""Fixtures for the drift tests: a real inference log (SQLite or PostgreSQL) written by the
real log writer, the drift store on the same database, a frozen clock, route services."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lora_router.router.drift.baseline_model import Baseline
from lora_router.router.drift.pg_store import PostgresDriftStore
from lora_router.router.drift.sqlite_store import SqliteDriftStore
from lora_router.router.drift.store import DriftStore
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ROUTE = "support"
V1, V2 = "support@v1", "support@v2"
LABELS = ("billing", "shipping", "returns", "account")
PROMPTS = {
    "en": "Hello, my invoice was charged twice, please help",
    "es": "Hola, me cobraron dos veces la factura, por favor ayuda",
}


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@dataclass
class LogDb:
    """The log writer and a drift store on the same database."""

    kind: str
    writer: LogWriter
    store: DriftStore
    url: str | None
    path: Path
    clock: FrozenClock

    def new_store(self) -> DriftStore:
        """Another drift store (another monitor's connection) on the same database."""
        if self.url is not None:
            return PostgresDriftStore(self.url, clock=self.clock)
        return SqliteDriftStore(self.path, clock=self.clock)


_seq = itertools.count()


def record(writer: LogWriter, *, lang: str = "en", model_id: str = V1, arm: str = "live",
           output: str = "billing", route: str | None = ROUTE, **kw: Any) -> str:
    """Write one request through the real writer; returns its id."""
    n = next(_seq)
    rid = kw.pop("request_id", f"req-{n:07d}")
    writer.record(InferenceRecord(
        request_id=rid, model_id=model_id, output=output,
        served_at=kw.pop("served_at", T0 + timedelta(milliseconds=n)),
        prompt=PROMPTS[lang], route=route, arm=arm, flag_version=1, **kw,
    ))
    return rid


async def serve_and_label(writer: LogWriter, n: int, *, acc: Callable[[str], float],
                          rng: random.Random, share_es: float = 0.2, **kw: Any) -> list[str]:
    """``n`` requests (``share_es`` Spanish), flushed, then each labelled right with
    probability ``acc(lang)``."""
    served = []
    for _ in range(n):
        lang = "es" if rng.random() < share_es else "en"
        served.append((record(writer, lang=lang, **kw), lang))
    await writer.flush()
    for rid, lang in served:
        await writer.feedback(rid, rng.random() < acc(lang))
    return [rid for rid, _ in served]


def baseline(adapter_id: str, *, overall: float = 0.87, es: float = 0.87,
             **kw: Any) -> Baseline:
    return Baseline(adapter_id=adapter_id, gates={"overall": overall, "slice_es": es},
                    n=kw.pop("n", 1000), **kw)


@asynccontextmanager
async def open_logdb(kind: str, tmp_path: Path, clock: FrozenClock,
                     url: str | None = None) -> AsyncIterator[LogDb]:
    """The real log writer on SQLite (``url`` None) or PostgreSQL, and the drift store
    (migrated after the log's own tables exist, as in the gateway)."""
    path = tmp_path / "log" / "inference.db"
    sink: LogSink = SqliteSink(path) if url is None else PostgresSink(url)
    writer = LogWriter(sink, Spool(tmp_path / "log" / "spool"),
                       RowBuilder(labels_for=lambda r: LABELS), batch_size=256, flush_ms=20)
    await writer.start()
    store: DriftStore = (SqliteDriftStore(path, clock=clock) if url is None
                         else PostgresDriftStore(url, clock=clock))
    db = LogDb(kind, writer, store, url, path, clock)
    await store.open()
    try:
        yield db
    finally:
        await store.close()
        await writer.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def logdb(request: pytest.FixtureRequest, tmp_path: Path,
                clock: FrozenClock) -> AsyncIterator[LogDb]:
    """Each test on the SQLite log and on the PostgreSQL log."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    async with open_logdb(request.param, tmp_path, clock, url) as db:
        yield db


@pytest.fixture
async def pg_logdb(pg_url: str, tmp_path: Path, clock: FrozenClock) -> AsyncIterator[LogDb]:
    async with open_logdb("postgres", tmp_path, clock, pg_url) as db:
        yield db


@pytest.fixture
async def sqlite_logdb(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[LogDb]:
    async with open_logdb("sqlite", tmp_path, clock) as db:
        yield db
