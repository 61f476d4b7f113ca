"""``lora-router log ...`` and ``lora-router feedback import`` on both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lora_router.router.cli.main import app
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.rows import RowBuilder
from lora_router.router.log.sink import LogSink
from lora_router.router.log.sqlite_sink import SqliteSink
from tests.log.conftest import make_record


@dataclass
class Backend:
    home: Path
    env: dict[str, str]

    def sink(self) -> LogSink:
        url = self.env["DATABASE_URL"]
        return PostgresSink(url) if url else SqliteSink(self.home / "log" / "inference.db")

    def run(self, *args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--home", str(self.home)], env=self.env)
        assert result.exit_code == 0, result.output
        return result.output

    def query(self, fn: str, *args: object) -> object:
        async def go() -> object:
            sink = self.sink()
            await sink.open()
            try:
                return await getattr(sink, fn)(*args)
            finally:
                await sink.close()

        return asyncio.run(go())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    b = Backend(tmp_path / "home", {"DATABASE_URL": url, "COLUMNS": "200"})
    now = datetime.now(UTC)
    builder = RowBuilder(input_store=True)
    pairs = [
        builder.build(make_record(
            f"c{i:02d}", model_id="support@v1" if i < 6 else "support@v2",
            arm="live" if i < 6 else "canary", route="support" if i < 8 else "other",
            at=now - timedelta(minutes=i), latency_ms=10.0 + i, subject="ana" if i < 2 else None,
        ))
        for i in range(10)
    ]
    b.query("write", [r for r, _ in pairs], [i for _, i in pairs if i is not None])
    yield b


def test_tail_shows_the_newest_rows_of_a_route(backend: Backend) -> None:
    out = backend.run("log", "tail", "-n", "3", "--route", "other")
    assert "c08" in out and "c09" in out and "c07" not in out
    lines = backend.run("log", "tail", "-n", "2", "--json")
    assert '"request_id": "c00"' in lines and "c02" not in lines


def test_stats_per_model_and_arm(backend: Backend) -> None:
    out = backend.run("log", "stats", "--route", "support", "--since", "1h", "--json")
    stats = {(s["model_id"], s["arm"]): s for s in map(json.loads, out.splitlines())}
    assert stats[("support@v1", "live")]["count"] == 6
    assert stats[("support@v2", "canary")]["count"] == 2
    assert stats[("support@v1", "live")]["latency_p50_ms"] == pytest.approx(12.5)
    table = backend.run("log", "stats", "--route", "support", "--since", "1h")
    assert "support@v2" in table and "canary" in table


def test_export_jsonl_and_parquet_for_one_model(backend: Backend, tmp_path: Path) -> None:
    jsonl = tmp_path / "out.jsonl"
    backend.run("log", "export", "--model-id", "support@v1", "--since", "1h", "-o", str(jsonl))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(r["request_id"] for r in rows) == [f"c{i:02d}" for i in range(6)]
    assert all("prompt" not in r for r in rows)
    parquet = tmp_path / "out.parquet"
    backend.run("log", "export", "--model-id", "support@v2", "--since", "1h",
                "--format", "parquet", "-o", str(parquet))
    table = pq.read_table(parquet)
    assert sorted(table.column("request_id").to_pylist()) == ["c06", "c07", "c08", "c09"]
    assert json.loads(table.column("input_features")[0].as_py())["language"] == "en"


def test_feedback_import_reports_updated_and_unknown(backend: Backend, tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("request_id,was_correct,failure_cluster\n"
                        "c00,true,\nc01,false,refunds\nmissing,true,\nc02,maybe,\n")
    out = backend.run("feedback", "import", str(csv_file))
    assert json.loads(out.strip().splitlines()[-1]) == {"updated": 2, "unknown": 1, "invalid": 1}
    again = backend.run("feedback", "import", str(csv_file))
    assert json.loads(again.strip().splitlines()[-1])["updated"] == 2
    row = backend.query("get", "c01")
    assert isinstance(row, dict) and row["was_correct"] is False
    assert row["failure_cluster"] == "refunds"

    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"request_id": "c03", "was_correct": true}\n{"request_id": "zz", '
                     '"was_correct": false}\n')
    out = backend.run("feedback", "import", str(jsonl))
    assert json.loads(out.strip().splitlines()[-1]) == {"updated": 1, "unknown": 1, "invalid": 0}


def test_delete_subject_removes_only_that_subjects_inputs(backend: Backend) -> None:
    out = backend.run("log", "delete-subject", "ana")
    assert "deleted 2" in out
    remaining = backend.query("inputs")
    assert isinstance(remaining, list) and len(remaining) == 8
    assert all(r["subject"] != "ana" for r in remaining)
