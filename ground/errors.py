"""The project's exception tree.

Every error carries a class-level ``status_code`` so the gateway maps it to HTTP in one
handler; library errors are wrapped at the boundary with ``raise ... from exc``. Code never
branches on an error's message text.
"""

from __future__ import annotations

from typing import Any


class LoraRouterError(Exception):
    """Base of every error this project raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ConfigError(LoraRouterError):
    """Settings or files on disk are missing or inconsistent; raised at start."""

    code = "config_error"


class HomeNotInitialised(ConfigError):
    """The home directory has no pinned base (run `lora-router demo build` or `base pin`)."""

    code = "home_not_initialised"


class BaseModelMismatch(ConfigError):
    """The base model's files no longer match the hash pinned in the home."""

    code = "base_model_mismatch"


class InvalidRequest(LoraRouterError):
    """A request is well-formed but cannot be served (context window, max_tokens, ...)."""

    status_code = 400
    code = "invalid_request"


class LimitExceeded(InvalidRequest):
    """A request's body, prompt or field is larger than its configured limit."""

    status_code = 413
    code = "limit_exceeded"


class InvalidId(InvalidRequest):
    """An adapter, route or dataset id is not a plain name (paths and traversal are refused)."""

    code = "invalid_id"


class ModelNotFound(LoraRouterError):
    """The request's ``model`` is neither a route, a known adapter id, nor the base."""

    status_code = 404
    code = "model_not_found"


class RouteNotFound(ModelNotFound):
    """No route of that name exists."""

    code = "route_not_found"


class RequestNotFound(LoraRouterError):
    """No inference-log record has that request id (feedback for an unknown request)."""

    status_code = 404
    code = "request_not_found"


class LogStoreUnavailable(LoraRouterError):
    """The inference-log database cannot be reached or timed out (records go to the spool)."""

    status_code = 503
    code = "log_store_unavailable"


class AdapterError(LoraRouterError):
    """Base of adapter load/unload failures."""

    status_code = 422
    code = "adapter_error"


class AdapterNotFound(AdapterError):
    """No adapter directory or model card exists for that id."""

    status_code = 404
    code = "adapter_not_found"


class AdapterIncompatible(AdapterError):
    """The adapter's declared base, target modules or shapes do not fit the pinned base."""

    code = "adapter_incompatible"


class AdapterIntegrityError(AdapterError):
    """The adapter's files do not match the hashes recorded in its model card."""

    code = "adapter_integrity_error"


class AdapterNotResident(AdapterError):
    """A request named an adapter that is not loaded in the engine."""

    status_code = 503
    code = "adapter_not_resident"


class AdapterBusy(AdapterError):
    """An adapter cannot be unloaded or replaced now (in-flight requests, or referenced)."""

    status_code = 409
    code = "adapter_busy"


class NoFreeSlot(AdapterError):
    """Every adapter slot of the engine is taken."""

    status_code = 503
    code = "no_free_slot"


class EngineError(LoraRouterError):
    """The engine failed while serving a request."""

    code = "engine_error"


class EngineTimeout(EngineError):
    """The engine did not answer within the request timeout."""

    status_code = 504
    code = "engine_timeout"


class EngineOverloaded(EngineError):
    """The engine's queue is full; the request was not admitted."""

    status_code = 503
    code = "engine_overloaded"


class VersionConflict(LoraRouterError):
    """A route change was based on a stale version; re-read and retry."""

    status_code = 409
    code = "version_conflict"


class FlagStoreUnavailable(LoraRouterError):
    """The shared route store (Redis) cannot be reached; reads keep the last-known state."""

    status_code = 503
    code = "flag_store_unavailable"


class ReplicaRegistrySettling(FlagStoreUnavailable):
    """Redis lost its data moments ago and replicas may not have re-registered yet, so a
    change that every replica must load first cannot be gated now (retry shortly)."""

    code = "replica_registry_settling"


class RouteChangeRefused(LoraRouterError):
    """A route change was refused (validation, or a replica could not load an adapter)."""

    status_code = 409
    code = "route_change_refused"


class RegistryError(LoraRouterError):
    """A registry operation failed: a link does not resolve, a hash differs, a cycle, ..."""

    status_code = 422
    code = "registry_error"


class AdapterRetired(RegistryError):
    """A retired adapter was asked to serve, or to be a route target."""

    status_code = 409
    code = "adapter_retired"


class AdapterReferenced(RegistryError):
    """An adapter is still referenced by a route and cannot be retired or unloaded."""

    status_code = 409
    code = "adapter_referenced"


class RegistryLocked(RegistryError, TimeoutError):
    """The registry's lock stayed held by another process past the lock timeout (a
    ``TimeoutError`` too, so callers that tolerate an unlockable registry skip it)."""

    status_code = 503
    code = "registry_locked"


class RecordNotFound(RegistryError):
    """A registry query named a base, dataset, source or card that the registry does not know."""

    status_code = 404
    code = "record_not_found"
