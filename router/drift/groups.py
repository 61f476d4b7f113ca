"""How the runbook groups log rows: by slice, by input feature bins, by output.

A *keyer* maps one row to the group keys it belongs to (none, one or several):
``language=es``; ``chars <= 75`` / ``75 < chars <= 79`` / ``chars > 83`` (bins at the
quartiles of the rows given, observed values only); ``entities.order_id > 0``;
``predicted_label=billing``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lora_router.router.drift.policy import SliceSpec, feature_value
from lora_router.router.drift.queries import LogEntry

DEFAULT_SLICE_FEATURES = ("language",)

Keyer = Callable[[LogEntry], Iterable[str]]


def slice_keyer(features: Sequence[str]) -> Keyer:
    def keys(r: LogEntry) -> Iterable[str]:
        for f in features:
            v = feature_value(r.features, f)
            if v is not None:
                yield f"{f}={v}"
    return keys


def _numeric(v: Any) -> float | None:
    return None if isinstance(v, bool) or not isinstance(v, int | float) else float(v)


def _fmt(x: float) -> str:
    return f"{x:g}"


def numeric_keyer(name: str, rows: Sequence[LogEntry]) -> Keyer | None:
    """Quartile bins of a numeric feature, edges from ``rows`` (None: one value only)."""
    values = sorted(v for r in rows
                    if (v := _numeric(feature_value(r.features, name))) is not None)
    # edges are observed values (lower order statistics), below the largest value: bins of a
    # feature with few distinct values are those values, never an empty in-between bin
    edges = sorted({values[int(q * (len(values) - 1))] for q in (0.25, 0.5, 0.75)
                    if values and values[int(q * (len(values) - 1))] < values[-1]})
    if not edges:
        return None

    def label(i: int) -> str:
        if i == 0:
            return f"{name} <= {_fmt(edges[0])}"
        if i == len(edges):
            return f"{name} > {_fmt(edges[-1])}"
        return f"{_fmt(edges[i - 1])} < {name} <= {_fmt(edges[i])}"

    def keys(r: LogEntry) -> Iterable[str]:
        v = _numeric(feature_value(r.features, name))
        if v is not None:
            yield label(bisect.bisect_left(edges, v))
    return keys


def entity_keyer(r: LogEntry) -> Iterable[str]:
    for kind, count in sorted((r.features.get("entities") or {}).items()):
        if isinstance(count, int | float) and count > 0:
            yield f"entities.{kind} > 0"


def output_keyer(r: LogEntry) -> Iterable[str]:
    label = r.features.get("predicted_label", "absent")
    if label != "absent":
        yield f"predicted_label={label}"


def slice_features(protect: Sequence[str]) -> list[str]:
    """The features to slice by: those the guard protects, else ``language``."""
    names = [SliceSpec.parse(p).feature for p in protect]
    return list(dict.fromkeys([*names, *DEFAULT_SLICE_FEATURES]))
