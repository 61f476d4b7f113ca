"""``lora-router cost`` on both databases: the table (ids whole, a total line), ``--json``,
``--route``, prices from the settings, one-line errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_router.router.cli.main import app
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.sink import LogSink
from lora_router.router.log.sqlite_sink import SqliteSink
from tests.log.conftest import make_record, make_writer

V1 = "support-triage-with-a-long-name@v1"
V2 = "support-triage-with-a-long-name@v2"
NO_PRICES = {"LORA_ROUTER_PRICE_PER_GPU_HOUR": "", "LORA_ROUTER_PRICE_PER_1K_PROMPT_TOKENS": "",
             "LORA_ROUTER_PRICE_PER_1K_COMPLETION_TOKENS": "", "LORA_ROUTER_PRICE_OVERRIDES": "{}"}


@dataclass
class Cli:
    home: Path
    env: dict[str, str]

    def run(self, *args: str, code: int = 0, **env: str) -> str:
        result = CliRunner().invoke(app, ["cost", *args, "--home", str(self.home)],
                                    env={**self.env, **env})
        assert result.exit_code == code, result.output
        return result.output


@pytest.fixture(params=["sqlite", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    home = tmp_path / "home"
    sink: LogSink = PostgresSink(url) if url else SqliteSink(home / "log" / "inference.db")
    now = datetime.now(UTC)
    rows = [
        dict(model_id=V1, route="support", arm="live", prompt_tokens=100, completion_tokens=10,
             engine_ms=1500.0),
        dict(model_id=V1, route="support", arm="live", prompt_tokens=300, completion_tokens=30,
             engine_ms=500.0),
        dict(model_id=V2, route="support", arm="canary", prompt_tokens=1000,
             completion_tokens=0, engine_ms=3600_000.0),
        dict(model_id=V2, route=None, arm="live", status="error", error="x"),
    ]

    async def write() -> None:
        writer = make_writer(sink, tmp_path)
        await writer.start()
        for i, kw in enumerate(rows):
            writer.record(make_record(f"c{i}", at=now - timedelta(minutes=i + 1), **kw))
        writer.record(make_record("old", at=now - timedelta(days=30), model_id=V1,
                                  prompt_tokens=5, engine_ms=5.0))
        await writer.close()

    asyncio.run(write())
    yield Cli(home, {"DATABASE_URL": url, "REDIS_URL": "", "COLUMNS": "80", **NO_PRICES})


def test_json_has_exact_sums_per_model_and_route(cli: Cli) -> None:
    data = json.loads(cli.run("--json"))
    lines = {(x["model_id"], x["route"]): x for x in data["lines"]}
    assert set(lines) == {(V1, "support"), (V2, "support"), (V2, None)}
    v1 = lines[(V1, "support")]
    assert (v1["requests"], v1["prompt_tokens"], v1["completion_tokens"]) == (2, 400, 40)
    assert v1["engine_s"] == 2.0 and v1["cost"] is None
    assert lines[(V2, None)]["errors"] == 1 and lines[(V2, None)]["engine_s"] == 0
    total = data["total"]
    assert (total["requests"], total["errors"], total["prompt_tokens"]) == (4, 1, 1400)
    assert total["engine_s"] == 3602.0 and data["priced"] is False


def test_prices_from_the_settings(cli: Cli) -> None:
    env = {"LORA_ROUTER_PRICE_PER_GPU_HOUR": "2.5", "LORA_ROUTER_PRICE_PER_1K_PROMPT_TOKENS": "0.5",
           "LORA_ROUTER_PRICE_OVERRIDES": json.dumps({V1: {"price_per_gpu_hour": 36}}),
           "LORA_ROUTER_PRICE_CURRENCY": "EUR"}
    data = json.loads(cli.run("--json", "--route", "support", **env))
    lines = {x["model_id"]: x for x in data["lines"]}
    assert lines[V1]["cost"] == pytest.approx(2.0 / 3600 * 36 + 400 / 1000 * 0.5)
    assert lines[V2]["cost"] == pytest.approx(1.0 * 2.5 + 1000 / 1000 * 0.5)  # one engine-hour
    assert data["total"]["cost"] == pytest.approx(lines[V1]["cost"] + lines[V2]["cost"])
    assert data["currency"] == "EUR" and data["route"] == "support"
    assert {x["route"] for x in data["lines"]} == {"support"}
    table = cli.run("--route", "support", **env)
    assert "3.0000 EUR" in table  # V2: 2.5 + 0.5


def test_table_keeps_ids_whole_and_ends_with_the_total(cli: Cli) -> None:
    out = cli.run("--since", "7d")  # not a terminal: tab-separated, nothing cut
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model_id\t"))
    body = [line.split("\t") for line in lines[header + 1:] if "\t" in line]
    assert [b[0] for b in body] == [V1, V2, V2, "total"]
    assert body[-1][2] == "4" and body[-1][7] == "3602.000"
    assert "no prices configured" in out


def test_bad_input_is_one_line(cli: Cli) -> None:
    out = cli.run("--since", "yesterday-ish", code=2)
    assert "--since" in out and "Traceback" not in out
    out = cli.run(code=2, LORA_ROUTER_PRICE_PER_GPU_HOUR="-1")
    assert "price_per_gpu_hour" in out and "Traceback" not in out
