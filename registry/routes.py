"""What the registry reads of the routes: which adapters each route names, in which arm.

The router owns the route state (:mod:`lora_router.router.flags.state`: every field, its
validation, the stores). The registry only asks which adapters the routes reference, so
it takes any mapping of route name to an object with the attributes of
:class:`RouteView` (the router's ``RouteState`` has them), and, when the caller passes
none, reads the arms of ``routes.yaml`` itself (:func:`read_routes_file`; other keys are
the router's and are not checked here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lora_router.ground.errors import ConfigError
from lora_router.ground.ids import parse_adapter_id


class SplitView(Protocol):
    """A canary or shadow arm: the adapter and its share of traffic."""

    @property
    def adapter(self) -> str: ...

    @property
    def percent(self) -> float: ...


class RouteView(Protocol):
    """The arms of one route, as the registry reads them."""

    @property
    def live(self) -> str: ...

    @property
    def canary(self) -> SplitView | None: ...

    @property
    def shadow(self) -> SplitView | None: ...

    @property
    def rollback_target(self) -> str | None: ...

    def referenced_adapters(self) -> set[str]: ...


class _Split(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    adapter: str
    percent: float = Field(ge=0, le=100)

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        parse_adapter_id(v)
        return v


class RouteArms(BaseModel):
    """One route's arms from ``routes.yaml`` (a :class:`RouteView`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    live: str
    canary: _Split | None = None
    shadow: _Split | None = None
    rollback_target: str | None = None

    @field_validator("live", "rollback_target")
    @classmethod
    def _adapter(cls, v: str | None) -> str | None:
        if v is not None:
            parse_adapter_id(v)
        return v

    def referenced_adapters(self) -> set[str]:
        """Every adapter this route may send traffic to, or flip to."""
        refs = {self.live} | {s.adapter for s in (self.canary, self.shadow) if s is not None}
        return refs | ({self.rollback_target} if self.rollback_target else set())


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    routes: dict[str, RouteArms] = Field(default_factory=dict)


def read_routes_file(path: Path) -> dict[str, RouteArms]:
    """The arms of every route in ``path``; ``ConfigError`` naming the file when it is
    missing, not YAML, or names an invalid adapter id."""
    if not path.is_file():
        raise ConfigError(f"routes file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return dict(_RoutesFile.model_validate(raw).routes)
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid routes file: {exc}") from exc
