"""From an ``InferenceRecord`` to the row dicts the sinks insert, and to/from spool JSON.

A row is a ``dict`` keyed by ``schema.COLUMNS`` (``served_at`` a timezone-aware UTC
``datetime``, ``input_features`` a ``dict``); an input row is keyed by
``schema.INPUT_COLUMNS``. The raw prompt only ever reaches an input row, and only when the
input store is enabled. An input row's ``stored_at`` is when its request was served (at
most now); retention and deletion tombstones compare against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lora_router.router.log.features import LabelsFor, TokenCounter, compute_features
from lora_router.router.log.record import InferenceRecord, hash_input, hash_route_key
from lora_router.router.log.schema import COLUMNS, INPUT_COLUMNS

Row = dict[str, Any]


@dataclass(frozen=True)
class RowBuilder:
    """Turns records into rows; computes features (the CPU work kept off the request path)."""

    labels_for: LabelsFor | None = None
    token_counter: TokenCounter | None = None
    input_store: bool = False
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def build(self, rec: InferenceRecord) -> tuple[Row, Row | None]:
        labels: tuple[str, ...] = ()
        if self.labels_for is not None and rec.route:
            labels = tuple(self.labels_for(rec.route) or ())
        feats = compute_features(
            rec.prompt,
            rec.output or "",
            prompt_tokens=rec.prompt_tokens,
            token_counter=self.token_counter,
            labels=labels,
        )
        if rec.input_features:
            feats.update(rec.input_features)
        row = {col: getattr(rec, col) for col in COLUMNS}
        if row["input_hash"] is None:  # hashed here, off the request path
            row["input_hash"] = hash_input(rec.prompt or "")
        if row["route_key_hash"] is None and rec.route_key is not None:
            row["route_key_hash"] = hash_route_key(rec.route_key)
        row["input_features"] = feats
        row["output"] = rec.output or ""
        row["served_at"] = as_utc(rec.served_at)
        row["status"] = rec.status if rec.status in ("ok", "error") else "error"
        inp = None
        if self.input_store and rec.prompt is not None:
            inp = {
                "request_id": rec.request_id,
                "subject": rec.subject,
                "route": rec.route,
                "model_id": rec.model_id,
                "prompt": rec.prompt,
                "output": rec.output,
                # the request's time (never later than now): a record still queued when
                # its subject is deleted is covered by the deletion's tombstone
                "stored_at": min(self.now(), row["served_at"]),
            }
        return row, inp


def as_utc(ts: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def to_json(row: Row) -> Row:
    """A JSON-safe copy (datetimes as ISO-8601)."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def from_json(data: Row, columns: tuple[str, ...], time_key: str) -> Row:
    row = {col: data.get(col) for col in columns}
    ts = row[time_key]
    if isinstance(ts, str):
        row[time_key] = as_utc(datetime.fromisoformat(ts))
    return row


def row_from_json(data: Row) -> Row:
    return from_json(data, COLUMNS, "served_at")


def input_from_json(data: Row) -> Row:
    return from_json(data, INPUT_COLUMNS, "stored_at")
