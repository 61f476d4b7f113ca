"""Route state: the feature flag that decides which adapter serves a route.

``routes.yaml`` (loaded at start, shipped in the demo home)::

    routes:
      support-triage:
        live: support-triage@v1
        rollback_target: null          # warm standby: kept resident
        canary: {adapter: support-triage@v2, percent: 10}   # optional
        shadow: {adapter: support-triage@v2, percent: 100}  # optional
        task:                          # optional; lets the log derive a predicted label
          type: classification
          labels: [billing, shipping, ...]

The route's policy text (:mod:`router.flags.policy_text`) is not in the routes file: it is
set with ``policy set`` and kept in the route store, like every later change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lora_router.ground.errors import AdapterNotFound, ConfigError
from lora_router.ground.ids import check_name, parse_adapter_id
from lora_router.router.drift.policy import GuardPolicy
from lora_router.router.flags.policy_text import PolicyText, policy_label

Arm = Literal["live", "canary", "shadow"]


class Split(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    adapter: str
    percent: float = Field(ge=0, le=100)

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        parse_adapter_id(v)
        return v


class TaskSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["classification", "generation"] = "generation"
    labels: tuple[str, ...] = ()


class RouteState(BaseModel):
    """One route's flag. ``version`` increases by one on every committed change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: str
    live: str
    canary: Split | None = None
    shadow: Split | None = None
    rollback_target: str | None = None
    task: TaskSpec = Field(default_factory=TaskSpec)
    guard: GuardPolicy | None = None  # drift guard (router.drift.policy); None: alerts only
    policy: PolicyText | None = None  # the policy text applied to every request
    last_policy_version: int = Field(default=0, ge=0)  # kept after a clear: never reused
    version: int = Field(default=1, ge=1)
    updated_by: str = "config"
    reason: str = "initial"
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        return check_name(v, "route")

    @field_validator("live", "rollback_target")
    @classmethod
    def _adapter(cls, v: str | None) -> str | None:
        if v is not None:
            parse_adapter_id(v)
        return v

    @model_validator(mode="after")
    def _policy_count(self) -> RouteState:
        if self.policy is not None and self.policy.version > self.last_policy_version:
            raise ValueError("last_policy_version is below the version of the policy in force")
        return self

    @property
    def policy_version(self) -> str | None:
        """The policy in force as the log names it (``support-triage/policy@3``), or None."""
        return None if self.policy is None else policy_label(self.route, self.policy.version)

    def referenced_adapters(self) -> set[str]:
        """Every adapter this route may send traffic to, or flip to (kept resident)."""
        refs = {self.live}
        if self.rollback_target:
            refs.add(self.rollback_target)
        if self.canary:
            refs.add(self.canary.adapter)
        if self.shadow:
            refs.add(self.shadow.adapter)
        return refs

    def serving_adapters(self) -> set[str]:
        """The adapters that answer requests (live, canary, shadow; not the standby)."""
        return {self.live} | {s.adapter for s in (self.canary, self.shadow) if s is not None}


def check_route_adapters(states: dict[str, RouteState], known: set[str]) -> None:
    """``AdapterNotFound`` naming the first route (by name) of ``states`` that references an
    adapter not in ``known`` (registered, not retired), and those adapters: the check
    before seeding (``RouteService.seed``, and ``serve`` before the gateway starts)."""
    for route, state in sorted(states.items()):
        unknown = sorted(state.referenced_adapters() - known)
        if unknown:
            raise AdapterNotFound(
                f"route {route!r} names unknown or retired adapter(s): {', '.join(unknown)}",
                route=route, adapters=unknown,
            )


class _RouteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    live: str
    canary: Split | None = None
    shadow: Split | None = None
    rollback_target: str | None = None
    task: TaskSpec = Field(default_factory=TaskSpec)
    guard: GuardPolicy | None = None


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: dict[str, _RouteEntry] = Field(default_factory=dict)


def load_routes_file(path: Path) -> dict[str, RouteState]:
    """Parse ``routes.yaml`` into initial states (version 1); ``ConfigError`` names the field."""
    if not path.is_file():
        raise ConfigError(f"routes file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        parsed = _RoutesFile.model_validate(raw)
        return {
            name: RouteState(route=name, **entry.model_dump())
            for name, entry in parsed.routes.items()
        }
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid routes file: {exc}") from exc


def dump_routes_file(states: dict[str, RouteState], path: Path) -> None:
    data = {
        "routes": {
            name: s.model_dump(
                mode="json",
                include={"live", "canary", "shadow", "rollback_target", "task"}
                | ({"guard"} if s.guard is not None else set()),
            )
            for name, s in sorted(states.items())
        }
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
