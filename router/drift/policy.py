"""A route's drift guard policy, kept in the route's state (``RouteState.guard``).

Versioned and audited like any flag change (``RouteService.set_guard``). This module only
defines the data: it imports nothing from the flags so that the route state can hold it.

- ``auto_rollback``: when a quality alert on this route's live adapter fires, roll the route
  back to its rollback target; on a canary or shadow, clear that split. Off: alerts only.
- ``protect``: slices watched with their own quality test, as ``feature=value`` over the
  inference log's ``input_features`` (``language=es``; dotted paths reach nested values).
- ``min_labels``: the minimum evidence: no quality alert on fewer labelled requests than
  this in its window (the requests since the test's statistic last left 0).
- ``min_drop``: the drop in accuracy below the gate bar (absolute) the sequential test is
  tuned to detect fastest; smaller drops are detected too, more slowly.
- ``false_alarms_per_10k``: the false-alarm budget of one stream (route x adapter x arm),
  all its quality tests together, per 10,000 labelled requests of that stream; shared
  equally by the overall test and each protected slice's test.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SliceSpec(BaseModel):
    """One slice: requests whose feature ``feature`` equals ``value`` (compared as text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    value: str

    @classmethod
    def parse(cls, text: str) -> SliceSpec:
        feature, sep, value = text.partition("=")
        if not sep or not feature.strip() or not value.strip():
            raise ValueError(f"slice {text!r}: use feature=value, e.g. language=es")
        return cls(feature=feature.strip(), value=value.strip())

    @property
    def key(self) -> str:
        return f"{self.feature}={self.value}"

    def matches(self, features: dict[str, Any] | None) -> bool:
        found = feature_value(features, self.feature)
        return found is not None and str(found) == self.value


def feature_value(features: dict[str, Any] | None, path: str) -> Any:
    """The value at a dotted path of ``input_features`` (None when absent)."""
    cur: Any = features
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


class GuardPolicy(BaseModel):
    """A route's guard (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto_rollback: bool = False
    protect: tuple[str, ...] = ()
    min_labels: int = Field(default=15, ge=1, le=100_000)
    min_drop: float = Field(default=0.2, gt=0, lt=1)
    false_alarms_per_10k: float = Field(default=0.8, gt=0, le=10_000)

    @field_validator("protect")
    @classmethod
    def _protect(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        specs = [SliceSpec.parse(s) for s in v]
        keys = [s.key for s in specs]
        if len(set(keys)) != len(keys):
            raise ValueError("protect lists a slice twice")
        return tuple(keys)

    def slices(self) -> list[SliceSpec]:
        return [SliceSpec.parse(s) for s in self.protect]


DEFAULT_POLICY = GuardPolicy()
