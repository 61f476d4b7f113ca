"""The key format, its hash, and a stored key.

``lr_<role>_<id>_<secret>``: ``id`` is 12 hex digits (the key's name in ``keys list``,
``keys revoke`` and error messages), ``secret`` 48 hex digits from :mod:`secrets`. The store
keeps ``sha256:<hex>`` of the whole key: with 192 random bits a plain hash is enough (no
salt or slow hash is needed against guessing), and a lookup is by id, then one
constant-time comparison of the hashes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NamedTuple

from pydantic import BaseModel, Field

from lora_router.router.auth.errors import InvalidKeyName
from lora_router.router.auth.roles import Role

PREFIX = "lr_"
ID_HEX = 12
SECRET_HEX = 48
_KEY_RE = re.compile(
    rf"lr_(?P<role>app|oncall|admin)_(?P<id>[0-9a-f]{{{ID_HEX}}})_[0-9a-f]{{{SECRET_HEX}}}"
)
ID_RE = re.compile(rf"[0-9a-f]{{{ID_HEX}}}")
# the key's owner, as the audit names it (key:<name>): a person, a team or an application
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class KeyParts(NamedTuple):
    role: Role
    id: str


def looks_like_key(token: str) -> bool:
    """Whether a bearer token claims to be an API key (else: maybe the admin token)."""
    return token.startswith(PREFIX)


def parse_key(token: str) -> KeyParts | None:
    """The role and id a key names, or None when it is not a well-formed key."""
    m = _KEY_RE.fullmatch(token)
    return None if m is None else KeyParts(Role(m["role"]), m["id"])


def new_key(role: Role) -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = secrets.token_hex(ID_HEX // 2)
    return key_id, f"{PREFIX}{role.value}_{key_id}_{secrets.token_hex(SECRET_HEX // 2)}"


def hash_key(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if NAME_RE.fullmatch(name) is None:
        raise InvalidKeyName(
            f"invalid key name {name!r}: 1 to 64 letters, digits or ._@+- (the audit "
            "shows it as key:<name>)", param="name",
        )
    return name


class KeyInfo(BaseModel):
    """A key as listings show it: never the secret, never its hash."""

    id: str
    name: str
    role: Role
    principal: str = Field(description="How the audit names the key's caller: key:<name>.")
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: its hash, never the key itself."""

    id: str
    name: str
    role: Role
    key_hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def principal(self) -> str:
        """The audit's and the model cards' ``by`` for this key's caller."""
        return f"key:{self.name}"

    def matches(self, token: str) -> bool:
        """Whether ``token`` is this key (constant-time comparison of the hashes)."""
        return secrets.compare_digest(self.key_hash.encode(), hash_key(token).encode())

    def revoked(self, at: datetime, by: str) -> ApiKey:
        return replace(self, revoked_at=at, revoked_by=by)

    def info(self) -> KeyInfo:
        return KeyInfo(
            id=self.id, name=self.name, role=self.role, principal=self.principal,
            created_at=self.created_at, created_by=self.created_by,
            revoked_at=self.revoked_at, revoked_by=self.revoked_by, active=self.active,
        )
