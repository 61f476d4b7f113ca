"""Where keys are kept: a narrow async interface, SQLite and PostgreSQL behind it.

Contract:
- ``all()`` never creates anything: with no store yet (no file, no table) it is ``[]``.
- ``insert`` creates the store (file, table) on first use.
- ``revoke`` marks a key revoked once (revoking it again returns it unchanged); an
  unknown id raises :class:`~router.auth.errors.KeyNotFound`.
- Every failure to reach or read the store raises
  :class:`~router.auth.errors.KeyStoreUnavailable`; every call is bounded in time.

:func:`create_key` and :func:`revoke_key` are what the CLI and the API call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime

from lora_router.router.auth.errors import KeyNotFound
from lora_router.router.auth.keys import ID_RE, ApiKey, check_name, hash_key, new_key
from lora_router.router.auth.roles import Role


class KeyStore(ABC):
    name: str
    location: str  # for messages: a file, or "PostgreSQL (DATABASE_URL)"

    @abstractmethod
    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""

    @abstractmethod
    async def insert(self, key: ApiKey) -> None:
        """Store a new key (its id is fresh)."""

    @abstractmethod
    async def revoke(self, key_id: str, *, at: datetime, by: str) -> ApiKey:
        """Mark ``key_id`` revoked (at most once); the key as stored afterwards."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the store may be used again afterwards."""


async def create_key(store: KeyStore, *, role: Role, name: str, by: str) -> tuple[ApiKey, str]:
    """A new key for ``name`` with ``role``: the stored record and the key (shown once)."""
    key_id, token = new_key(role)
    key = ApiKey(id=key_id, name=check_name(name), role=role, key_hash=hash_key(token),
                 created_at=datetime.now(UTC), created_by=by)
    await store.insert(key)
    return key, token


async def revoke_key(store: KeyStore, key_id: str, *, by: str) -> ApiKey:
    if ID_RE.fullmatch(key_id) is None:
        raise KeyNotFound(f"no API key {key_id!r}: a key id is 12 hex digits (keys list)")
    return await store.revoke(key_id, at=datetime.now(UTC), by=by)
