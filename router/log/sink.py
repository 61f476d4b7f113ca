"""The log sink: where ``inference_log`` rows live (SQLite embedded, or PostgreSQL).

Every method is async and safe to call concurrently. Connectivity failures and timeouts
raise ``LogStoreUnavailable`` (the writer then spools); a row the database refuses raises
``RowRejected``. Rows are dicts keyed by ``schema.COLUMNS`` (see ``router.log.rows``).

Delete-by-subject covers rows not yet written: ``purge_inputs(subject=...)`` records a
tombstone (the subject's sha256 and the deletion time, ``subject_deletions``) in the same
transaction as the delete, and ``write`` drops every input row whose subject has a tombstone
at or after the row's ``stored_at``, atomically with the insert (PostgreSQL: an advisory lock,
shared by writers and exclusive for a deletion; SQLite: one writer at a time). So a spooled
or queued input row of a deleted subject, replayed by any replica, never comes back.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lora_router.ground.errors import InvalidRequest, LoraRouterError
from lora_router.router.log.rows import Row, as_utc


class RowRejected(LoraRouterError):
    """The database refused a row (constraint or type); it goes to the dead-letter file."""

    status_code = 422
    code = "log_row_rejected"


@dataclass(frozen=True)
class StatsRow:
    """Aggregates for one (model_id, arm) over a time window."""

    model_id: str
    arm: str | None
    count: int
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy}


class LogSink(ABC):
    """Storage for the inference log; one implementation per database."""

    name: str = "abstract"

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations (idempotent; safe on every start)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the sink may be opened again."""

    @abstractmethod
    async def write(self, rows: Sequence[Row], inputs: Sequence[Row] = ()) -> int:
        """Insert rows (and input-store rows) in one transaction, ignoring request ids that
        already exist (replaying a batch twice leaves the same rows), and dropping input rows
        of a subject deleted at or after their ``stored_at``. Returns rows inserted."""

    @abstractmethod
    async def set_feedback(
        self, request_id: str, was_correct: bool, failure_cluster: str | None
    ) -> bool:
        """Set the outcome of one request (idempotent); False when the id is unknown."""

    @abstractmethod
    async def get(self, request_id: str) -> Row | None:
        """One row by request id, or None."""

    @abstractmethod
    async def tail(self, n: int, route: str | None = None) -> list[Row]:
        """The ``n`` most recently served rows, newest first."""

    @abstractmethod
    async def stats(self, since: datetime, route: str | None = None) -> list[StatsRow]:
        """Per (model_id, arm) aggregates for rows served at or after ``since``."""

    @abstractmethod
    def export(
        self, since: datetime, model_id: str | None = None, chunk: int = 1000
    ) -> AsyncIterator[list[Row]]:
        """Rows served at or after ``since`` (optionally one model), oldest first, in chunks."""

    @abstractmethod
    async def purge_inputs(
        self, *, subject: str | None = None, before: datetime | None = None
    ) -> int:
        """Delete input-store rows of a subject and/or stored before a time; returns count.
        With a subject, also records its deletion tombstone (now), so that rows of it stored
        until now and written later (spool replay) are dropped."""

    @abstractmethod
    async def inputs(self, subject: str | None = None) -> list[Row]:
        """Input-store rows (all, or one subject's), by request id."""

    @abstractmethod
    async def applied_migrations(self) -> list[int]:
        """Versions recorded in ``schema_migrations``."""


# shared SQL, written with ``?`` placeholders (the PostgreSQL sink rewrites them to %s)
STATS_SQL = """SELECT model_id, arm, COUNT(*),
    SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
    SUM(COALESCE(prompt_tokens, 0)), SUM(COALESCE(completion_tokens, 0)),
    COUNT(was_correct), SUM(CASE WHEN was_correct THEN 1 ELSE 0 END){extra}
FROM inference_log WHERE served_at >= ?{route_clause}
GROUP BY model_id, arm ORDER BY model_id, arm"""

FEEDBACK_SQL = "UPDATE inference_log SET was_correct = ?, failure_cluster = ? WHERE request_id = ?"


def stats_sql(route: str | None, extra: str = "") -> str:
    return STATS_SQL.format(extra=extra, route_clause=" AND route = ?" if route else "")


def stats_row(values: Sequence[Any], p50: float | None, p99: float | None) -> StatsRow:
    model_id, arm, n, errors, ptok, ctok, labelled, correct = values[:8]
    return StatsRow(
        model_id=model_id,
        arm=arm,
        count=int(n),
        errors=int(errors or 0),
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        prompt_tokens=int(ptok or 0),
        completion_tokens=int(ctok or 0),
        labelled=int(labelled or 0),
        correct=int(correct or 0),
    )


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's ``percentile_cont``)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``1h`` / ``30m`` / ``7d`` (relative to now) or an ISO-8601 time (UTC if naive)."""
    now = now or datetime.now(UTC)
    m = _SINCE.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidRequest(f"--since {text!r}: use e.g. 30m, 1h, 7d or an ISO time") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def subject_hash(subject: str) -> str:
    """What a deletion tombstone keeps of a subject: its sha256 (hex)."""
    return hashlib.sha256(subject.encode("utf-8")).hexdigest()


def input_subject_hashes(inputs: Sequence[Row]) -> list[str]:
    """The distinct subject hashes of input rows that have a subject, sorted."""
    return sorted({subject_hash(s) for i in inputs if (s := i.get("subject")) is not None})


def drop_deleted(inputs: Sequence[Row], deleted: Mapping[str, datetime]) -> list[Row]:
    """Input rows minus those whose subject was deleted at or after their ``stored_at``
    (``deleted``: subject hash to deletion time, as read from ``subject_deletions``)."""
    kept = []
    for i in inputs:
        s = i.get("subject")
        at = None if s is None else deleted.get(subject_hash(s))
        if at is None or as_utc(i["stored_at"]) > as_utc(at):
            kept.append(i)
    return kept


def purge_where(
    subject: str | None, before: datetime | None, ts: Callable[[datetime], Any]
) -> tuple[str, tuple[Any, ...]]:
    if subject is None and before is None:
        raise InvalidRequest("purge_inputs needs a subject or a time")
    clauses, args = [], []
    if subject is not None:
        clauses.append("subject = ?")
        args.append(subject)
    if before is not None:
        clauses.append("stored_at < ?")
        args.append(ts(before))
    return " AND ".join(clauses), tuple(args)
