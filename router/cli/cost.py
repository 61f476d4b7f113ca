"""CLI command ``cost``: requests, tokens, engine seconds and estimated cost per model_id and
route, from the inference log (``DATABASE_URL``, else the home's SQLite file).

Prices come from the settings (``LORA_ROUTER_PRICE_PER_GPU_HOUR``,
``LORA_ROUTER_PRICE_PER_1K_PROMPT_TOKENS``, ``LORA_ROUTER_PRICE_PER_1K_COMPLETION_TOKENS``,
``LORA_ROUTER_PRICE_OVERRIDES``); :mod:`router.log.cost` says how each figure is measured.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from lora_router.ground.home import Home
from lora_router.router.cli.common import HomeOpt, friendly_errors, load_settings
from lora_router.router.cli.output import Col, Listing, echo_json, print_listing
from lora_router.router.dashboard.reader import build_reader
from lora_router.router.log.cost import CostLine, CostReport, PriceBook, cost_report
from lora_router.router.log.factory import build_sink, sqlite_path
from lora_router.router.log.sink import parse_since
from lora_router.router.settings import Settings

_COLS = ("model_id", "route", "requests", "errors", "shadow", "prompt tok", "completion tok",
         "engine s", "cost")


async def _report(settings: Settings, since: str, route: str | None) -> CostReport:
    start = parse_since(since)
    sink = build_sink(settings)  # opening applies the log's migrations (engine_ms)
    await sink.open()
    await sink.close()
    reader = build_reader(settings.database_url, sqlite_path(Home.at(settings.home)))
    try:
        return await cost_report(reader, PriceBook.of(settings), since=start, route=route,
                                 currency=settings.price_currency)
    finally:
        await reader.close()


def _money(v: float | None, currency: str) -> str:
    return "-" if v is None else f"{v:.4f} {currency}"


def _cells(line: CostLine, currency: str) -> list[str]:
    return [line.model_id, line.route or "-", str(line.requests), str(line.errors),
            str(line.shadow), str(line.prompt_tokens), str(line.completion_tokens),
            f"{line.engine_s:.3f}", _money(line.cost, currency)]


@friendly_errors
def cost(
    since: Annotated[str, typer.Option("--since", help="30m, 1h, 7d or an ISO time.")] = "7d",
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    home: HomeOpt = None,
) -> None:
    """Per model_id and route: requests, tokens, engine seconds, estimated cost."""
    settings = load_settings(home)
    report = asyncio.run(_report(settings, since, route))
    if as_json:
        echo_json(report)
        return
    rows = [_cells(x, report.currency) for x in report.lines]
    rows.append(_cells(report.total, report.currency))
    caption = None if report.priced else (
        "no prices configured: set LORA_ROUTER_PRICE_PER_GPU_HOUR and/or "
        "LORA_ROUTER_PRICE_PER_1K_PROMPT_TOKENS / _COMPLETION_TOKENS")
    title = (f"route {route or '(all)'} since {report.since:%Y-%m-%d %H:%M:%S} UTC "
             "(engine s: each request's share of the engine's forward passes)")
    print_listing(Listing([Col(c) for c in _COLS], rows, title=title, caption=caption))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("cost")(cost)
