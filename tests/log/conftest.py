"""Fixtures for the inference-log tests: both sinks, records, a throwaway PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.record import InferenceRecord
from lora_router.router.log.rows import Row, RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.spool import Spool
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.log.writer import LogWriter
from tests.conftest import free_port, require

# a day ago, not a fixed date: input rows older than the retention (30 d) would be purged
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
_seq = itertools.count()


def make_record(
    request_id: str | None = None,
    *,
    model_id: str = "support@v1",
    prompt: str = "Where is my order ORD-12345? mail me at ana@example.com",
    output: str = "shipping",
    at: datetime | None = None,
    **kw: Any,
) -> InferenceRecord:
    n = next(_seq)
    return InferenceRecord(
        request_id=request_id or f"req-{n:08d}",
        model_id=model_id,
        input_hash=hashlib.sha256(prompt.encode()).hexdigest(),
        output=output,
        served_at=at or T0 + timedelta(milliseconds=n),
        prompt=prompt,
        route=kw.pop("route", "support"),
        arm=kw.pop("arm", "live"),
        **kw,
    )


def make_row(**kw: Any) -> Row:
    row, _ = RowBuilder().build(make_record(**kw))
    return row


@pytest.fixture(params=["sqlite", "postgres"])
async def sink(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogSink]:
    """Each contract test runs against the embedded SQLite sink and the real PostgreSQL."""
    s: LogSink
    if request.param == "sqlite":
        s = SqliteSink(tmp_path / "log" / "inference.db")
    else:
        s = PostgresSink(request.getfixturevalue("pg_url"))
    await s.open()
    yield s
    await s.close()


def make_writer(sink: LogSink, home: Path, **kw: Any) -> LogWriter:
    builder = RowBuilder(
        labels_for=kw.pop("labels_for", None), input_store=kw.pop("input_store", False)
    )
    kw.setdefault("batch_size", 32)
    kw.setdefault("flush_ms", 20)
    kw.setdefault("retry_initial_s", 0.05)
    kw.setdefault("retry_max_s", 0.5)
    return LogWriter(sink, Spool(home / "log" / "spool"), builder, **kw)


@dataclass
class PgCluster:
    """A private PostgreSQL server that a test may stop and start."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_AS_PG, f"{_PG_BIN}/pg_ctl", "-D", str(self.root / "data"), *args],
            check=True, capture_output=True, timeout=60,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.root / "server.log"), "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def count(self, sql: str = "SELECT count(*), count(DISTINCT request_id) FROM inference_log"
              ) -> tuple[Any, ...]:
        with psycopg.connect(self.url, connect_timeout=3) as conn:
            row = conn.execute(sql).fetchone()
            assert row is not None
            return tuple(row)


_PG_BIN = "/usr/lib/postgresql/15/bin"
# the server refuses to run as root: run its tools as the postgres OS user
_AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """``initdb`` + ``pg_ctl`` in a temporary directory on a free port, run as ``postgres``."""
    if not (Path(_PG_BIN) / "initdb").is_file() or (_AS_PG and shutil.which("runuser") is None):
        require(f"PostgreSQL server binaries not found in {_PG_BIN}")
    # directly under /tmp: the postgres user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="lora-router-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [*_AS_PG, f"{_PG_BIN}/initdb", "-D", str(root / "data"),
         "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )
    cluster = PgCluster(root, free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_until(pred: Any, timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())
