"""CLI commands: ``log`` (tail, stats, export, replay, input store) and ``feedback import``.

Each command talks to the database the settings select (``DATABASE_URL``, else the SQLite
file in the home), through the same sink the gateway's writer uses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lora_router.router.cli.common import HomeOpt, console, friendly_errors, load_settings
from lora_router.router.cli.output import Col, Listing, echo_jsonl, print_listing
from lora_router.router.log import bulk
from lora_router.router.log.factory import build_log_writer, build_sink, scrub_local
from lora_router.router.log.rows import to_json
from lora_router.router.log.sink import LogSink, parse_since

T = TypeVar("T")

log_app = typer.Typer(help="Query the inference log.", no_args_is_help=True)
feedback_app = typer.Typer(help="Outcomes of served requests (was_correct).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
RouteOpt = Annotated[str | None, typer.Option("--route", help="Only this route.")]


def _with_sink(home: Path | None, fn: Callable[[LogSink], Awaitable[T]]) -> T:
    settings = load_settings(home)

    async def run() -> T:
        sink = build_sink(settings)
        await sink.open()
        try:
            return await fn(sink)
        finally:
            await sink.close()

    return asyncio.run(run())


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


@log_app.command("tail")
@friendly_errors
def tail(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many rows.")] = 20,
    route: RouteOpt = None,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """The most recent requests, newest first."""
    rows = _with_sink(home, lambda s: s.tail(n, route))
    if as_json:
        echo_jsonl(to_json(row) for row in rows)
        return
    cols = ("served_at", "request_id", "route", "arm", "model_id", "status", "latency_ms",
            "was_correct")
    print_listing(Listing([Col(c) for c in cols],
                          [[_fmt(row.get(c)) for c in cols] for row in rows]))


@log_app.command("stats")
@friendly_errors
def stats(
    route: RouteOpt = None,
    since: Annotated[str, typer.Option("--since", help="30m, 1h, 7d or an ISO time.")] = "1h",
    as_json: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Per model_id and arm: requests, errors, latency p50/p99, tokens, accuracy."""
    start = parse_since(since)
    groups = _with_sink(home, lambda s: s.stats(start, route))
    if as_json:
        echo_jsonl(g.as_dict() for g in groups)
        return
    cols = ("model_id", "arm", "requests", "errors", "p50 ms", "p99 ms", "prompt tok",
            "completion tok", "labelled", "accuracy")
    rows = [
        [g.model_id, _fmt(g.arm), str(g.count), str(g.errors), _fmt(g.latency_p50_ms),
         _fmt(g.latency_p99_ms), str(g.prompt_tokens), str(g.completion_tokens),
         str(g.labelled), "-" if g.accuracy is None else f"{g.accuracy:.3f}"]
        for g in groups
    ]
    print_listing(Listing([Col(c) for c in cols], rows,
                          title=f"route {route or '(all)'} since {start:%Y-%m-%d %H:%M:%S} UTC"))


@log_app.command("export")
@friendly_errors
def export(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file.")],
    model_id: Annotated[str | None, typer.Option("--model-id", help="Only this model.")] = None,
    since: Annotated[str, typer.Option("--since", help="30m, 1h, 7d or an ISO time.")] = "7d",
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    home: HomeOpt = None,
) -> None:
    """Export rows (oldest first) for offline analysis or the next training set."""
    start = parse_since(since)
    n = _with_sink(
        home, lambda s: bulk.export_rows(s, out, since=start, model_id=model_id, fmt=fmt)
    )
    console.print(f"exported {n} rows to {out}")


@log_app.command("replay")
@friendly_errors
def replay(home: HomeOpt = None) -> None:
    """Write spooled records into the database now (the gateway also does this itself)."""
    settings = load_settings(home)

    async def run() -> dict[str, Any]:
        writer = build_log_writer(settings)
        await writer.start()
        await writer.flush()
        status = writer.status()
        await writer.close()
        return status

    status = asyncio.run(run())
    console.print(f"spool replayed; sink {status['sink']} healthy={status['healthy']}, "
                  f"{status['spool_pending']} rows still pending")


@log_app.command("delete-subject")
@friendly_errors
def delete_subject(
    subject: Annotated[str, typer.Argument(help="The data subject (the requests' `user`).")],
    home: HomeOpt = None,
) -> None:
    """Delete a subject's stored inputs (input store; inference_log holds no raw input),
    also those still in the spool: sealed segments are rewritten without them, and the
    database keeps a deletion tombstone so that a later replay never writes them back."""
    settings = load_settings(home)
    scrubbed = scrub_local(settings, subject)  # sealed spool, dead processes' journals
    n = _with_sink(home, lambda s: s.purge_inputs(subject=subject))
    console.print(f"deleted {n} stored inputs of subject {subject!r} "
                  f"(and {scrubbed} not yet written, from the spool)")


@log_app.command("purge-inputs")
@friendly_errors
def purge_inputs(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="e.g. 30d (default: the retention).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Delete stored inputs older than the retention period."""
    settings = load_settings(home)
    before = parse_since(older_than or f"{settings.input_store_retention_days}d")
    n = _with_sink(home, lambda s: s.purge_inputs(before=before))
    console.print(f"purged {n} stored inputs older than {before:%Y-%m-%d %H:%M:%S} UTC")


@feedback_app.command("import")
@friendly_errors
def feedback_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSONL.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, csv or jsonl.")] = "auto",
    home: HomeOpt = None,
) -> None:
    """Set was_correct / failure_cluster for many requests (header or keys: request_id,
    was_correct, failure_cluster). Idempotent; reports updated and unknown counts."""
    report = _with_sink(home, lambda s: bulk.import_feedback(s, bulk.read_feedback(file, fmt)))
    console.print(f"updated {report.updated}, unknown {report.unknown}, invalid {report.invalid}")
    if report.unknown_ids:
        console.print("unknown request ids: " + ", ".join(report.unknown_ids), highlight=False)
    typer.echo(json.dumps({"updated": report.updated, "unknown": report.unknown,
                           "invalid": report.invalid}))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(log_app, name="log")
    app.add_typer(feedback_app, name="feedback")
