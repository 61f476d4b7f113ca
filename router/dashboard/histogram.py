"""Latency percentiles from a histogram the database fills, as Prometheus estimates them.

The database counts rows per latency bin (:func:`bin_sql`, a plain ``CASE``: the same SQL
on SQLite and PostgreSQL), so the dashboard reads a few rows per adapter, slice and time
bucket whatever the traffic, instead of every latency. Bins are 20 % wide (edges from 1 ms
to 2 min); :func:`quantile` interpolates linearly inside the bin that holds the rank, so an
estimate is within one bin's width of the exact value.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

RATIO = 1.2
FIRST_MS = 1.0
LAST_MS = 120_000.0


def _edges() -> tuple[float, ...]:
    edges, e = [], FIRST_MS
    while e < LAST_MS:
        edges.append(round(e, 3))
        e *= RATIO
    return tuple(edges)


EDGES = _edges()  # bin i holds [EDGES[i-1], EDGES[i]); bin 0 [0, 1 ms); the last, the rest
NO_LATENCY = -1


def bin_sql(column: str) -> str:
    """The bin of ``column`` as SQL (``NO_LATENCY`` for NULL)."""
    whens = " ".join(f"WHEN {column} < {e!r} THEN {i}" for i, e in enumerate(EDGES))
    return f"CASE WHEN {column} IS NULL THEN {NO_LATENCY} {whens} ELSE {len(EDGES)} END"


def bin_of(value_ms: float | None) -> int:
    """The bin :func:`bin_sql` gives ``value_ms``."""
    if value_ms is None:
        return NO_LATENCY
    return bisect.bisect_right(EDGES, value_ms)


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile of the latencies counted in ``hist`` (bin: count), or None."""
    counts = sorted((b, n) for b, n in hist.items() if b != NO_LATENCY and n > 0)
    total = sum(n for _, n in counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for b, n in counts:
        if seen + n >= rank:
            if b >= len(EDGES):
                return EDGES[-1]  # beyond the last edge: at least that
            lo = 0.0 if b == 0 else EDGES[b - 1]
            return lo + (EDGES[b] - lo) * max(rank - seen, 0) / n
        seen += n
    return EDGES[-1]
