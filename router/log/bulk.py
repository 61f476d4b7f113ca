"""Bulk operations over a sink: feedback import (CSV / JSONL) and export (JSONL / Parquet)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lora_router.ground.errors import ConfigError, InvalidRequest
from lora_router.router.log.rows import Row, to_json
from lora_router.router.log.schema import COLUMNS
from lora_router.router.log.sink import LogSink

_TRUE = {"true", "1", "yes", "y", "t", "correct"}
_FALSE = {"false", "0", "no", "n", "f", "incorrect", "wrong"}


@dataclass(frozen=True)
class Feedback:
    request_id: str
    was_correct: bool
    failure_cluster: str | None = None


@dataclass
class ImportReport:
    updated: int = 0
    unknown: int = 0
    invalid: int = 0
    unknown_ids: list[str] = field(default_factory=list)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidRequest(f"was_correct: not a boolean: {value!r}")


def _feedback(obj: dict[str, Any]) -> Feedback:
    rid = str(obj.get("request_id") or "").strip()
    if not rid:
        raise InvalidRequest("request_id missing")
    cluster = obj.get("failure_cluster")
    cluster = None if cluster in (None, "") else str(cluster)
    return Feedback(rid, parse_bool(obj.get("was_correct")), cluster)


def read_feedback(path: Path, fmt: str = "auto") -> Iterator[Feedback | InvalidRequest]:
    """Feedback items from a CSV (header: request_id,was_correct[,failure_cluster]) or JSONL
    file; a bad line yields its ``InvalidRequest`` instead of stopping the import."""
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            objs: Iterator[Any] = csv.DictReader(fh)
        elif fmt == "jsonl":
            objs = (_json_line(line, n) for n, line in enumerate(fh, 1) if line.strip())
        else:
            raise InvalidRequest(f"unknown feedback format {fmt!r} (csv or jsonl)")
        for obj in objs:
            try:
                if isinstance(obj, InvalidRequest):
                    raise obj
                yield _feedback(obj)
            except InvalidRequest as exc:
                yield exc


def _json_line(line: str, n: int) -> dict[str, Any] | InvalidRequest:
    try:
        obj = json.loads(line)
    except ValueError:
        return InvalidRequest(f"line {n}: not JSON")
    return obj if isinstance(obj, dict) else InvalidRequest(f"line {n}: not an object")


async def import_feedback(
    sink: LogSink, items: Iterator[Feedback | InvalidRequest]
) -> ImportReport:
    """Apply feedback items; counts updated, unknown request ids, and invalid lines."""
    report = ImportReport()
    for item in items:
        if isinstance(item, InvalidRequest):
            report.invalid += 1
            continue
        if await sink.set_feedback(item.request_id, item.was_correct, item.failure_cluster):
            report.updated += 1
        else:
            report.unknown += 1
            if len(report.unknown_ids) < 20:
                report.unknown_ids.append(item.request_id)
    return report


async def export_rows(
    sink: LogSink, out: Path, *, since: datetime, model_id: str | None, fmt: str
) -> int:
    """Write matching rows to ``out`` as JSONL or Parquet; returns the row count."""
    if fmt == "jsonl":
        n = 0
        with out.open("w", encoding="utf-8") as fh:
            async for chunk in sink.export(since, model_id):
                for row in chunk:
                    fh.write(json.dumps(to_json(row), sort_keys=True) + "\n")
                n += len(chunk)
        return n
    if fmt == "parquet":
        rows: list[Row] = []
        async for chunk in sink.export(since, model_id):
            rows.extend(chunk)
        _write_parquet(rows, out)
        return len(rows)
    raise InvalidRequest(f"unknown export format {fmt!r} (jsonl or parquet)")


def _write_parquet(rows: list[Row], out: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        msg = "parquet export needs pyarrow: pip install 'lora-router[parquet]'"
        raise ConfigError(msg) from exc
    cols: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in COLUMNS}
    cols["input_features"] = [
        None if f is None else json.dumps(f, sort_keys=True) for f in cols["input_features"]
    ]
    types = {
        "confidence": pa.float32(),
        "served_at": pa.timestamp("us", tz="UTC"),
        "was_correct": pa.bool_(),
        "flag_version": pa.int64(),
        "latency_ms": pa.float64(),
        "prompt_tokens": pa.int64(),
        "completion_tokens": pa.int64(),
        "engine_ms": pa.float64(),
    }
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    pq.write_table(pa.table(cols, schema=schema), out)

