"""The reference an adapter version's drift is measured against (shared by baselines and the
monitor).

A :class:`Baseline` is computed from the adapter's lineage (its training data, run by the
same feature function as the inference log: :func:`router.log.features.compute_features`)
and its model card's release-gate bars. It is stored as JSON next to the registry
(``registry/baselines/<adapter>.json``) and bound to the model card by sha256.

Keys:

- ``features``: categorical input features -> ``{value: fraction}`` (fractions sum to 1).
  Today ``language`` (``en``, ``es``, ``other``, ``unknown``).
- ``numeric``: numeric input features -> quantiles at :data:`QUANTILE_LEVELS`
  (0, 0.05, ..., 1). Today ``chars``, ``words``, ``tokens`` (when the base's tokenizer was
  at hand) and ``entities.<kind>`` (``entities.email``, ``entities.order_id``, ...).
- ``labels``: label -> fraction over the training rows; the reference for the log's
  ``predicted_label`` (output drift). ``None`` labels (unparseable) count as ``"none"``.
- ``gates``: release-gate bars from the model card's ``eval``: ``overall`` (from
  ``accuracy`` or ``overall``) and every ``slice_*`` key as it is (``slice_en``, ``slice_es``).
- ``n``: rows the distributions were computed from.
- ``computed_from``: ``dataset:<id>/<split>.jsonl sha256:<hex>`` lines (and the card's id),
  so a baseline says exactly which bytes it summarises.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

QUANTILE_LEVELS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
NO_LABEL = "none"  # a row whose label the feature function could not parse


class Baseline(BaseModel):
    """One adapter version's reference distributions and gate bars (see module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    adapter_id: str
    features: dict[str, dict[str, float]] = Field(default_factory=dict)
    numeric: dict[str, list[float]] = Field(default_factory=dict)
    labels: dict[str, float] = Field(default_factory=dict)
    gates: dict[str, float] = Field(default_factory=dict)
    n: int = Field(ge=0)
    computed_from: list[str] = Field(default_factory=list)
    quantile_levels: list[float] = Field(default_factory=lambda: list(QUANTILE_LEVELS))
