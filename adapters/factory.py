"""Build the engine an :class:`EngineSpec` names: ``embedded`` (torch, in process),
``remote`` (backend servers speaking vLLM's OpenAI protocol, :mod:`adapters.remote`) or
``vllm`` (an optional extra).

The spec is the engine layer's own configuration: the router builds it from its settings
(:func:`lora_router.router.engine_spec.engine_spec`), so nothing here reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lora_router.adapters.engine import Engine
from lora_router.adapters.peft_engine import EmbeddedEngine, EngineConfig
from lora_router.adapters.remote import RemoteConfig, RemoteEngine
from lora_router.adapters.vllm_support import VllmConfig
from lora_router.ground.errors import ConfigError
from lora_router.ground.home import Home


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to build (``embedded`` | ``remote`` | ``vllm``) and each one's knobs."""

    kind: str = "embedded"
    config: EngineConfig = field(default_factory=EngineConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    vllm: VllmConfig | None = None  # None: VllmConfig()'s defaults


def _embedded(spec: EngineSpec, home: Home) -> Engine:
    return EmbeddedEngine.from_home(home, spec.config)


def _remote(spec: EngineSpec, home: Home) -> Engine:
    return RemoteEngine.from_home(home, spec.remote)


def _vllm(spec: EngineSpec, home: Home) -> Engine:
    """vLLM in process; without the ``vllm`` extra, one ``ConfigError`` line saying so."""
    from lora_router.adapters.vllm_engine import VllmEngine  # vllm is imported there only

    return VllmEngine.from_home(home, spec.vllm if spec.vllm is not None else VllmConfig())


BUILDERS: dict[str, Callable[[EngineSpec, Home], Engine]] = {
    "embedded": _embedded,
    "remote": _remote,
    "vllm": _vllm,
}


def build_engine(spec: EngineSpec, home: Home) -> Engine:
    """Build the engine on ``home``'s pinned base (``BaseModelMismatch`` if its files
    changed; a remote engine checks its backends' bases when it starts)."""
    builder = BUILDERS.get(spec.kind)
    if builder is None:
        raise ConfigError(f"unknown engine {spec.kind!r} (expected one of {', '.join(BUILDERS)})")
    return builder(spec, home)
