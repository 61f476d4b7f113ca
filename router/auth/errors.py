"""The errors of API-key authentication, mapped to HTTP by their ``status_code``."""

from __future__ import annotations

from lora_router.ground.errors import InvalidRequest, LoraRouterError


class MissingApiKey(LoraRouterError):
    """An endpoint that needs a key was called without ``Authorization: Bearer <key>``."""

    status_code = 401
    code = "missing_api_key"


class InvalidApiKey(LoraRouterError):
    """The bearer key is malformed, unknown, does not match its stored hash, or is revoked."""

    status_code = 401
    code = "invalid_api_key"


class InsufficientRole(LoraRouterError):
    """A valid key whose role is below what the endpoint needs."""

    status_code = 403
    code = "insufficient_role"


class KeyStoreUnavailable(LoraRouterError):
    """The key store cannot be read and the gateway has no key list yet to fall back on."""

    status_code = 503
    code = "key_store_unavailable"


class KeyNotFound(LoraRouterError):
    """No key has that id (``keys revoke``, ``/admin/keys/{id}/revoke``)."""

    status_code = 404
    code = "key_not_found"


class InvalidKeyName(InvalidRequest):
    """A key's name (its owner, as the audit shows it) is empty or not a plain name."""

    code = "invalid_key_name"
