"""Cost per model_id and route, from a real SQLite and a real PostgreSQL log written by the
real writer: exact sums, the route filter, the window, prices and per-adapter overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from lora_router.router.dashboard.reader import LogReader, PostgresReader, SqliteReader
from lora_router.router.log.cost import CostLine, CostReport, PriceBook, cost_report
from lora_router.router.log.pg_sink import PostgresSink
from lora_router.router.log.sink import LogSink
from lora_router.router.log.sqlite_sink import SqliteSink
from lora_router.router.settings import Prices, Settings
from tests.log.conftest import T0, make_record, make_writer

V1, V2 = "support@v1", "support@v2"
# engine_ms values that binary floats hold exactly: the sums below are exact
ROWS = [
    dict(model_id=V1, route="support", arm="live", prompt_tokens=10, completion_tokens=2,
         engine_ms=250.0),
    dict(model_id=V1, route="support", arm="live", prompt_tokens=7, completion_tokens=3,
         engine_ms=125.5),
    dict(model_id=V1, route="support", arm="live", status="error", error="EngineError: x"),
    dict(model_id=V2, route="support", arm="canary", prompt_tokens=20, completion_tokens=5,
         engine_ms=500.25),
    dict(model_id=V2, route="support", arm="shadow", prompt_tokens=20, completion_tokens=4,
         engine_ms=62.5, parent_request_id="p1"),
    dict(model_id=V2, route=None, arm="live", prompt_tokens=3, completion_tokens=1,
         engine_ms=31.25),  # pinned
    dict(model_id=V1, route="other", arm="live", prompt_tokens=4, completion_tokens=4,
         engine_ms=1000.0),
]
OLD = dict(model_id=V1, route="support", arm="live", prompt_tokens=999, completion_tokens=999,
           engine_ms=99_000.0)  # before the window


@pytest.fixture(params=["sqlite", "postgres"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogReader]:
    """The rows above written by the real writer; a read-only reader on the same database."""
    sink: LogSink
    reader: LogReader
    if request.param == "sqlite":
        path = tmp_path / "log" / "inference.db"
        sink, reader = SqliteSink(path), SqliteReader(path)
    else:
        url = request.getfixturevalue("pg_url")
        sink, reader = PostgresSink(url), PostgresReader(url)
    writer = make_writer(sink, tmp_path)
    await writer.start()
    for i, kw in enumerate(ROWS):
        writer.record(make_record(f"r{i}", at=T0 + timedelta(seconds=i), **kw))
    writer.record(make_record("old", at=T0 - timedelta(days=2), **OLD))
    await writer.close()  # drains every record into the database
    yield reader
    await reader.close()


def _by_key(report: CostReport) -> dict[tuple[str, str | None], CostLine]:
    return {(x.model_id, x.route): x for x in report.lines}


async def test_sums_per_model_and_route_are_exact(log: LogReader) -> None:
    report = await cost_report(log, PriceBook(Prices()), since=T0 - timedelta(hours=1))
    lines = _by_key(report)
    assert set(lines) == {(V1, "support"), (V2, "support"), (V2, None), (V1, "other")}
    v1 = lines[(V1, "support")]
    assert (v1.requests, v1.errors, v1.shadow) == (3, 1, 0)
    assert (v1.prompt_tokens, v1.completion_tokens) == (17, 5)
    assert v1.engine_s == 375.5 / 1000
    v2 = lines[(V2, "support")]
    assert (v2.requests, v2.errors, v2.shadow) == (2, 0, 1)
    assert (v2.prompt_tokens, v2.completion_tokens) == (40, 9)
    assert v2.engine_s == 562.75 / 1000
    pinned = lines[(V2, None)]
    assert pinned.engine_s == 31.25 / 1000
    t = report.total
    assert (t.requests, t.errors, t.shadow) == (7, 1, 1)
    assert (t.prompt_tokens, t.completion_tokens) == (64, 19)
    assert t.engine_s == pytest.approx(1969.5 / 1000, rel=1e-12)
    assert report.priced is False and t.cost is None
    assert all(x.cost is None for x in report.lines)


async def test_route_filter_and_window(log: LogReader) -> None:
    only = await cost_report(log, PriceBook(Prices()), since=T0 - timedelta(hours=1),
                             route="other")
    assert [(x.model_id, x.route, x.requests) for x in only.lines] == [(V1, "other", 1)]
    assert only.total.engine_s == 1.0
    wide = await cost_report(log, PriceBook(Prices()), since=T0 - timedelta(days=3),
                             route="support")
    v1 = _by_key(wide)[(V1, "support")]
    assert v1.requests == 4 and v1.prompt_tokens == 17 + 999


async def test_estimated_cost_from_prices_and_overrides(log: LogReader) -> None:
    settings = Settings(price_per_gpu_hour=3.6, price_per_1k_prompt_tokens=1.0,
                        price_per_1k_completion_tokens=2.0,
                        price_overrides={V2: Prices(price_per_1k_prompt_tokens=10.0)})
    report = await cost_report(log, PriceBook.of(settings), since=T0 - timedelta(hours=1),
                               currency="EUR")
    lines = _by_key(report)
    v1 = lines[(V1, "support")]
    # 3.6 per hour = 0.001 per second; tokens per 1k
    assert v1.cost == pytest.approx(0.3755 * 0.001 + 17 / 1000 * 1.0 + 5 / 1000 * 2.0)
    v2 = lines[(V2, "support")]
    assert v2.cost == pytest.approx(0.56275 * 0.001 + 40 / 1000 * 10.0 + 9 / 1000 * 2.0)
    assert report.total.cost == pytest.approx(sum(x.cost or 0.0 for x in report.lines))
    assert report.priced and report.currency == "EUR"


async def test_an_empty_or_missing_log_reports_nothing(tmp_path: Path) -> None:
    reader = SqliteReader(tmp_path / "nothing.db")
    try:
        report = await cost_report(reader, PriceBook(Prices()), since=T0)
    finally:
        await reader.close()
    assert report.lines == [] and report.total.requests == 0 and report.total.engine_s == 0
